-- moxtw schema version 4: hold rules added through the admin API.
--
-- Rules from the configuration file ([[hold_rules]]) are not stored here.  A rule holds a
-- message when every non-empty field matches it (an all-empty rule holds everything);
-- domains are stored in their canonical Unicode form, as queue_msg stores them.  Queueing
-- reads this (small) table in the transaction that inserts the messages.
CREATE TABLE hold_rule (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL DEFAULT '',
    sender_domain TEXT NOT NULL DEFAULT '',
    recipient_domain TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL
)
