"""HTTP plumbing for the webapi: capped request bodies and form parsing."""

from __future__ import annotations

import io
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qs

import attrs
from twisted.web import http
from twisted.web.server import Request

from .errors import WebAPIError

DEFAULT_MAX_BODY = 10 * 1024 * 1024
_MULTIPART_HIDDEN = b"application/x-moxtw-multipart"


class CappedRequest(Request):
    """A request whose body is not kept beyond ``site.max_request_size`` bytes.

    Twisted reads the whole body before rendering; past the cap, further chunks are
    discarded and :attr:`too_large` is set, so the handler answers with a JSON error and
    memory and disk stay bounded.  Multipart bodies are left unparsed by Twisted (we parse
    them ourselves, keeping each part's headers).
    """

    too_large = False
    multipart_content_type: bytes | None = None
    _received = 0

    def _limit(self) -> int:
        return int(getattr(getattr(self.channel, "site", None), "max_request_size", DEFAULT_MAX_BODY))

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._limit():
            self.too_large = True
            length = 0  # keep the buffer in memory; nothing is stored anyway
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.too_large:
            return
        self._received += len(data)
        if self._received > self._limit():
            self.too_large = True
            if self.content is not None:
                self.content.seek(0)
                self.content.truncate()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        ctype = self.requestHeaders.getRawHeaders(b"content-type")
        if ctype and ctype[0].lower().lstrip().startswith(b"multipart/form-data"):
            self.multipart_content_type = ctype[0]
            self.requestHeaders.setRawHeaders(b"content-type", [_MULTIPART_HIDDEN])
        if self.too_large and self.content is not None:
            self.content.seek(0)
            self.content.truncate()
        super().requestReceived(command, path, version)


@attrs.frozen
class UploadedFile:
    field: str
    filename: str
    content_type: str | None  # the part's Content-Type header, if any
    content_id: str
    data: bytes


@attrs.frozen
class Form:
    fields: dict[str, list[str]]
    files: list[UploadedFile]


def content_type(request: Any) -> str:
    if getattr(request, "multipart_content_type", None):
        raw: bytes = request.multipart_content_type
    else:
        values = request.requestHeaders.getRawHeaders(b"content-type")
        if not values:
            raise WebAPIError("protocol", "unknown content-type ")
        raw = values[0]
    text = raw.decode("latin-1")
    media = text.split(";", 1)[0].strip().lower()
    if "/" not in media or not all(media.split("/")):
        raise WebAPIError("protocol", f"unknown content-type {text}")
    return media


def parse_form(request: Any) -> Form:
    """The POST body's form fields (and uploaded files, for multipart)."""
    media = content_type(request)
    request.content.seek(0)
    body: bytes = request.content.read()
    if media == "multipart/form-data":
        return _parse_multipart(request.multipart_content_type, body)
    if media != "application/x-www-form-urlencoded":
        return Form({}, [])
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, strict_parsing=False)
    except ValueError as e:
        raise WebAPIError("protocol", f"parsing form: {e}") from None
    return Form(fields, [])


def _parse_multipart(ctype: bytes, body: bytes) -> Form:
    if b"boundary=" not in ctype.lower():
        raise WebAPIError("protocol", "parsing form: no multipart boundary param in Content-Type")
    head = b"Content-Type: " + ctype + b"\r\nMIME-Version: 1.0\r\n\r\n"
    msg = BytesParser(policy=HTTP).parse(io.BytesIO(head + body))
    if not msg.is_multipart():
        raise WebAPIError("protocol", "parsing form: multipart: NextPart: EOF")
    fields: dict[str, list[str]] = {}
    files: list[UploadedFile] = []
    for part in msg.iter_parts():
        assert isinstance(part, Message)
        disposition = part.get("content-disposition", "")
        if not str(disposition).lower().startswith("form-data"):
            continue
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if not isinstance(name, str):
            continue
        if filename is None:
            charset = part.get_content_charset() or "utf-8"
            fields.setdefault(name, []).append(data.decode(charset, "replace"))
            continue
        ctype_header = part.get("content-type")
        files.append(
            UploadedFile(
                field=name,
                filename=filename.replace("\\", "/").rsplit("/", 1)[-1],
                content_type=str(ctype_header) if ctype_header else None,
                content_id=str(part.get("content-id", "") or ""),
                data=data,
            )
        )
    return Form(fields, files)


def set_security_headers(request: Any) -> None:
    """Headers mox adds to every webapi response."""
    request.setHeader(b"x-frame-options", b"deny")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"content-security-policy", b"default-src 'self' 'unsafe-inline' data:")
    request.setHeader(b"referrer-policy", b"same-origin")


def text_error(request: Any, status: int, text: str) -> bytes:
    """A plain-text error as Go's ``http.Error`` writes it."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return (text + "\n").encode()


__all__ = ["CappedRequest", "Form", "UploadedFile", "http", "parse_form"]
