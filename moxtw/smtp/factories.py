"""Building the three SMTP listeners' factories from the configuration."""

from __future__ import annotations

from typing import Any, NamedTuple

from twisted.internet.interfaces import IReactorTime
from twisted.protocols.tls import TLSMemoryBIOFactory

from ..accounts import Accounts
from ..config import Config
from ..passwords import PasswordVerifier
from ..ratelimit import Limiter, failed_auth_limiter
from ..store import Store
from ..submit import Submitter
from ..tls import tls_context_from_config
from .incoming import Deliver, IncomingBackend
from .server import ServerOptions, SMTPServerFactory
from .submission import SubmissionBackend

__all__ = ["SMTPFactories", "build_smtp_factories", "tls_context_from_config"]


class SMTPFactories(NamedTuple):
    smtp: SMTPServerFactory  # incoming, port 25 (localserve 1025)
    submission: SMTPServerFactory  # STARTTLS, port 587 (localserve 1587)
    submissions: TLSMemoryBIOFactory | None  # implicit TLS, port 465 (localserve 1465)


def build_smtp_factories(
    config: Config,
    accounts: Accounts,
    store: Store,
    verifier: PasswordVerifier,
    clock: IReactorTime,
    deliver: Deliver,
    *,
    tls_context_factory: Any = None,
    submitter: Submitter | None = None,
    auth_limiter: Limiter | None = None,
    plaintext_auth: bool | None = None,
    command_timeout: float = 300.0,
    bad_auth_delay: float = 1.0,
) -> SMTPFactories:
    """The incoming, submission (STARTTLS) and submissions (implicit TLS) factories.

    ``tls_context_factory`` defaults to :func:`moxtw.tls.tls_context_from_config` (the
    daemon passes its reloadable :class:`moxtw.tls.ServerTLS`); without TLS,
    STARTTLS is not offered and ``submissions`` is None.  ``submitter`` defaults to a
    :class:`~moxtw.submit.Submitter` over ``store`` (pass the webapi's to share its
    ``on_queued``).  ``plaintext_auth`` (AUTH without TLS on the submission port)
    defaults to ``config.localserve``, like mox localserve.  Both submission listeners
    share one failed-AUTH limiter and one per-IP connection count.
    """
    if tls_context_factory is None:
        tls_context_factory = tls_context_from_config(config)
    if submitter is None:
        submitter = Submitter(config, store)
    if auth_limiter is None:
        auth_limiter = failed_auth_limiter(clock)
    if plaintext_auth is None:
        plaintext_auth = config.localserve

    def options(submission: bool, implicit_tls: bool = False) -> ServerOptions:
        return ServerOptions(
            hostname=config.hostname,
            submission=submission,
            max_message_size=config.max_message_size,
            command_timeout=command_timeout,
            plaintext_auth=plaintext_auth,
            implicit_tls=implicit_tls,
            bad_auth_delay=bad_auth_delay,
        )

    incoming_backend = IncomingBackend(config=config, accounts=accounts, deliver=deliver, clock=clock)
    submission_backend = SubmissionBackend(
        config=config, accounts=accounts, submitter=submitter, clock=clock
    )
    common: dict[str, Any] = {
        "accounts": accounts,
        "verifier": verifier,
        "auth_limiter": auth_limiter,
        "clock": clock,
    }
    smtp = SMTPServerFactory(
        options=options(False), backend=incoming_backend, tls_context_factory=tls_context_factory, **common
    )
    submission = SMTPServerFactory(
        options=options(True), backend=submission_backend, tls_context_factory=tls_context_factory, **common
    )
    submissions = None
    if tls_context_factory is not None:
        inner = SMTPServerFactory(
            options=options(True, implicit_tls=True),
            backend=submission_backend,
            connections=submission.connections,
            **common,
        )
        submissions = TLSMemoryBIOFactory(tls_context_factory, False, inner)
    return SMTPFactories(smtp, submission, submissions)
