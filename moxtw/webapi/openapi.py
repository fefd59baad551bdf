"""The webapi's OpenAPI 3.1 document, generated from the request/response types.

The schemas come from the :func:`~moxtw.webapi.gojson.gostruct` classes of
:mod:`moxtw.webapi.types`, read the way :mod:`~moxtw.webapi.gojson` decodes and encodes
them, so they cannot drift from the code: the method list is
:data:`~moxtw.webapi.types.REQUEST_TYPES`, the error codes
:data:`~moxtw.webapi.errors.CODES`.  The prose (summaries, descriptions) is written here.

Conventions of the schemas:

* Requests: every field is optional (a missing field is its zero value); slices, maps
  and pointers may be ``null``; unknown fields are refused (``additionalProperties:
  false``).  The schema is the canonical form: the server is more lenient (it matches
  keys case-insensitively, takes ``null`` for any field as its zero value and ignores
  anything after the first JSON value), as mox is.
* Responses: every field is always present (``required``); slices and maps are never
  ``null`` (``[]``, ``{}``), pointers (``Date``) may be.
* Go integers are 64-bit (``format: int64`` with its bounds); times are RFC 3339 strings
  as Go writes and reads them.

The document is built once at import (:data:`DOCUMENT`); :func:`document` and
:func:`document_bytes` give it for a mount point (its ``servers``).
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterator
from typing import Any

from .. import __version__
from . import types as t
from .errors import CODES
from .gojson import (
    _Array,
    _Bool,
    _Int,
    _Map,
    _Pointer,
    _Slice,
    _String,
    _Struct,
    _struct_info,
    _Time,
    _Type,
    go_type_name,
)

__all__ = [
    "DOCUMENT",
    "FILE_FIELDS",
    "OPENAPI_VERSION",
    "document",
    "document_bytes",
    "json_schema",
]

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/"

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

#: RFC 3339 as Go's ``time.Time`` writes it and accepts it: upper-case ``T`` and ``Z``,
#: seconds below 60, year 0001-9999 (the ``date-time`` format says the rest).
TIME_PATTERN = (
    r"^([0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})"
    r"-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-5][0-9](\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
)

#: Send's multipart file fields (moxtw/webapi/methods.py) and where each file goes.
FILE_FIELDS = {
    "alternativefile": "Extra alternative inside multipart/alternative (as AlternativeFiles).",
    "inlinefile": "Inline file inside multipart/related (as InlineFiles); a `Content-ID` "
    "part header gives its Content-ID, for `cid:` URLs in the HTML.",
    "attachedfile": "Attachment inside multipart/mixed (as AttachedFiles).",
}

# --- prose --------------------------------------------------------------------------------

INFO_DESCRIPTION = """\
moxtw's webapi: send email and manage the suppression list and the messages of an account
over HTTP and JSON. It is wire-compatible with version **v0 of the webapi of the
[mox](https://github.com/mjl-/mox) mail server** (same URLs, form field, JSON field names,
error codes), so a client written for mox works against moxtw unchanged, and a client
generated from this document works against mox v0 too. `info.version` is moxtw's version;
the API version is the `v0` in the paths.

**Calling a method.** `POST <base>v0/<Method>` with HTTP basic authentication (username: an
email address of the account, password: the account's password). The request is a JSON
object in the form field `request`, sent as `application/x-www-form-urlencoded` or
`multipart/form-data` (the latter also carries Send's file uploads). The answer is `200`
with a JSON object (MessageRawGet and MessagePartGet: the bytes), or `400` with an
`Error` object `{"Code", "Message"}` for every API error: bad input, unknown request
fields, failed validation, missing messages, and internal errors (code `server`).

**JSON.** Field names are Go's (`MsgID`, `To`); the server matches them case-insensitively,
takes `null` as a field's zero value, and ignores data after the first JSON value, as
Go's decoder does; the schemas describe the canonical form. Missing request fields are
their zero value (`""`, `0`, `false`, empty list). Answers contain every field; lists and
maps are `[]`/`{}`, never `null`. Times are RFC 3339 (`2024-03-27T10:00:00Z`; Go's zero
time `0001-01-01T00:00:00Z` means none). Integers are 64-bit.

**Errors outside the JSON API.** A missing or wrong login is `401` (plain text, with
`WWW-Authenticate: Basic realm=webapi`); too many failed logins from a network is `429`
(plain text). Request bodies over the server's limit (10 MiB by default) are refused with
a `400` `protocol` error before they are read further.

The `GET` pages (`<base>v0/` and `<base>v0/<Method>`) are HTML for people: the method list
and a form to try each method.
"""

ERROR_CODES_DESCRIPTION = """\
The error code. `protocol`: the HTTP request is wrong (content type, form, missing or
empty `request`, JSON that does not decode into the request type, unknown field).
`server`: an internal error (retrying may help). `user`: the request is refused for
another reason given in the message (control characters in header values, bad base64
file data, FutureRelease too far ahead, unknown mailbox, bad flag, ...). `error`: mox's
code for other failures (moxtw uses `user` instead). `badAddress`: an email address does
not parse. Send only: `missingBody` (neither Text nor HTML), `multipleFrom`, `badFrom`
(From address not allowed for the account), `domainDisabled`, `noRecipients`,
`messageLimitReached` and `recipientLimitReached` (the account's daily limits),
`messageTooLarge`, `malformedMessageID` (no `<...>`), `sentOverQuota` (sent, but not
stored in Sent). Message methods: `messageNotFound`, `partNotFound`.
"""

#: Per method: (summary, description).  Every method of REQUEST_TYPES needs an entry.
METHOD_DOCS: dict[str, tuple[str, str]] = {
    "Send": (
        "Compose a message and queue it for delivery",
        "Composes a MIME message from the request (text and/or HTML, files, headers) and "
        "queues one delivery per recipient (To, then CC, then BCC). `Submissions` lists them "
        "in that order with their queue IDs; outgoing webhooks report each one's fate, "
        "with the request's `Extra` data. The message is on disk before the answer. Files "
        "can be given as base64 in the JSON or uploaded as `multipart/form-data` parts "
        "`alternativefile`, `inlinefile` and `attachedfile` (with a filename; a part's "
        "`Content-Type` is used, else detected). The From address defaults to the login "
        "address. Errors: `missingBody`, `multipleFrom`, `badAddress`, `user`, `badFrom`, "
        "`domainDisabled`, `noRecipients`, `messageLimitReached`, "
        "`recipientLimitReached`, `malformedMessageID`, `messageTooLarge`, "
        "`sentOverQuota`, `server`.",
    ),
    "SuppressionList": (
        "List the account's suppressed addresses",
        "All suppressions of the account (`[]` if none). Deliveries to a suppressed "
        "address fail at once.",
    ),
    "SuppressionAdd": (
        "Add an address to the suppression list",
        "Adds the address's base address (the localpart up to the first `+` or `-`, "
        "without dots, lower-cased). Errors: `badAddress`; `user` if the base address "
        "is already listed.",
    ),
    "SuppressionRemove": (
        "Remove an address from the suppression list",
        "Removes the suppression of the address's base address (any variant of the "
        "address removes it). Errors: `badAddress`; `user` if it is not listed.",
    ),
    "SuppressionPresent": (
        "Check whether an address is suppressed",
        "Whether the account has a suppression for the address's base address. "
        "Errors: `badAddress`.",
    ),
    "MessageGet": (
        "Get a message's headers, text, HTML, MIME structure and metadata",
        "Parses the stored message `MsgID`: addresses, subject, first text/plain and "
        "text/html parts (decoded, at most 1 MiB each), the MIME tree, and delivery "
        "metadata. Errors: `messageNotFound`.",
    ),
    "MessageRawGet": (
        "Get a message's bytes",
        "The complete stored message, unmodified, as `text/plain`. Errors: "
        "`messageNotFound`.",
    ),
    "MessagePartGet": (
        "Get the decoded content of one MIME part",
        "The content of the part at `PartPath` (indices of child parts from the root; "
        "empty: the root body), with its transfer encoding decoded. The `Content-Type` "
        "is detected from the content. Errors: `messageNotFound`, `partNotFound`.",
    ),
    "MessageDelete": (
        "Delete a message",
        "Removes the message permanently (not to Trash). Errors: `messageNotFound`.",
    ),
    "MessageFlagsAdd": (
        "Set flags and keywords on a message",
        "Sets system flags (`\\seen`, `\\answered`, `\\flagged`, `\\deleted`, "
        "`\\draft`, `$junk`, `$notjunk`, `$forwarded`, `$phishing`, `$mdnsent`) and "
        "keywords (other printable ASCII words, lower-cased). Errors: `messageNotFound`, "
        "`user` (invalid keyword).",
    ),
    "MessageFlagsRemove": (
        "Clear flags and keywords of a message",
        "Clears the flags and keywords; see MessageFlagsAdd. Errors: `messageNotFound`, "
        "`user` (invalid keyword).",
    ),
    "MessageMove": (
        "Move a message to another mailbox",
        "Moves the message to the mailbox named `DestMailboxName` (exact, case-sensitive: "
        "Inbox, Sent, Archive, Drafts, Junk, Trash); it keeps its MsgID. Errors: "
        "`messageNotFound`, `user` (no such mailbox, already there).",
    ),
}

#: Descriptions of types (by Go name without package) and of fields ("Type.Field").
TYPE_DOCS: dict[str, str] = {
    "Error": "Body of every 400 answer.",
    "NameAddress": "An email address with an optional display name.",
    "File": "A file of a Send, with its data in standard base64 (with padding).",
    "Message": "A message's addresses, subject and readable text.",
    "Structure": "A MIME part and its children: the structure of a message.",
    "MessageMeta": "What moxtw knows about a stored message besides its contents.",
    "Submission": "One queued delivery of a Send: one per recipient.",
    "Suppression": "An address deliveries to which fail at once.",
}
FIELD_DOCS: dict[str, str] = {
    "Error.Code": ERROR_CODES_DESCRIPTION,
    "Error.Message": "What went wrong, for people.",
    "NameAddress.Name": "Display name; may be empty.",
    "NameAddress.Address": "Email address (`localpart@domain`, no display-name syntax).",
    "File.Name": "File name for the Content-Disposition header.",
    "File.ContentType": "Content-Type of the part; empty: detected from the data.",
    "File.ContentID": "Content-ID with `<>`, for inline files referenced as `cid:`.",
    "File.Data": "The file's contents in standard base64.",
    "SendRequest.From": "At most one address; default: the login address.",
    "SendRequest.MessageID": "Message-ID with `<>`; empty: generated.",
    "SendRequest.References": "Message-IDs (with `<>`) of the thread, oldest first.",
    "SendRequest.Date": "Date header; null or absent: now.",
    "SendRequest.Text": "text/plain body. Text or HTML is required.",
    "SendRequest.HTML": "text/html body.",
    "SendRequest.Extra": "Data kept with each queued delivery and sent back in outgoing "
    "webhooks.",
    "SendRequest.Headers": "Extra headers, `[name, value]`, added in order.",
    "SendRequest.AlternativeFiles": "Extra alternatives inside multipart/alternative.",
    "SendRequest.InlineFiles": "Files inside multipart/related (referenced from the HTML).",
    "SendRequest.AttachedFiles": "Attachments inside multipart/mixed.",
    "SendRequest.RequireTLS": "null: the default TLS policy; true: require verified TLS "
    "on the whole path (REQUIRETLS); false: `TLS-Required: No`.",
    "SendRequest.FutureRelease": "First delivery attempt not before this time (at most "
    "60 days ahead).",
    "SendRequest.SaveSent": "Also store a copy in the account's Sent mailbox.",
    "SendResult.MessageID": "The Message-ID of the message, with `<>`.",
    "SendResult.Submissions": "One per recipient: To, then CC, then BCC.",
    "Submission.Address": "The recipient as given in the request.",
    "Submission.QueueMsgID": "ID of the queued delivery (in webhooks and the queue).",
    "Submission.FromID": "Unique ID in the MAIL FROM address when the login uses "
    "FromIDs (bounces are matched on it); else empty.",
    "Suppression.BaseAddress": "The address in its simplified form, which is matched.",
    "Suppression.OriginalAddress": "The address as it was added.",
    "Suppression.Manual": "Added by hand rather than after delivery failures.",
    "SuppressionAddRequest.Manual": "Mark the suppression as added by hand.",
    "SuppressionAddRequest.Reason": "Why the address is suppressed, for people.",
    "MessageGetRequest.MsgID": "The message's ID (from incoming webhooks).",
    "MessageRawGetRequest.MsgID": "The message's ID (from incoming webhooks).",
    "MessagePartGetRequest.MsgID": "The message's ID (from incoming webhooks).",
    "MessagePartGetRequest.PartPath": "Child indices from the root part; empty: the root.",
    "MessageFlagsAddRequest.Flags": "System flags and keywords to set.",
    "MessageFlagsRemoveRequest.Flags": "System flags and keywords to clear.",
    "MessageMoveRequest.DestMailboxName": "Exact name of an existing mailbox.",
    "Message.Date": "Parsed Date header; null if absent or unparsable.",
    "Message.References": "Message-IDs of the thread (In-Reply-To first if not listed).",
    "Structure.ContentType": "Lower-case `type/subtype` (`/` if the part has none).",
    "Structure.ContentTypeParams": "Content-Type parameters (lower-case keys).",
    "Structure.DecodedSize": "Size after transfer decoding.",
    "Structure.Parts": "Child parts; `[]` for leaf parts.",
    "MessageMeta.Size": "Stored size in bytes.",
    "MessageMeta.DSN": "Whether the message is a delivery status notification.",
    "MessageMeta.Flags": "System flags, then keywords, lower-case.",
    "MessageMeta.MailFromValidated": "SPF passed for MailFrom.",
    "MessageMeta.MsgFromValidated": "DMARC-style validation of the From address passed.",
    "MessageMeta.MailboxName": "The mailbox the message is in.",
}

# --- schemas from the Go types ----------------------------------------------------------


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    return {**schema, "type": [schema["type"], "null"]}


def _child_structs(gotype: _Type) -> Iterator[type]:
    if isinstance(gotype, _Struct):
        yield gotype.cls
    elif isinstance(gotype, (_Pointer, _Slice, _Map, _Array)):
        yield from _child_structs(gotype.elem)


class _Schemas:
    """Component schemas of gostruct classes, in request or response form."""

    def __init__(self, requests: list[type], responses: list[type]) -> None:
        self.components: dict[str, dict[str, Any]] = {}
        self._used: set[tuple[type, bool]] = set()
        for cls in requests:
            self._collect(cls, False)
        for cls in responses:
            self._collect(cls, True)
        self._names: dict[tuple[type, bool], str] = {}
        taken: dict[str, tuple[type, bool]] = {}
        for cls, response in sorted(self._used, key=lambda k: (_struct_info(k[0]).name, k[1])):
            name = _struct_info(cls).name
            if not response and (cls, True) in self._used:
                name += "Input"  # request form of a type that answers use too
            if name in taken:
                raise TypeError(f"two types for schema {name}: {taken[name]} and {cls}")
            taken[name] = (cls, response)
            self._names[cls, response] = name

    def _collect(self, cls: type, response: bool) -> None:
        if (cls, response) in self._used:
            return
        self._used.add((cls, response))
        for field in _struct_info(cls).fields:
            for child in _child_structs(field.type):
                self._collect(child, response)

    def ref(self, cls: type, response: bool) -> dict[str, Any]:
        name = self._names[cls, response]
        if name not in self.components:
            self.components[name] = {}  # placeholder: types may be recursive
            self.components[name] = self._struct(cls, response)
        return {"$ref": REF + name}

    def _struct(self, cls: type, response: bool) -> dict[str, Any]:
        info = _struct_info(cls)
        properties = {}
        for field in info.fields:
            prop = self.schema(field.type, response)
            doc = FIELD_DOCS.get(f"{info.name}.{field.name}")
            if doc is not None:
                prop = {**prop, "description": doc}
            properties[field.name] = prop
        schema: dict[str, Any] = {"type": "object"}
        doc = TYPE_DOCS.get(info.name)
        if doc is not None:
            schema["description"] = doc
        schema["properties"] = properties
        if response:
            schema["required"] = list(properties)
        schema["additionalProperties"] = False
        schema["x-go-type"] = go_type_name(cls)
        return schema

    def schema(self, gotype: _Type, response: bool) -> dict[str, Any]:
        if isinstance(gotype, _String):
            return {"type": "string"}
        if isinstance(gotype, _Bool):
            return {"type": "boolean"}
        if isinstance(gotype, _Int):
            return {"type": "integer", "format": "int64", "minimum": INT64_MIN, "maximum": INT64_MAX}
        if isinstance(gotype, _Time):
            return {"type": "string", "format": "date-time", "pattern": TIME_PATTERN}
        if isinstance(gotype, _Pointer):
            return _nullable(self.schema(gotype.elem, response))
        if isinstance(gotype, _Slice):
            schema = {"type": "array", "items": self.schema(gotype.elem, response)}
            return schema if response else _nullable(schema)  # answers: [] for nil
        if isinstance(gotype, _Map):
            schema = {"type": "object", "additionalProperties": self.schema(gotype.elem, response)}
            return schema if response else _nullable(schema)  # answers: {} for nil
        if isinstance(gotype, _Array):
            elem = self.schema(gotype.elem, response)
            n = gotype.length
            return {"type": "array", "prefixItems": [elem] * n, "minItems": n, "maxItems": n}
        if isinstance(gotype, _Struct):
            return self.ref(gotype.cls, response)
        raise TypeError(f"no schema for Go type {gotype.name}")


# --- the document -----------------------------------------------------------------------

_TEXT = {"text/plain": {"schema": {"type": "string"}}}
_HTML = {"text/html": {"schema": {"type": "string"}}}


def _request_body(method: str, request_ref: dict[str, Any]) -> dict[str, Any]:
    field = {
        "type": "string",
        "minLength": 1,
        "description": f"The request, a JSON object ({request_ref['$ref'].removeprefix(REF)}).",
        "contentMediaType": "application/json",
        "contentSchema": request_ref,
    }
    form: dict[str, Any] = {"type": "object", "required": ["request"], "properties": {"request": field}}
    multipart = copy.deepcopy(form)
    encoding: dict[str, Any] = {}
    if method == "Send":
        for name, doc in FILE_FIELDS.items():
            multipart["properties"][name] = {
                "type": "array",
                "description": doc + " One part per file, with a filename.",
                "items": {"type": "string", "contentMediaType": "application/octet-stream"},
            }
            encoding[name] = {"contentType": "*/*"}
        encoding["inlinefile"]["headers"] = {
            "Content-ID": {
                "description": "Content-ID of the inline file, with `<>`.",
                "schema": {"type": "string"},
            }
        }
    multipart_media: dict[str, Any] = {"schema": multipart}
    if encoding:
        multipart_media["encoding"] = encoding
    return {
        "required": True,
        "description": "The JSON request in form field `request`.",
        "content": {
            "application/x-www-form-urlencoded": {"schema": form},
            "multipart/form-data": multipart_media,
        },
    }


def _success(method: str, schemas: _Schemas) -> dict[str, Any]:
    response_type = t.RESPONSE_TYPES[method]
    if response_type is not None:
        return {
            "description": "The result.",
            "content": {"application/json": {"schema": schemas.ref(response_type, True)}},
        }
    if method == "MessageRawGet":
        return {
            "description": "The message's bytes, as stored.",
            "content": {"text/plain": {"schema": {"type": "string", "contentMediaType": "message/rfc822"}}},
        }
    return {
        "description": "The part's decoded content; the Content-Type is detected from it "
        "(e.g. `text/plain; charset=utf-8`, `image/png`, `application/octet-stream`).",
        "content": {"*/*": {"schema": {}}},
    }


def _method_page(method: str) -> dict[str, Any]:
    return {
        "operationId": f"{method}Page",
        "tags": ["pages"],
        "summary": f"HTML page of {method}",
        "description": "An example request and a form to call the method (no login needed "
        "for the page).",
        "security": [],
        "responses": {"200": {"description": "The page.", "content": _HTML}},
    }


def _build() -> dict[str, Any]:
    methods = list(t.REQUEST_TYPES)
    json_results = [r for r in t.RESPONSE_TYPES.values() if r is not None]
    schemas = _Schemas([t.REQUEST_TYPES[m] for m in methods], [t.Error, *json_results])
    error_ref = schemas.ref(t.Error, True)
    code = schemas.components["Error"]["properties"]["Code"]
    code["enum"] = sorted(CODES)

    paths: dict[str, Any] = {
        "/": {
            "get": {
                "operationId": "Base",
                "tags": ["pages"],
                "summary": "Redirect to the method list",
                "security": [],
                "responses": {
                    "303": {
                        "description": "To `<base>v0/`.",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "OpenAPI",
                "tags": ["pages"],
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The OpenAPI document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/v0/": {
            "get": {
                "operationId": "Index",
                "tags": ["pages"],
                "summary": "HTML list of the methods",
                "security": [],
                "responses": {"200": {"description": "The page.", "content": _HTML}},
            }
        },
    }
    for method in methods:
        summary, description = METHOD_DOCS[method]
        post = {
            "operationId": method,
            "tags": ["methods"],
            "summary": summary,
            "description": description,
            "security": [{"basic": []}],
            "requestBody": _request_body(method, schemas.ref(t.REQUEST_TYPES[method], False)),
            "responses": {
                "200": _success(method, schemas),
                "400": {"$ref": "#/components/responses/Error"},
                "401": {"$ref": "#/components/responses/Unauthorized"},
                "429": {"$ref": "#/components/responses/TooManyRequests"},
            },
        }
        paths[f"/v0/{method}"] = {"get": _method_page(method), "post": post}

    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "moxtw webapi",
            "version": __version__,
            "summary": "Send email and learn what became of it over HTTP and JSON "
            "(mox webapi v0 compatible).",
            "description": INFO_DESCRIPTION,
            "license": {"name": "MIT", "identifier": "MIT"},
            "x-mox-webapi-version": "v0",
        },
        "externalDocs": {
            "description": "mox's webapi package (the original of this API)",
            "url": "https://pkg.go.dev/github.com/mjl-/mox/webapi/",
        },
        "servers": [{"url": "/webapi", "description": "The webapi's base path."}],
        "tags": [
            {"name": "methods", "description": "The API: POST with basic auth."},
            {"name": "pages", "description": "HTML pages and this document: GET, no login."},
        ],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "responses": {
                "Error": {
                    "description": "An API error (including internal errors, code `server`).",
                    "content": {"application/json": {"schema": error_ref}},
                },
                "Unauthorized": {
                    "description": "No or wrong credentials, or login disabled for the "
                    "account (plain text).",
                    "headers": {
                        "WWW-Authenticate": {
                            "description": "`Basic realm=webapi` (not when login is disabled).",
                            "schema": {"type": "string"},
                        }
                    },
                    "content": _TEXT,
                },
                "TooManyRequests": {
                    "description": "Too many failed logins from this network (plain text).",
                    "content": _TEXT,
                },
            },
            "securitySchemes": {
                "basic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "Username: an email address of the account (catchall "
                    "suffixes allowed); password: the account's password.",
                }
            },
        },
    }


DOCUMENT: dict[str, Any] = _build()
"""The OpenAPI document, with ``servers`` for the default base path ``/webapi/``."""


def document(base_path: str = "/webapi/") -> dict[str, Any]:
    """The OpenAPI document for the webapi mounted at *base_path* (a copy)."""
    doc = copy.deepcopy(DOCUMENT)
    doc["servers"][0]["url"] = base_path.rstrip("/") or "/"
    return doc


@functools.lru_cache(maxsize=8)
def document_bytes(base_path: str = "/webapi/") -> bytes:
    """:func:`document` as the JSON served at ``<base>openapi.json``."""
    return json.dumps(document(base_path), indent=1, ensure_ascii=False).encode() + b"\n"


def json_schema(name: str) -> dict[str, Any]:
    """A standalone JSON Schema (2020-12) of component *name* (e.g. ``SendRequest``),
    with the schemas it refers to under ``$defs``; for generating or checking requests."""
    components = DOCUMENT["components"]["schemas"]
    if name not in components:
        raise KeyError(name)

    def rewrite(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: ("#/$defs/" + v.removeprefix(REF) if k == "$ref" else rewrite(v))
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [rewrite(v) for v in value]
        return value

    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": f"#/$defs/{name}",
        "$defs": rewrite(components),
    }
