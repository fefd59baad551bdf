-- moxtw schema version 2: the account message store (mailboxes and messages).
-- Mailboxes are created per account on first use (Inbox, Sent, Archive, Drafts, Junk,
-- Trash), so accounts added to the configuration need no migration.  A message keeps its
-- ID when moved; IDs are never reused.  Flags are one column each; keywords are a JSON
-- list of lower-case strings, sorted.

CREATE TABLE mailbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    name TEXT NOT NULL,
    special_use TEXT NOT NULL DEFAULT '',
    uid_next INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL,
    UNIQUE (account, name)
);

CREATE TABLE message (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    mailbox_id INTEGER NOT NULL REFERENCES mailbox (id),
    uid INTEGER NOT NULL,
    blob TEXT NOT NULL,
    size INTEGER NOT NULL,
    received REAL NOT NULL,
    seen INTEGER NOT NULL DEFAULT 0,
    answered INTEGER NOT NULL DEFAULT 0,
    flagged INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    draft INTEGER NOT NULL DEFAULT 0,
    forwarded INTEGER NOT NULL DEFAULT 0,
    junk INTEGER NOT NULL DEFAULT 0,
    notjunk INTEGER NOT NULL DEFAULT 0,
    phishing INTEGER NOT NULL DEFAULT 0,
    mdnsent INTEGER NOT NULL DEFAULT 0,
    keywords TEXT NOT NULL DEFAULT '[]',
    expunged INTEGER NOT NULL DEFAULT 0,
    dsn INTEGER NOT NULL DEFAULT 0,
    mail_from TEXT NOT NULL DEFAULT '',
    mail_from_validated INTEGER NOT NULL DEFAULT 0,
    rcpt_to TEXT NOT NULL DEFAULT '',
    msg_from TEXT NOT NULL DEFAULT '',
    msg_from_validated INTEGER NOT NULL DEFAULT 0,
    dkim_domains TEXT NOT NULL DEFAULT '[]',
    remote_ip TEXT NOT NULL DEFAULT '',
    message_id TEXT NOT NULL DEFAULT '',
    subject TEXT NOT NULL DEFAULT ''
);
CREATE INDEX message_account_mailbox ON message (account, mailbox_id, uid);
CREATE INDEX message_mailbox_expunged ON message (mailbox_id, expunged)
