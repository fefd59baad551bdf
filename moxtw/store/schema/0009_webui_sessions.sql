-- moxtw schema version 9: web interface sessions ended before they expire.
--
-- Session cookies are signed and carry everything else (moxtw/webui/session.py); this
-- table is what logging out adds, shared by every process (HTTP workers included).  A
-- row with a session ID ends that session ("Log out"); a row with session '' ends every
-- session of the login (kind and account) issued until `at` ("Log out everywhere").
-- Pages read it by primary key on every request (moxtw/store/websessions.py); a row is
-- deleted at the next logout once no session it ends can still be valid (`expires`), so
-- the table holds at most the logouts of the 12 hours (a session's lifetime) before the
-- last one.
-- This migration uses no other migration's tables.
CREATE TABLE webui_logout (
    kind TEXT NOT NULL,
    account TEXT NOT NULL,
    session TEXT NOT NULL,
    at REAL NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (kind, account, session)
);
CREATE INDEX webui_logout_expires ON webui_logout (expires);
