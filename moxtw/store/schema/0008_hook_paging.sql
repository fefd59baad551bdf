-- moxtw schema version 8: indexes for paging through queued and retired webhooks.
--
-- The admin listings (HookList, HookRetiredList, the web pages) order by a time in whole
-- microseconds, then by ID, and continue a page from the previous page's last row
-- (moxtw/store/webhooks.py).  These indexes hold exactly that ORDER BY expression, so a
-- page reads about a page of index entries instead of sorting the whole table: one per
-- sort field, and one per account for the default sort (an account's recent webhooks).
-- The expressions must stay identical to webhooks.py's _us(); a test checks the query
-- plans.  Queued webhooks are event rows with admitted = 1: admitted leads the event
-- indexes so the planner prefers them to event_hook_due for these queries.
-- This migration depends only on 0005 (not on 0006 or 0007).
CREATE INDEX event_hook_page_next ON event (admitted, CAST(round(next_attempt * 1000000) AS BIGINT), id);
CREATE INDEX event_hook_page_created ON event (admitted, CAST(round(created * 1000000) AS BIGINT), id);
CREATE INDEX event_hook_page_account ON event (account, admitted, CAST(round(next_attempt * 1000000) AS BIGINT), id);
CREATE INDEX hook_retired_page_last_activity ON hook_retired (CAST(round(last_activity * 1000000) AS BIGINT), id);
CREATE INDEX hook_retired_page_submitted ON hook_retired (CAST(round(submitted * 1000000) AS BIGINT), id);
CREATE INDEX hook_retired_page_account ON hook_retired (account, CAST(round(last_activity * 1000000) AS BIGINT), id);
