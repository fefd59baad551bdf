"""Delivering incoming SMTP mail into an account (spec §6.2, §3.7).

For each message the SMTP server accepted for a local recipient:

1. SPF, DKIM and DMARC are evaluated (:mod:`moxtw.mailauth`, in a thread pool) for the
   stored ``Meta`` and an ``Authentication-Results`` header;
2. when the recipient's localpart carries a FromID (after the domain's first catchall
   separator), or the message is a ``multipart/report``, the report is parsed
   (:mod:`moxtw.dsnparse`, in the pool); an ARF report sent to a plain address is tied to
   our message by its ``Original-Mail-From``;
3. one transaction stores the message in the Inbox and either records the report against
   the retired message it concerns (:mod:`moxtw.store.dsnmatch`: event, suppression; no
   incoming webhook) or, when nothing matches, queues the account's incoming webhook.

The message is on disk before the SMTP server answers 250 (the caller awaits this).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from . import metrics
from .address import Address
from .config import Config
from .dsnparse import FeedbackReport, Report, ReportError, parse_report
from .mailauth import Authenticator, AuthResults
from .smtp.incoming import IncomingMessage
from .store import Store
from .store.dsnmatch import match_report
from .store.messages import DeliveryMeta, deliver
from .webhooks.incoming import incoming_hook

T = TypeVar("T")


def looks_like_report(data: bytes) -> bool:
    """Whether the top-level Content-Type (within the header) is ``multipart/report``."""
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    return b"multipart/report" in head


def parse_for_match(data: bytes) -> tuple[Report | None, str]:
    """(report, problem): what :func:`~moxtw.store.dsnmatch.match_report` takes."""
    try:
        return parse_report(data), ""
    except ReportError as e:
        return None, str(e)
    except Exception as e:  # a parser crash must not lose the message
        return None, f"unparsable report: {e}"


@attrs.define(eq=False)
class Inbound:
    config: Config
    store: Store
    reactor: Any
    #: CPU work (report parsing, webhook payloads) runs here, off the reactor thread.
    pool: ThreadPool
    authenticator: Authenticator | None = None
    #: Called after an event or incoming webhook was stored (kicks the webhook service).
    on_event: Callable[[], None] = lambda: None

    log = Logger()

    def from_id_of(self, address: Address) -> str:
        """The FromID in ``address``'s localpart (after its domain's first catchall
        separator), or ""."""
        domain = self.config.domains.get(address.domain)
        if domain is None or not domain.catchall_separators:
            return ""
        _, sep, rest = address.localpart.partition(domain.catchall_separators[0])
        return rest if sep else ""

    def _from_id_of_text(self, text: str) -> str:
        if "@" not in text:
            return ""
        localpart, domain = text.rsplit("@", 1)
        return self.from_id_of(Address(localpart, domain.lower()))

    async def _in_pool(self, fn: Callable[[], T]) -> T:
        result: T = await deferToThreadPool(self.reactor, self.pool, fn)
        return result

    async def __call__(self, message: IncomingMessage) -> None:
        received = self.reactor.seconds()
        data = message.data
        results: AuthResults | None = None
        if self.authenticator is not None:
            try:
                results = await self.authenticator.evaluate(
                    ip=message.remote_ip, helo=message.helo, mail_from=message.mail_from, data=data
                )
            except Exception:
                self.log.failure("evaluating spf/dkim/dmarc for a message to {rcpt}", rcpt=str(message.recipient))
        if results is not None:
            data = results.header(self.config.hostname) + data

        from_id = self.from_id_of(message.recipient)
        report: Report | None = None
        problem = ""
        if from_id or looks_like_report(data):
            report, problem = await self._in_pool(functools.partial(parse_for_match, data))
            if not from_id and isinstance(report, FeedbackReport):
                from_id = self._from_id_of_text(report.original_mail_from) or self._from_id_of_text(
                    report.original_return_path
                )

        meta = DeliveryMeta(
            mail_from=message.mail_from,
            mail_from_validated=results.mail_from_validated if results else False,
            rcpt_to=str(message.recipient),
            msg_from_validated=results.msg_from_validated if results else False,
            dkim_domains=results.dkim_domains if results else (),
            remote_ip=message.remote_ip,
        )
        account = self.config.accounts.get(message.account)
        hook = await self._in_pool(
            functools.partial(incoming_hook, account, data, meta=meta, received=received, from_id=from_id)
        )
        match = None
        if from_id:
            match = metrics.MatchRecorder(
                functools.partial(
                    match_report,
                    account=message.account,  # only the receiving account's own messages
                    from_id=from_id,
                    report=report,
                    problem=problem,
                    now=received,
                )
            )
        await deliver(
            self.store, message.account, "Inbox", data, received=received, meta=meta, incoming_webhook=hook, match=match
        )
        if match is not None:
            match.count()
        if hook is not None or match is not None:
            self.on_event()
