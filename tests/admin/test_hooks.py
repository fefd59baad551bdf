"""The admin API's webhook methods (mox's Hook*), over real HTTP with the real store and
the daemon's webhook service (StubTreq receiver) behind it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from twisted.trial.unittest import TestCase

from tests.admin.fixture import IN_URL, OUT_URL, HookFixture, ids_filter

HOOK_FIELDS = [
    "ID", "QueueMsgID", "FromID", "MessageID", "Subject", "Extra", "Account", "URL", "Authorization",
    "IsIncoming", "OutgoingEvent", "Payload", "Submitted", "Attempts", "NextAttempt", "Results",
]
RESULT_FIELDS = ["Start", "Duration", "URL", "Success", "Code", "Error", "Response"]
RETIRED_FIELDS = [
    "ID", "QueueMsgID", "FromID", "MessageID", "Subject", "Extra", "Account", "URL", "Authorization",
    "IsIncoming", "OutgoingEvent", "Payload", "Submitted", "SupersededByID", "Attempts", "Results", "Success",
    "LastActivity", "KeepUntil",
]
SORT = {"Field": "", "LastID": 0, "Last": "", "Asc": False}
HOST = "hooks.example"


def rfc3339(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def now() -> datetime:
    return datetime.now().astimezone()


class HookMethodTests(TestCase):
    async def setUp(self) -> None:
        self.f = await HookFixture(self).start()

    async def hooks(self, filt: dict[str, Any] | None = None, sort: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.f.admin("HookList", filt or {}, sort or SORT)
        return result

    async def ids(self, filt: dict[str, Any] | None = None, sort: dict[str, Any] | None = None) -> list[int]:
        return [h["ID"] for h in await self.hooks(filt, sort)]

    async def retired(self, filt: dict[str, Any] | None = None, sort: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.f.admin("HookRetiredList", filt or {}, sort or SORT)
        return result

    def assertAbout(self, a: datetime, b: datetime, seconds: float = 0.001) -> None:
        self.assertLessEqual(abs((a - b).total_seconds()), seconds, (a, b))

    async def test_list_shape_and_results(self) -> None:
        f = self.f
        self.assertEqual((await f.admin("HookQueueSize"), await self.hooks()), (0, []))
        ha, hb, inc = await f.queue_hooks()
        self.assertEqual(await f.admin("HookQueueSize"), 3)
        hooks = await self.hooks()
        # Latest next attempt first: the incoming webhook, then b and a (same time, ID descending).
        self.assertEqual([h["ID"] for h in hooks], [inc, hb, ha])
        for h in hooks:
            self.assertEqual(list(h), HOOK_FIELDS)
            self.assertEqual((h["Account"], h["Attempts"], h["Results"]), ("mox", 0, None))
            self.assertAbout(rfc3339(h["Submitted"]), now(), 600)
        a = hooks[2]
        msgs = {r["ID"]: r for r in await f.admin("RetiredList", {}, {})}
        self.assertIn(a["QueueMsgID"], msgs)
        self.assertEqual(a["MessageID"], msgs[a["QueueMsgID"]]["MessageID"])
        self.assertEqual((a["FromID"], a["Subject"], a["Extra"]), ("", "admin test", {"order": "42"}))
        self.assertEqual((a["URL"], a["Authorization"], a["IsIncoming"], a["OutgoingEvent"]),
                         (OUT_URL, "Bearer s3cret", False, "canceled"))  # fmt: skip
        payload = json.loads(a["Payload"])
        self.assertEqual((payload["Event"], payload["QueueMsgID"], payload["Extra"]),
                         ("canceled", a["QueueMsgID"], {"order": "42"}))  # fmt: skip
        self.assertLessEqual(rfc3339(a["NextAttempt"]), now())
        i = hooks[0]
        self.assertEqual(i["NextAttempt"], i["Submitted"])
        self.assertEqual((i["QueueMsgID"], i["Extra"], i["IsIncoming"], i["OutgoingEvent"], i["URL"], i["Authorization"]),
                         (0, None, True, "", IN_URL, ""))  # fmt: skip
        self.assertEqual((i["MessageID"], i["Subject"], i["Payload"]), ("<in@example.org>", "hi there", '{"Subject":"hi there"}'))
        # Go's JSON encoding, HTML-escaped as sherpa's.
        raw = await f.admin_post("HookList", {"params": [ids_filter(ha), SORT]})
        self.assertIn(b'"MessageID":"\\u003c', raw.body)

        # An attempt the receiver refuses: recorded with its answer, retried in a minute.
        f.receiver.answers[HOST] = lambda r: 503
        f.receiver.body = b"busy \xff"
        await f.deliver()
        self.assertEqual(len(f.receiver.requests), 3)
        hooks = {h["ID"]: h for h in await self.hooks()}
        a = hooks[ha]
        self.assertEqual(a["Attempts"], 1)
        (result,) = a["Results"]
        self.assertEqual(list(result), RESULT_FIELDS)
        self.assertEqual(
            {k: result[k] for k in ("URL", "Success", "Code", "Error", "Response")},
            {"URL": OUT_URL, "Success": False, "Code": 503,
             "Error": 'http status "503 Service Unavailable", expected 2xx', "Response": "busy \ufffd"},
        )  # fmt: skip
        self.assertGreaterEqual(result["Duration"], 0)
        self.assertAbout(rfc3339(a["NextAttempt"]), rfc3339(result["Start"]) + timedelta(minutes=1))
        self.assertEqual(hooks[inc]["Results"][0]["URL"], IN_URL)

    async def test_filters_sort_and_pages(self) -> None:
        f = self.f
        ha, hb, inc = await f.queue_hooks()
        self.assertEqual(await self.ids({"Event": "canceled"}), [hb, ha])
        self.assertEqual(await self.ids({"Event": "incoming"}), [inc])
        self.assertEqual(await self.ids({"Event": "delivered"}), [])
        self.assertEqual(await self.ids({"Account": "mox", "IDs": [ha, inc]}), [inc, ha])
        self.assertEqual(await self.ids({"Account": "nobody"}), [])
        self.assertEqual(await self.ids({"Submitted": ">-1h", "NextAttempt": "<1m"}), [inc, hb, ha])
        self.assertEqual(await self.ids({"Submitted": "<-1h"}), [])
        self.assertEqual(await self.ids({"NextAttempt": ">1m"}), [])
        self.assertEqual(await self.ids({"Max": 1}), [inc])
        self.assertEqual(await self.ids({}, {"Field": "Submitted", "Asc": True}), [ha, hb, inc])

        # Pages of one, both ways; a and b were queued at the same (sub-microsecond) time.
        for field, asc, expected in (("Submitted", True, [ha, hb, inc]), ("NextAttempt", False, [inc, hb, ha])):
            seen: list[int] = []
            sort = {"Field": field, "Asc": asc, "LastID": 0, "Last": ""}
            while len(seen) <= 3:
                page = await self.hooks({"Max": 1}, sort)
                if not page:
                    break
                seen.append(page[0]["ID"])
                sort = {**sort, "LastID": page[0]["ID"], "Last": page[0][field]}
            self.assertEqual(seen, expected)

        async def error(method: str, *params: Any) -> str:
            return (await f.admin_error(method, *params))["message"]

        self.assertIn("unknown event 'bogus', expected one of delivered,", await error("HookList", {"Event": "bogus"}, SORT))
        self.assertIn("unknown sort field 'Queued'", await error("HookList", {}, {"Field": "Queued"}))
        self.assertIn("Submitted filter 'yesterday' must start with < or >", await error("HookList", {"Submitted": "yesterday"}, SORT))
        self.assertIn("NextAttempt filter", await error("HookCancel", {"NextAttempt": "<soon"}))
        self.assertEqual(await error("HookList", {"Hold": True}, SORT), 'parameter 1 (filter): json: unknown field "Hold"')
        self.assertIn("Max must be 0", await error("HookNextAttemptSet", {"Max": -1}, 0))
        self.assertEqual(await error("HookNextAttemptAdd", {}, "5"), 'parameter 2 (minutes): expected an integer, got "5"')
        self.assertIn("pagination", await error("HookList", {}, {"LastID": 3}))
        self.assertEqual(await error("HookCancel"), "bad number of parameters, got 0, want 1")
        # Nothing changed.
        self.assertEqual(await f.admin("HookQueueSize"), 3)
        self.assertEqual(f.changed, [])

    async def test_reschedule_and_cancel(self) -> None:
        f = self.f
        ha, hb, inc = await f.queue_hooks()
        before = {h["ID"]: rfc3339(h["NextAttempt"]) for h in await self.hooks()}
        self.assertEqual(await f.admin("HookNextAttemptAdd", ids_filter(ha), 30), 1)
        self.assertEqual(len(f.changed), 1)  # the webhook sender (and queue) are kicked
        self.assertEqual(await f.admin("HookNextAttemptSet", {"Event": "incoming"}, 60), 1)
        self.assertEqual(await f.admin("HookNextAttemptSet", ids_filter(999999), 5), 0)
        self.assertEqual(len(f.changed), 2)
        after = {h["ID"]: rfc3339(h["NextAttempt"]) for h in await self.hooks()}
        self.assertAbout(after[ha], before[ha] + timedelta(minutes=30))
        self.assertAbout(after[inc], now() + timedelta(minutes=60), 60)
        self.assertEqual(after[hb], before[hb])
        self.assertEqual(await self.ids({"NextAttempt": ">20m"}), [inc, ha])
        self.assertEqual(await f.admin("HookNextAttemptAdd", {"NextAttempt": ">20m"}, -30), 2)
        self.assertEqual(await self.ids({"NextAttempt": ">20m"}), [inc])

        self.assertEqual(await f.admin("HookCancel", {"Event": "canceled"}), 2)
        self.assertEqual(len(f.changed), 4)
        self.assertEqual(await self.ids(), [inc])
        self.assertEqual(await f.admin("HookCancel", ids_filter(ha)), 0)
        self.assertEqual(len(f.changed), 4)
        retired = await self.retired()
        self.assertEqual(sorted(r["ID"] for r in retired), [ha, hb])
        for r in retired:
            self.assertEqual(list(r), RETIRED_FIELDS)
            self.assertEqual((r["Success"], r["SupersededByID"], r["Authorization"], r["OutgoingEvent"]),
                             (False, 0, True, "canceled"))  # fmt: skip
            (result,) = r["Results"]
            self.assertEqual((result["Error"], result["Success"], result["Code"], result["URL"]),
                             ("canceled by admin", False, 0, OUT_URL))  # fmt: skip
            self.assertEqual(rfc3339(r["KeepUntil"]) - rfc3339(r["LastActivity"]), timedelta(hours=72))
            self.assertAbout(rfc3339(r["LastActivity"]), now(), 600)
        # Nothing is sent for canceled webhooks; the incoming one goes out.
        await f.admin("HookNextAttemptSet", {}, 0)
        await f.deliver()
        self.assertEqual([r.path for r in f.receiver.requests], ["/incoming"])
        self.assertEqual(await f.admin("HookQueueSize"), 0)

    async def test_retired_delivered_and_superseded(self) -> None:
        f = self.f
        # Two events for one message before the first went out: only the newest is sent.
        old = await f.event("delayed", 77, smtp_code=451)
        new = await f.event("delivered", 77)
        await f.deliver()
        self.assertEqual([json.loads(r.body)["Event"] for r in f.receiver.requests], ["delivered"])
        self.assertEqual(await f.admin("HookQueueSize"), 0)
        retired = {r["ID"]: r for r in await self.retired()}
        self.assertEqual(sorted(retired), [old, new])
        d, s = retired[new], retired[old]
        self.assertEqual((d["Success"], d["SupersededByID"], d["Attempts"], d["Authorization"]), (True, 0, 1, True))
        (result,) = d["Results"]
        self.assertEqual({k: result[k] for k in ("Success", "Code", "Error", "Response")},
                         {"Success": True, "Code": 200, "Error": "", "Response": "thanks"})  # fmt: skip
        self.assertEqual(rfc3339(d["LastActivity"]), rfc3339(result["Start"]))
        self.assertEqual((s["Success"], s["SupersededByID"], s["Attempts"], s["Results"], s["OutgoingEvent"]),
                         (False, new, 0, None, "delayed"))  # fmt: skip
        self.assertEqual((s["MessageID"], s["Subject"], s["Extra"]), ("<m77@localhost>", "hook test", {}))

        self.assertEqual([r["ID"] for r in await self.retired({"Event": "delayed"})], [old])
        self.assertEqual([r["ID"] for r in await self.retired({"IDs": [new], "Account": "mox"})], [new])
        self.assertEqual(await self.retired({"LastActivity": "<-1h"}), [])
        self.assertEqual(len(await self.retired({"LastActivity": ">-1h", "Submitted": ">-1h"})), 2)
        self.assertEqual([r["ID"] for r in await self.retired({}, {"Field": "Submitted", "Asc": True})], [old, new])
        self.assertEqual(len(await self.retired({"Max": 1})), 1)
        page = await self.retired({}, {"Field": "Submitted", "Asc": True, "LastID": old, "Last": s["Submitted"]})
        self.assertEqual([r["ID"] for r in page], [new])
        error = await f.admin_error("HookRetiredList", {"NextAttempt": "<now"}, SORT)
        self.assertEqual(error["message"], 'parameter 1 (filter): json: unknown field "NextAttempt"')
        error = await f.admin_error("HookRetiredList", {}, {"Field": "NextAttempt"})
        self.assertIn("unknown sort field 'NextAttempt'", error["message"])
        error = await f.admin_error("HookRetiredList", {"Event": "sent"}, SORT)
        self.assertIn("unknown event 'sent'", error["message"])

    async def test_page_lists_the_methods(self) -> None:
        page = await self.f.http.get(self.f.admin_base)
        text = (await page.content()).decode()
        for method in ("HookQueueSize", "HookList", "HookNextAttemptSet", "HookNextAttemptAdd", "HookRetiredList",
                       "HookCancel"):
            self.assertIn(method, text)
        self.assertIn("moxtw hooks", text)
