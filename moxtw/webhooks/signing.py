"""Standard Webhooks signatures (https://www.standardwebhooks.com) and secrets.

A signed request carries ``webhook-id`` (the same on every attempt of one webhook),
``webhook-timestamp`` (UNIX seconds of the attempt) and ``webhook-signature``
(``v1,`` + base64 of HMAC-SHA256 over ``"<id>.<timestamp>.<body>"``, keyed with the
base64-decoded part of the ``whsec_`` secret), so receivers check origin and reject
replays with their language's ``standardwebhooks`` library.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

__all__ = ["SECRET_PREFIX", "new_secret", "new_webhook_id", "secret_key", "signature_headers", "sign"]

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A new signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_...`` secret; ``ValueError`` if it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"signing secret must start with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError("signing secret is not valid base64 after whsec_") from None
    if not key:
        raise ValueError("signing secret is empty")
    return key


def new_webhook_id() -> str:
    """A Standard Webhooks message ID, stored with the webhook so retries keep it."""
    return "msg_" + secrets.token_urlsafe(18)


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256>``."""
    mac = hmac.new(secret_key(secret), f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def signature_headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, webhook_id, timestamp, body),
    }
