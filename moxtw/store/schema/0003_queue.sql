-- moxtw schema version 3: queue delivery: attempt history, retired messages, events,
-- pending message-file removals.
--
-- A claim is a lease: queue_msg.lease_token holds the current attempt's token and
-- queue_msg.next_attempt is pushed past the attempt (at least the next backoff), so a
-- message whose daemon died is due again when that time passes.  An attempt's result is
-- written only while lease_token still matches.

-- 0 = the default (8).
ALTER TABLE queue_msg ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 0;
CREATE INDEX queue_msg_blob ON queue_msg (blob);
CREATE INDEX queue_msg_base_id ON queue_msg (base_id) WHERE base_id != 0;

-- One row per delivery attempt of a queued or retired message (msg_id is the queue ID,
-- which a retired record keeps).  duration is NULL while the attempt is in progress
-- (error 'delivering...').  secode is the short enhanced code ("1.1"), as mox's MsgResult.
CREATE TABLE queue_attempt (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    token TEXT NOT NULL,
    start REAL NOT NULL,
    duration REAL,
    success INTEGER NOT NULL DEFAULT 0,
    code INTEGER NOT NULL DEFAULT 0,
    secode TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT 'delivering...',
    remote_host TEXT NOT NULL DEFAULT '',
    remote_ip TEXT NOT NULL DEFAULT '',
    tls INTEGER NOT NULL DEFAULT 0,
    timeout_after_body INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX queue_attempt_msg ON queue_attempt (msg_id, id);

-- A message that left the queue (delivered, failed, suppressed, canceled), kept while the
-- sender account's keep-retired period lasts (mox's MsgRetired).  recipient_address is
-- "localpart@domain" with the Unicode domain.
CREATE TABLE queue_retired (
    id INTEGER PRIMARY KEY,
    base_id INTEGER NOT NULL,
    account TEXT NOT NULL,
    queued REAL NOT NULL,
    sender_localpart TEXT NOT NULL,
    sender_domain TEXT NOT NULL,
    recipient_localpart TEXT NOT NULL,
    recipient_domain TEXT NOT NULL,
    recipient_address TEXT NOT NULL,
    from_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    size INTEGER NOT NULL,
    has_8bit INTEGER NOT NULL,
    smtputf8 INTEGER NOT NULL,
    require_tls INTEGER,
    future_release_request TEXT NOT NULL,
    extra TEXT,
    transport TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    last_attempt REAL,
    last_activity REAL NOT NULL,
    success INTEGER NOT NULL,
    event TEXT NOT NULL,
    keep_until REAL NOT NULL
);
CREATE INDEX queue_retired_from_id ON queue_retired (from_id) WHERE from_id != '';
CREATE INDEX queue_retired_recipient ON queue_retired (account, recipient_address, last_activity);
CREATE INDEX queue_retired_keep_until ON queue_retired (keep_until);

-- Outgoing events, written in the same transaction as the state change they describe, for
-- the webhook sender to turn into webhooks.  extra is a JSON object (NULL: none; DSN events).
CREATE TABLE event (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    kind TEXT NOT NULL,
    queue_msg_id INTEGER NOT NULL DEFAULT 0,
    from_id TEXT NOT NULL DEFAULT '',
    message_id TEXT NOT NULL DEFAULT '',
    subject TEXT NOT NULL DEFAULT '',
    extra TEXT,
    smtp_code INTEGER NOT NULL DEFAULT 0,
    smtp_enhanced_code TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    suppressing INTEGER NOT NULL DEFAULT 0,
    dsn INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE INDEX event_queue_msg ON event (queue_msg_id);

-- Message files no queue row refers to any more, removed after the commit that released
-- them (and again by cleanup, should the daemon die in between).
CREATE TABLE blob_gc (
    blob TEXT PRIMARY KEY,
    created REAL NOT NULL
)
