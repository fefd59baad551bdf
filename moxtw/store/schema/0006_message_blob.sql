-- moxtw schema version 6: mailbox messages by message file, so the start-up sweep of
-- files a crash left without a row (moxtw/store/integrity.py) looks them up by index.
CREATE INDEX message_blob ON message (blob);
