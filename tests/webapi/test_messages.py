"""The Message* webapi methods over real HTTP, on messages delivered with deliver()."""

from __future__ import annotations

import json
from typing import Any

from moxtw.store.messages import DeliveryMeta, deliver
from tests.test_message import golden_message_6
from tests.webapi.fixture import WebAPIFixture
from tests.webapi.test_app import Base

MESSAGE = (
    b"From: =?utf-8?q?J=C3=B6rg?= <jorg@localhost>\r\nTo: mox@localhost\r\nBcc: hidden@localhost\r\n"
    b"Subject: hello\r\nMessage-Id: <m1@localhost>\r\nIn-Reply-To: <p@x>\r\nReferences: <r@x>\r\n"
    b"Date: Mon, 01 Apr 2024 10:00:00 +0200\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhi there\r\n"
)


class MessageMethodTests(Base):
    async def fixture(self) -> WebAPIFixture:
        return await WebAPIFixture(self, self.edit).start()

    async def deliver(self, f: WebAPIFixture, data: bytes = MESSAGE, **kwargs: Any) -> int:
        kwargs.setdefault("received", 1700000000.0)
        return await deliver(f.parts.store, "mox", kwargs.pop("mailbox", "Inbox"), data, **kwargs)

    async def test_message_get(self) -> None:
        f = await self.fixture()
        meta = DeliveryMeta(
            mail_from="jorg@localhost", mail_from_validated=True, rcpt_to="mox@localhost",
            msg_from_validated=True, dkim_domains=["localhost"], remote_ip="127.0.0.1",
        )  # fmt: skip
        msg_id = await self.deliver(f, meta=meta)
        reply = await f.call("MessageGet", {"MsgID": msg_id})
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.headers.getRawHeaders(b"content-type"), [b"application/json; charset=utf-8"])
        self.assertEqual(
            reply.json,
            {
                "Message": {
                    "From": [{"Name": "Jörg", "Address": "jorg@localhost"}],
                    "To": [{"Name": "", "Address": "mox@localhost"}],
                    "CC": [],
                    "BCC": [{"Name": "", "Address": "hidden@localhost"}],
                    "ReplyTo": [],
                    "MessageID": "<m1@localhost>",
                    "References": ["<p@x>", "<r@x>"],
                    "Date": "2024-04-01T10:00:00+02:00",
                    "Subject": "hello",
                    "Text": "hi there\n",
                    "HTML": "",
                },
                "Structure": {
                    "ContentType": "text/plain",
                    "ContentTypeParams": {"charset": "utf-8"},
                    "ContentID": "",
                    "ContentDisposition": "",
                    "Filename": "",
                    "DecodedSize": 10,
                    "Parts": [],
                },
                "Meta": {
                    "Size": len(MESSAGE),
                    "DSN": False,
                    "Flags": [],
                    "MailFrom": "jorg@localhost",
                    "MailFromValidated": True,
                    "RcptTo": "mox@localhost",
                    "MsgFrom": "jorg@localhost",
                    "MsgFromValidated": True,
                    "DKIMVerifiedDomains": ["localhost"],
                    "RemoteIP": "127.0.0.1",
                    "MailboxName": "Inbox",
                },
            },
        )

    async def test_message_get_golden(self) -> None:
        """mox's message 6, delivered as it was stored: same Message and Structure JSON."""
        f = await self.fixture()
        raw, want = golden_message_6()
        msg_id = await self.deliver(f, raw)
        got = (await f.call("MessageGet", {"MsgID": msg_id})).json
        self.assertEqual(got["Message"], want["Message"])
        self.assertEqual(got["Structure"], want["Structure"])
        self.assertEqual(got["Meta"]["Size"], want["Meta"]["Size"])
        self.assertEqual(got["Meta"]["Flags"], [])

    async def test_sent_meta(self) -> None:
        f = await self.fixture()
        msg_id = await self.deliver(f, mailbox="Sent", flags=["\\Seen", "$NotJunk"], meta=DeliveryMeta(msg_from=""))
        meta = (await f.call("MessageGet", {"MsgID": msg_id})).json["Meta"]
        self.assertEqual((meta["Flags"], meta["MailboxName"], meta["MsgFrom"]), (["$notjunk", "\\seen"], "Sent", ""))
        self.assertEqual(meta["DKIMVerifiedDomains"], [])

    async def test_not_found(self) -> None:
        f = await self.fixture()
        msg_id = await self.deliver(f)
        for method, extra in [
            ("MessageGet", {}),
            ("MessageRawGet", {}),
            ("MessagePartGet", {"PartPath": [0]}),
        ]:
            for bad in (999999, 0):
                self.assertError(await f.call(method, {"MsgID": bad, **extra}), "messageNotFound", "message not found")
        for method, extra in [
            ("MessageDelete", {}),
            ("MessageFlagsAdd", {"Flags": ["\\Seen"]}),
            ("MessageFlagsRemove", {"Flags": ["\\Seen"]}),
            ("MessageMove", {"DestMailboxName": "Inbox"}),
        ]:
            reply = await f.call(method, {"MsgID": 999999, **extra})
            self.assertError(reply, "messageNotFound", "getting message: no such message")
        # Another account's message does not exist for this one.
        other = await deliver(f.parts.store, "someone", "Inbox", MESSAGE, received=1.0)
        self.assertError(await f.call("MessageGet", {"MsgID": other}), "messageNotFound")
        self.assertEqual((await f.call("MessageGet", {"MsgID": msg_id})).status, 200)

    async def test_raw_get(self) -> None:
        f = await self.fixture()
        raw, _ = golden_message_6()
        msg_id = await self.deliver(f, raw)
        reply = await f.call("MessageRawGet", {"MsgID": msg_id})
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.headers.getRawHeaders(b"content-type"), [b"text/plain"])
        self.assertEqual(reply.body, raw)

    async def test_part_get(self) -> None:
        f = await self.fixture()
        raw, _ = golden_message_6()
        msg_id = await self.deliver(f, raw)
        reply = await f.call("MessagePartGet", {"MsgID": msg_id, "PartPath": [0, 1]})
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.headers.getRawHeaders(b"content-type"), [b"image/png"])
        self.assertTrue(reply.body.startswith(b"\x89PNG"))
        self.assertEqual(len(reply.body), 70)
        reply = await f.call("MessagePartGet", {"MsgID": msg_id, "PartPath": [0, 0, 0]})
        self.assertEqual((reply.body, reply.headers.getRawHeaders(b"content-type")), (b"see attachments\r\n", [b"text/plain; charset=utf-8"]))
        reply = await f.call("MessagePartGet", {"MsgID": msg_id})
        self.assertTrue(reply.body.startswith(b"--2ef2c4988f95"))
        self.assertError(await f.call("MessagePartGet", {"MsgID": msg_id, "PartPath": [9]}), "partNotFound", "part 9 at index 0 not found")
        self.assertError(
            await f.call("MessagePartGet", {"MsgID": msg_id, "PartPath": [0, 0, 0, 0]}),
            "partNotFound",
            "part 0 at index 3 not found",
        )
        self.assertError(await f.call("MessagePartGet", {"MsgID": msg_id, "PartPath": [-1]}), "partNotFound")

    async def test_delete(self) -> None:
        f = await self.fixture()
        msg_id = await self.deliver(f)
        reply = await f.call("MessageDelete", {"MsgID": msg_id})
        self.assertEqual((reply.status, reply.body), (200, b"{}\n"))
        # moxtw's fix 13: messageNotFound also for the expunged message.
        self.assertError(await f.call("MessageDelete", {"MsgID": msg_id}), "messageNotFound", "getting message: message was removed")
        self.assertError(await f.call("MessageGet", {"MsgID": msg_id}), "messageNotFound", "message not found")
        self.assertError(await f.call("MessageFlagsAdd", {"MsgID": msg_id, "Flags": ["\\Seen"]}), "messageNotFound")
        self.assertError(await f.call("MessageMove", {"MsgID": msg_id, "DestMailboxName": "Archive"}), "messageNotFound")

    async def test_flags(self) -> None:
        f = await self.fixture()
        msg_id = await self.deliver(f)

        async def flags() -> list[str]:
            return list((await f.call("MessageGet", {"MsgID": msg_id})).json["Meta"]["Flags"])

        reply = await f.call("MessageFlagsAdd", {"MsgID": msg_id, "Flags": ["\\Seen", "$Forwarded", "custom1", "$Junk"]})
        self.assertEqual((reply.status, reply.body), (200, b"{}\n"))
        self.assertEqual(await flags(), ["$forwarded", "$junk", "\\seen", "custom1"])
        reply = await f.call("MessageFlagsRemove", {"MsgID": msg_id, "Flags": ["\\Seen", "custom1", "notpresent"]})
        self.assertEqual(reply.status, 200)
        self.assertEqual(await flags(), ["$forwarded", "$junk"])
        self.assertError(await f.call("MessageFlagsAdd", {"MsgID": msg_id, "Flags": ["with space"]}), "user", "parsing flags: invalid keyword with space")
        self.assertError(await f.call("MessageFlagsAdd", {"MsgID": msg_id, "Flags": ["\\Bogus"]}), "user", "parsing flags: invalid keyword \\bogus")
        self.assertError(await f.call("MessageFlagsRemove", {"MsgID": msg_id, "Flags": ["a)"]}), "user", "parsing flags: invalid keyword a)")
        self.assertEqual((await f.call("MessageFlagsAdd", {"MsgID": msg_id, "Flags": []})).status, 200)
        self.assertEqual((await f.call("MessageFlagsAdd", {"MsgID": msg_id, "Flags": ["$junk"]})).status, 200)
        self.assertEqual(await flags(), ["$forwarded", "$junk"])

    async def test_move(self) -> None:
        f = await self.fixture()
        msg_id = await self.deliver(f, flags=["$Forwarded", "$Junk"])

        async def meta() -> tuple[str, list[str]]:
            m = (await f.call("MessageGet", {"MsgID": msg_id})).json["Meta"]
            return m["MailboxName"], m["Flags"]

        self.assertEqual((await f.call("MessageMove", {"MsgID": msg_id, "DestMailboxName": "Archive"})).body, b"{}\n")
        self.assertEqual(await meta(), ("Archive", ["$forwarded", "$notjunk"]))
        self.assertEqual((await f.call("MessageMove", {"MsgID": msg_id, "DestMailboxName": "Junk"})).status, 200)
        self.assertEqual(await meta(), ("Junk", ["$forwarded", "$junk"]))
        self.assertError(
            await f.call("MessageMove", {"MsgID": msg_id, "DestMailboxName": "Junk"}),
            "user",
            f"moving message: message {msg_id} already in destination mailbox",
        )
        for name in ("NoSuchMailbox", "inbox"):
            self.assertError(
                await f.call("MessageMove", {"MsgID": msg_id, "DestMailboxName": name}),
                "user",
                "looking up mailbox name: not found",
            )

    async def test_bad_request_is_protocol_error(self) -> None:
        f = await self.fixture()
        self.assertError(await f.call("MessageGet", json.dumps({"MsgID": "x"})), "protocol")
