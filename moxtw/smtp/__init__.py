"""SMTP servers: incoming delivery, submission (STARTTLS) and submissions (implicit TLS).

:func:`build_smtp_factories` builds the three listener factories; see
:mod:`moxtw.smtp.server` for the protocol and :mod:`moxtw.smtp.submission` and
:mod:`moxtw.smtp.incoming` for what happens to messages.
"""

from .factories import SMTPFactories, build_smtp_factories, tls_context_from_config
from .incoming import IncomingMessage

__all__ = ["IncomingMessage", "SMTPFactories", "build_smtp_factories", "tls_context_from_config"]
