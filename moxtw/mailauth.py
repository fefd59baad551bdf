"""SPF, DKIM and DMARC evaluation of incoming mail (for MessageGet's and the incoming
webhook's ``Meta``: MailFromValidated, MsgFromValidated, DKIMVerifiedDomains).

Nothing here is hand-written protocol: SPF is pyspf (RFC 7208), DKIM verification is
dkimpy (RFC 6376, RFC 8463 Ed25519), the organisational domain for DMARC comes from the
public suffix list of ``publicsuffixlist`` (bundled, no network fetch).  Only DMARC's
policy discovery and alignment (RFC 7489 §3.1, §6.6.3), a few lines, are ours.

Every DNS query goes through the daemon's configured resolver (``[dns]``), and the
evaluation is blocking work: :class:`Authenticator` runs it in a thread pool, never on
the reactor thread.  Results are advisory: moxtw does not reject mail on them (mox's
webapi features do not either); they are stored with the message and added as an
``Authentication-Results`` header.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import dkim
import dns.exception
import dns.name
import dns.resolver
import spf
from publicsuffixlist import PublicSuffixList
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from . import message as msglib

T = TypeVar("T")


class _TempError(Exception):
    """A DNS failure that is not an answer (SERVFAIL, timeout)."""


@attrs.frozen
class AuthResults:
    spf: str  # pass, fail, softfail, neutral, none, temperror, permerror
    spf_domain: str  # the domain SPF checked (MAIL FROM's, or EHLO's for a null sender)
    dkim: str  # pass (at least one valid signature), fail, none
    dkim_domains: tuple[str, ...]  # d= of the valid signatures
    dmarc: str  # pass, fail, none, temperror
    from_domain: str
    #: SPF passed for the MAIL FROM domain (mox's MailFromValidated).
    mail_from_validated: bool
    #: The From header's domain is aligned with a passing SPF or DKIM identity (mox's
    #: MsgFromValidated: DMARC's test, whether or not the domain publishes a policy).
    msg_from_validated: bool

    def header(self, hostname: str) -> bytes:
        """An ``Authentication-Results`` header (RFC 8601) for these results."""
        parts = [f"spf={self.spf} smtp.mailfrom={self.spf_domain or 'unknown'}"]
        if self.dkim_domains:
            parts += [f"dkim=pass header.d={d}" for d in self.dkim_domains]
        else:
            parts.append(f"dkim={self.dkim}")
        parts.append(f"dmarc={self.dmarc} header.from={self.from_domain or 'unknown'}")
        text = f"Authentication-Results: {hostname};\r\n\t" + ";\r\n\t".join(parts) + "\r\n"
        return text.encode("utf-8")


@functools.cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """The registrable domain of ``domain`` (``mail.example.co.uk`` → ``example.co.uk``)."""
    domain = domain.lower().rstrip(".")
    return _psl().privatesuffix(domain) or domain


def aligned(a: str, b: str, strict: bool) -> bool:
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    if strict:
        return a == b
    return organizational_domain(a) == organizational_domain(b)


@attrs.define
class Evaluator:
    """The blocking evaluation, with one dnspython resolver (thread-safe for queries)."""

    resolver: dns.resolver.Resolver
    timeout: float = 5.0

    # --- DNS -------------------------------------------------------------------------

    def txt(self, name: str) -> list[bytes]:
        """The TXT records at ``name`` (each one's strings joined); [] for none.
        Raises :class:`_TempError` for DNS failures."""
        try:
            answer = self.resolver.resolve(
                dns.name.from_text(name), "TXT", search=False, raise_on_no_answer=False, lifetime=self.timeout
            )
        except dns.resolver.NXDOMAIN:
            return []
        except dns.exception.DNSException as e:
            raise _TempError(f"{name}: {e}") from e
        return [b"".join(r.strings) for r in answer]

    def _spf_lookup(self, name: str, qtype: str, tcpfallback: bool = True, timeout: float = 30) -> list[Any]:
        """pyspf's DNS hook, on our resolver (same shape as pyspf's own dnspython one)."""
        try:
            answer = self.resolver.resolve(name, qtype, search=False, raise_on_no_answer=False, lifetime=self.timeout)
        except dns.resolver.NXDOMAIN:
            return []
        except dns.exception.DNSException as e:
            raise spf.TempError(f"DNS {e}") from e
        out: list[Any] = []
        for r in answer:
            if qtype in ("A", "AAAA"):
                out.append(((name, qtype), r.address))
            elif qtype == "MX":
                out.append(((name, qtype), (r.preference, r.exchange)))
            elif qtype == "PTR":
                out.append(((name, qtype), r.target.to_text(True)))
            elif qtype in ("TXT", "SPF"):
                out.append(((name, qtype), r.strings))
        return out

    def _dkim_txt(self, name: bytes, timeout: int = 5) -> bytes | None:
        try:
            records = self.txt(name.decode("ascii").rstrip("."))
        except _TempError:
            return None
        return records[0] if records else None

    # --- checks --------------------------------------------------------------------

    def check_spf(self, ip: str, mail_from: str, helo: str) -> tuple[str, str]:
        """(result, domain checked)."""
        sender = mail_from or f"postmaster@{helo}"
        domain = sender.rsplit("@", 1)[-1].lower()
        if not ip or not domain:
            return "none", domain
        with _spf_lock:
            saved = spf.DNSLookup
            spf.DNSLookup = self._spf_lookup
            try:
                result, _ = spf.check2(i=ip, s=sender, h=helo or domain, querytime=max(self.timeout * 4, 20))
            except Exception:
                result = "temperror"
            finally:
                spf.DNSLookup = saved
        return str(result), domain

    def check_dkim(self, data: bytes) -> tuple[str, tuple[str, ...]]:
        """("pass"/"fail"/"none", verified signing domains)."""
        try:
            d = dkim.DKIM(data, minkey=1024, timeout=int(self.timeout))
            count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
        except Exception:
            return "none", ()
        if count == 0:
            return "none", ()
        domains: list[str] = []
        for i in range(count):
            try:
                ok = d.verify(idx=i, dnsfunc=self._dkim_txt)
            except Exception:
                ok = False
            if ok and d.domain:
                domain = d.domain.decode("ascii", "replace").lower()
                if domain not in domains:
                    domains.append(domain)
        return ("pass" if domains else "fail"), tuple(domains)

    def dmarc_record(self, from_domain: str) -> dict[str, str] | None:
        """The DMARC policy for ``from_domain`` (its own, else its organisational
        domain's, RFC 7489 §6.6.3); None when there is none."""
        names = [from_domain]
        org = organizational_domain(from_domain)
        if org != from_domain:
            names.append(org)
        for name in names:
            records = [r for r in self.txt(f"_dmarc.{name}") if r.lower().startswith(b"v=dmarc1")]
            if len(records) == 1:
                tags = {}
                for part in records[0].decode("ascii", "replace").split(";"):
                    key, _, value = part.partition("=")
                    if key.strip():
                        tags[key.strip().lower()] = value.strip()
                return tags
        return None

    def evaluate(self, *, ip: str, helo: str, mail_from: str, data: bytes) -> AuthResults:
        spf_result, spf_domain = self.check_spf(ip, mail_from, helo)
        dkim_result, dkim_domains = self.check_dkim(data)
        from_domain = ""
        try:
            froms = msglib.envelope(msglib.parse(data)).from_
        except Exception:
            froms = []
        if len(froms) == 1 and "@" in froms[0].address:
            from_domain = froms[0].address.rsplit("@", 1)[1].lower()
        dmarc_result = "none"
        msg_from_validated = False
        if from_domain:
            try:
                record = self.dmarc_record(from_domain)
            except _TempError:
                record, dmarc_result = None, "temperror"
            strict_spf = (record or {}).get("aspf", "r").lower() == "s"
            strict_dkim = (record or {}).get("adkim", "r").lower() == "s"
            # SPF aligns only for the MAIL FROM identity (not the EHLO fallback).
            spf_ok = spf_result == "pass" and bool(mail_from) and aligned(spf_domain, from_domain, strict_spf)
            dkim_ok = any(aligned(d, from_domain, strict_dkim) for d in dkim_domains)
            msg_from_validated = spf_ok or dkim_ok
            if record is not None:
                dmarc_result = "pass" if msg_from_validated else "fail"
        return AuthResults(
            spf=spf_result,
            spf_domain=spf_domain,
            dkim=dkim_result,
            dkim_domains=dkim_domains,
            dmarc=dmarc_result,
            from_domain=from_domain,
            mail_from_validated=spf_result == "pass" and bool(mail_from),
            msg_from_validated=msg_from_validated,
        )


#: pyspf takes its DNS function from a module global; evaluations swap it under a lock.
_spf_lock = threading.Lock()


@attrs.define
class Authenticator:
    """Runs :class:`Evaluator` on a thread pool."""

    evaluator: Evaluator
    pool: ThreadPool
    reactor: IReactorFromThreads

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        result: T = await deferToThreadPool(self.reactor, self.pool, fn)
        return result

    async def evaluate(self, *, ip: str, helo: str, mail_from: str, data: bytes) -> AuthResults:
        return await self._in_thread(
            functools.partial(self.evaluator.evaluate, ip=ip, helo=helo, mail_from=mail_from, data=data)
        )
