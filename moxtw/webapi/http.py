"""HTTP plumbing for the webapi: capped request bodies and form parsing."""

from __future__ import annotations

import re
from collections.abc import Callable
from email.parser import HeaderParser
from email.policy import HTTP
from typing import Any, TypeVar
from urllib.parse import parse_qs

import attrs
from twisted.web import http
from twisted.web.server import Request

from .errors import WebAPIError

DEFAULT_MAX_BODY = 10 * 1024 * 1024


class CappedRequest(Request):
    """A request whose body is not kept beyond ``site.max_request_size`` bytes.

    Twisted reads the whole body before rendering; past the cap, further chunks are
    discarded and :attr:`too_large` is set, so the handler answers with a JSON error and
    memory and disk stay bounded.  Bodies are left unparsed by Twisted: :func:`parse_form`
    parses them (keeping each multipart part's headers).
    """

    too_large = False
    original_content_type: bytes | None = None
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
        # We parse POST bodies ourselves (parse_form); keep Twisted from parsing them too
        # (its Content-Type parsing through the email package is slow, and it answers a
        # malformed multipart body with its own non-JSON 400).
        ctype = self.requestHeaders.getRawHeaders(b"content-type")
        if ctype is not None:
            self.original_content_type = ctype[0]
            self.requestHeaders.removeHeader(b"content-type")
        if self.too_large and self.content is not None:
            self.content.seek(0)
            self.content.truncate()
        try:
            super().requestReceived(command, path, version)
        finally:
            if ctype is not None:
                self.requestHeaders.setRawHeaders(b"content-type", ctype)


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


def content_type(request: Any) -> tuple[str, bytes]:
    """The media type (lower-case) and the raw Content-Type header of a request."""
    raw: bytes | None = getattr(request, "original_content_type", None)
    if raw is None:
        values = request.requestHeaders.getRawHeaders(b"content-type")
        if not values:
            raise WebAPIError("protocol", "unknown content-type ")
        raw = values[0]
    text = raw.decode("latin-1")
    media = text.split(";", 1)[0].strip().lower()
    if "/" not in media or not all(media.split("/")):
        raise WebAPIError("protocol", f"unknown content-type {text}")
    return media, raw


def parse_form(request: Any) -> Form:
    """The POST body's form fields (and uploaded files, for multipart)."""
    media, raw = content_type(request)
    request.content.seek(0)
    body: bytes = request.content.read()
    if media == "multipart/form-data":
        return _parse_multipart(raw, body)
    if media != "application/x-www-form-urlencoded":
        return Form({}, [])
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, strict_parsing=False)
    except ValueError as e:
        raise WebAPIError("protocol", f"parsing form: {e}") from None
    return Form(fields, [])


_T = TypeVar("_T")

#: What the stdlib's header parser raises on some malformed parameters (IndexError for
#: ``x*="'``, ...).
_HEADER_ERRORS = (IndexError, ValueError, TypeError, AttributeError, LookupError)


def _parsed(get: Callable[..., _T], *args: Any, **kwargs: Any) -> _T | None:
    """``get(*args, **kwargs)``, or None if the header it parses is malformed (as Go's
    ``mime.ParseMediaType`` refuses it, and Go's form parsing then goes without)."""
    try:
        return get(*args, **kwargs)
    except _HEADER_ERRORS:
        return None


#: A part's Content-Type header lines, with continuation lines.
_CONTENT_TYPE_LINES = re.compile(r"(?im)^content-type[ \t]*:.*(?:\r?\n[ \t].*)*(?:\r?\n|$)")


def _header_text(headers: Any, name: str) -> str:
    """A part header's value ("" if absent or malformed)."""
    return _parsed(lambda: str(headers.get(name) or "")) or ""


def _parse_multipart(ctype: bytes, body: bytes) -> Form:
    """Parse ``multipart/form-data`` keeping every part's bytes and headers exactly."""
    parser = HeaderParser(policy=HTTP)
    header = _parsed(parser.parsestr, "Content-Type: " + ctype.decode("latin-1") + "\r\n\r\n")
    boundary = None if header is None else _parsed(header.get_param, "boundary")
    if not isinstance(boundary, str) or not boundary:
        raise WebAPIError("protocol", "parsing form: no multipart boundary param in Content-Type")
    try:
        delimiter = b"\r\n--" + boundary.encode("latin-1")
    except UnicodeEncodeError:  # an RFC 2231 boundary*= that decoded beyond latin-1
        delimiter = b"\r\n--" + boundary.encode("utf-8")
    chunks = (b"\r\n" + body).split(delimiter)
    if len(chunks) < 2 or not chunks[-1].startswith(b"--"):
        raise WebAPIError("protocol", "parsing form: multipart: NextPart: EOF")
    fields: dict[str, list[str]] = {}
    files: list[UploadedFile] = []
    for chunk in chunks[1:-1]:
        head_end = chunk.find(b"\r\n\r\n")
        if head_end < 0:
            raise WebAPIError("protocol", "parsing form: multipart: malformed MIME header")
        # After the delimiter: optional padding, CRLF, headers, CRLF CRLF, content.
        line_end = chunk.find(b"\r\n")
        text = chunk[line_end + 2 : head_end + 4].decode("utf-8", "replace")
        headers = _parsed(parser.parsestr, text)
        if headers is None:  # a Content-Type the stdlib cannot parse: go without it
            headers = _parsed(parser.parsestr, _CONTENT_TYPE_LINES.sub("", text))
        content = chunk[head_end + 4 :]
        if headers is None or _parsed(headers.get_content_disposition) != "form-data":
            continue
        name = _parsed(headers.get_param, "name", header="content-disposition")
        if not isinstance(name, str):
            continue
        filename = _parsed(headers.get_filename)
        if filename is None:
            # Go's ReadForm keeps a value's bytes as sent: a part's charset is not applied
            # (an unknown or malformed one is no error).
            fields.setdefault(name, []).append(content.decode("utf-8", "replace"))
            continue
        files.append(
            UploadedFile(
                field=name,
                filename=filename.replace("\\", "/").rsplit("/", 1)[-1],
                content_type=_header_text(headers, "content-type") or None,
                content_id=_header_text(headers, "content-id"),
                data=content,
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
