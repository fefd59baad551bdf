-- moxtw schema version 7: indexes for paging through queued and retired messages.
--
-- The admin listings (QueueList, RetiredList, the web pages, the account's messages)
-- order by a time in whole microseconds, then by ID, and continue a page from the
-- previous page's last row (moxtw/store/admin.py).  These indexes hold exactly that
-- ORDER BY expression, so a page reads about a page of index entries instead of sorting
-- the whole table: one per sort field, and one per common filter whose own index would
-- otherwise win and leave a sort of every matching row (account; held or not; delivered
-- or not).  The expressions must stay identical to admin.py's _us(); a test checks the
-- query plans.
-- queue_msg_page_account_queued starts with account, so it replaces queue_msg_account
-- for every lookup by account.
-- This migration depends only on 0001 and 0003.
CREATE INDEX queue_msg_page_next ON queue_msg (CAST(round(next_attempt * 1000000) AS BIGINT), id);
CREATE INDEX queue_msg_page_queued ON queue_msg (CAST(round(queued * 1000000) AS BIGINT), id);
CREATE INDEX queue_msg_page_hold ON queue_msg (hold, CAST(round(next_attempt * 1000000) AS BIGINT), id);
CREATE INDEX queue_msg_page_account ON queue_msg (account, CAST(round(next_attempt * 1000000) AS BIGINT), id);
CREATE INDEX queue_msg_page_account_queued ON queue_msg (account, CAST(round(queued * 1000000) AS BIGINT), id);
DROP INDEX queue_msg_account;
CREATE INDEX queue_retired_page_last_activity ON queue_retired (CAST(round(last_activity * 1000000) AS BIGINT), id);
CREATE INDEX queue_retired_page_queued ON queue_retired (CAST(round(queued * 1000000) AS BIGINT), id);
CREATE INDEX queue_retired_page_success ON queue_retired (success, CAST(round(last_activity * 1000000) AS BIGINT), id);
CREATE INDEX queue_retired_page_account ON queue_retired (account, CAST(round(last_activity * 1000000) AS BIGINT), id);
CREATE INDEX queue_retired_page_account_queued ON queue_retired (account, CAST(round(queued * 1000000) AS BIGINT), id);
