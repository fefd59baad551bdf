-- moxtw schema version 1: outgoing queue, send history for limits, suppression lists.
-- Times are UNIX seconds (UTC) as REAL.  IDs are AUTOINCREMENT so a retired record's ID is
-- never reused, as mox's queue IDs are not.

CREATE TABLE queue_msg (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    base_id INTEGER NOT NULL DEFAULT 0,
    account TEXT NOT NULL,
    queued REAL NOT NULL,
    sender_localpart TEXT NOT NULL,
    sender_domain TEXT NOT NULL,
    recipient_localpart TEXT NOT NULL,
    recipient_domain TEXT NOT NULL,
    recipient_address TEXT NOT NULL,
    from_id TEXT NOT NULL DEFAULT '',
    message_id TEXT NOT NULL DEFAULT '',
    subject TEXT NOT NULL DEFAULT '',
    blob TEXT NOT NULL,
    prefix BLOB NOT NULL,
    size INTEGER NOT NULL,
    has_8bit INTEGER NOT NULL DEFAULT 0,
    smtputf8 INTEGER NOT NULL DEFAULT 0,
    require_tls INTEGER,
    future_release_request TEXT NOT NULL DEFAULT '',
    extra TEXT,
    hold INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_attempt REAL,
    last_result TEXT,
    lease_token TEXT,
    transport TEXT NOT NULL DEFAULT ''
);
CREATE INDEX queue_msg_next_attempt ON queue_msg (hold, next_attempt);
CREATE INDEX queue_msg_account ON queue_msg (account);
CREATE UNIQUE INDEX queue_msg_from_id ON queue_msg (from_id) WHERE from_id != '';

-- One row per recipient submitted, for the daily message and first-time-recipient limits.
CREATE TABLE outgoing (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    recipient TEXT NOT NULL,
    first_time INTEGER NOT NULL,
    submitted REAL NOT NULL
);
CREATE INDEX outgoing_account_submitted ON outgoing (account, submitted);
CREATE INDEX outgoing_account_recipient ON outgoing (account, recipient);

CREATE TABLE suppression (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    account TEXT NOT NULL,
    base_address TEXT NOT NULL,
    original_address TEXT NOT NULL,
    manual INTEGER NOT NULL,
    reason TEXT NOT NULL,
    UNIQUE (account, base_address)
);
