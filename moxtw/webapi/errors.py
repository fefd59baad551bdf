"""The webapi's error: a mox error code and message, answered as ``400`` JSON."""

from __future__ import annotations

#: Every code the webapi answers with (mox's §1.4 list).
CODES = frozenset(
    {
        "protocol",
        "server",
        "user",
        "error",
        "badAddress",
        "missingBody",
        "multipleFrom",
        "badFrom",
        "domainDisabled",
        "noRecipients",
        "messageLimitReached",
        "recipientLimitReached",
        "messageTooLarge",
        "malformedMessageID",
        "sentOverQuota",
        "messageNotFound",
        "partNotFound",
    }
)


class WebAPIError(Exception):
    """An API error: ``{"Code": code, "Message": message}`` with HTTP status ``status``."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        assert code in CODES, code
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
