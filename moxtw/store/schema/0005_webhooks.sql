-- moxtw schema version 5: the webhook queue, webhook attempts, retired webhooks.
--
-- An event row is the durable webhook record: the queue writes it (admitted = 0) in the
-- same transaction as the state change it describes, and the webhook service admits it
-- in ID order: the row is deleted when the account wants no webhook for it, otherwise it
-- becomes a queued webhook (admitted = 1) with the URL, Authorization header and JSON
-- payload it will be sent with.  Incoming-message webhooks are inserted as queued rows
-- of kind 'incoming' in the transaction that stores the message.  A webhook's ID (the
-- X-Mox-Webhook-ID header) is its event ID.
--
-- Claims are leases, as for queue messages: a claim sets lease_token and pushes
-- next_attempt past the longest an attempt can take, so a webhook whose daemon died is
-- due again when that time passes; a result is written only while the token matches.
-- webhook_id is the Standard Webhooks "webhook-id", random, stable across retries.
-- This migration does not depend on 0004.
ALTER TABLE event ADD COLUMN admitted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE event ADD COLUMN url TEXT NOT NULL DEFAULT '';
ALTER TABLE event ADD COLUMN auth_header TEXT NOT NULL DEFAULT '';
ALTER TABLE event ADD COLUMN payload TEXT NOT NULL DEFAULT '';
ALTER TABLE event ADD COLUMN webhook_id TEXT NOT NULL DEFAULT '';
ALTER TABLE event ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE event ADD COLUMN next_attempt REAL NOT NULL DEFAULT 0;
ALTER TABLE event ADD COLUMN lease_token TEXT;
CREATE INDEX event_admitted ON event (admitted, id);
CREATE INDEX event_hook_due ON event (admitted, next_attempt);
CREATE INDEX event_hook_target ON event (account, url, next_attempt) WHERE admitted = 1;

-- One row per attempt of a queued or retired webhook (mox's HookResult).  duration is
-- NULL while the attempt is in progress (error 'delivering...'); response holds the first
-- 512 bytes of the response body.
CREATE TABLE hook_attempt (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hook_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    token TEXT NOT NULL,
    url TEXT NOT NULL,
    start REAL NOT NULL,
    duration REAL,
    success INTEGER NOT NULL DEFAULT 0,
    code INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT 'delivering...',
    response BLOB NOT NULL DEFAULT ''
);
CREATE INDEX hook_attempt_hook ON hook_attempt (hook_id, id);

-- A webhook that left the queue (delivered, failed after the last attempt, superseded,
-- canceled), kept while the account's keep_retired_webhooks period lasts (mox's
-- HookRetired, same ID).  authorization says whether an Authorization header was set.
CREATE TABLE hook_retired (
    id INTEGER PRIMARY KEY,
    account TEXT NOT NULL,
    kind TEXT NOT NULL,
    queue_msg_id INTEGER NOT NULL,
    from_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    extra TEXT,
    url TEXT NOT NULL,
    authorization_set INTEGER NOT NULL,
    payload TEXT NOT NULL,
    submitted REAL NOT NULL,
    superseded_by_id INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL,
    success INTEGER NOT NULL,
    last_activity REAL NOT NULL,
    keep_until REAL NOT NULL
);
CREATE INDEX hook_retired_keep_until ON hook_retired (keep_until);
CREATE INDEX hook_retired_account ON hook_retired (account, last_activity)
