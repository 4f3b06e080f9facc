"""HTTP plumbing of the model server: the per-request context, body reading, answers, errors."""

from __future__ import annotations

import re
import sys
import traceback
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import PayloadError, PayloadTooLargeError, UnsupportedEncodingError
from .protocols import seldon

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
#: (status, content type, body) of a response.
Answer = tuple[int, bytes, bytes]

JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"
OCTETS = b"application/octet-stream"
# Client-chosen request ids are echoed in headers and log lines, so they must be one visible
# token: no spaces (log fields are space separated) and a bounded length.
REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")
REQUEST_ID_TEXT = re.compile(r"[\x21-\x7e]{1,128}")
#: Content codings of request bodies this server undoes (the 415 answer's Accept-Encoding).
ACCEPTED_ENCODINGS = b"gzip, deflate"
_CODINGS = {b"gzip": b"gzip", b"x-gzip": b"gzip", b"deflate": b"deflate"}
#: A body compressed more often than this is refused: each layer costs a full decompression.
MAX_CODINGS = 2
_GZIP_WBITS = 16 + zlib.MAX_WBITS


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


class Call:
    """What one request carries through the handlers."""

    __slots__ = (
        "content_encoding",
        "content_length",
        "content_type",
        "extra_headers",
        "header_length",
        "id_given",
        "log",
        "model_name",
        "model_version",
        "receive",
        "request_body",
        "request_id",
        "request_json_length",
        "response_json_length",
        "scope",
        "service",
        "user",
    )

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.request_id: bytes = b""
        self.id_given = False
        self.user: bytes | None = None
        self.content_length: bytes | None = None
        self.content_type: bytes | None = None
        self.content_encoding: bytes | None = None
        self.header_length: bytes | None = None
        self.model_name: bytes | None = None
        self.model_version: bytes | None = None
        self.extra_headers: list[tuple[bytes, bytes]] | None = None
        self.service: str | None = None
        self.log = False
        self.request_body = b""
        self.request_json_length = 0
        self.response_json_length = -1  # -1: the whole response is JSON


Handler = Callable[[Call], Awaitable[Answer]]


async def read_body(call: Call, limit: int) -> bytes:
    """The whole request body (decompressed), at most `limit` bytes (413 beyond).

    A Content-Encoding this server cannot undo is a 415 (with Accept-Encoding naming what it
    takes) before the body is read; a corrupt or truncated compressed body is a 400.
    """
    codings = content_codings(call)
    length = call.content_length
    if length is not None and length.isdigit() and int(length) > limit:
        # Answer before reading: the server discards the rest of the upload itself.
        raise PayloadTooLargeError(too_large(limit))
    chunks: list[bytes] = []
    size = 0
    receive = call.receive
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(too_large(limit))
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    # Codings are listed in the order they were applied: undo the last one first.
    for coding in reversed(codings):
        body = decompress(body, coding, limit)
    call.request_body = body
    return body


def text(value: bytes | None) -> str | None:
    """A header value as text (None stays None)."""
    return value.decode("utf-8", "replace") if value is not None else None


def header_length(value: bytes | None) -> int | None:
    """The Inference-Header-Content-Length of the V2 binary extension, if sent."""
    if value is None:
        return None
    if not value.isdigit():
        raise PayloadError("Inference-Header-Content-Length must be a non-negative integer")
    return int(value)


def content_codings(call: Call) -> list[bytes]:
    """The request's Content-Encoding as a list of codings to undo (identity left out).

    Codings are case-insensitive tokens (RFC 9110); anything but gzip (x-gzip) and deflate,
    or more than MAX_CODINGS of them, is an UnsupportedEncodingError (415) that also sets
    the Accept-Encoding answer header.
    """
    header = call.content_encoding
    if header is None:
        return []
    codings = []
    for token in header.split(b","):
        coding = token.strip().lower()
        if coding in (b"", b"identity"):
            continue
        if coding not in _CODINGS:
            call.extra_headers = [(b"accept-encoding", ACCEPTED_ENCODINGS)]
            shown = coding.decode("latin-1")[:64]
            raise UnsupportedEncodingError(
                f"Content-Encoding {shown!r} is not supported; send the body uncompressed or "
                f"compressed with {ACCEPTED_ENCODINGS.decode()}"
            )
        codings.append(_CODINGS[coding])
    if len(codings) > MAX_CODINGS:
        call.extra_headers = [(b"accept-encoding", ACCEPTED_ENCODINGS)]
        raise UnsupportedEncodingError(
            f"the body is compressed {len(codings)} times over; this server undoes at most "
            f"{MAX_CODINGS} content codings"
        )
    return codings


def decompress(body: bytes, coding: bytes, limit: int) -> bytes:
    """Undo one content coding (b"gzip" or b"deflate") without ever holding more than `limit`.

    gzip may hold several members (concatenated files decompress to the concatenation);
    deflate is the zlib format of RFC 9110, or raw deflate, which some clients send instead.
    """
    if not body:
        return body
    name = coding.decode()
    if coding == b"gzip":
        wbits = _GZIP_WBITS
    elif len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0:
        wbits = zlib.MAX_WBITS  # a zlib header: compression method 8, valid check bits
    else:
        wbits = -zlib.MAX_WBITS
    parts: list[bytes] = []
    size = 0
    rest = body
    while True:
        inflater = zlib.decompressobj(wbits)
        try:
            part = inflater.decompress(rest, limit + 1 - size)
        except zlib.error as exc:
            raise PayloadError(
                f"the {name} request body is corrupt ({exc}); compress the whole body once, or "
                "send it uncompressed without Content-Encoding"
            ) from None
        size += len(part)
        if size > limit or inflater.unconsumed_tail:
            raise PayloadTooLargeError(too_large(limit))
        parts.append(part)
        if not inflater.eof:
            raise PayloadError(
                f"the {name} request body is truncated: the compressed data ends before its "
                "end-of-stream marker"
            )
        rest = inflater.unused_data
        if not rest:
            break
        if wbits != _GZIP_WBITS:
            raise PayloadError(
                f"the {name} request body has {len(rest)} bytes after the end of the compressed "
                "data"
            )
    return parts[0] if len(parts) == 1 else b"".join(parts)


def too_large(limit: int) -> str:
    """The 413 message."""
    return (
        f"the request body is larger than this server's limit of {limit} bytes; send fewer rows "
        "per request or start the model server with a larger --max-body-bytes"
    )


def seldon_error(status: int, message: str, reason: str) -> Answer:
    """A Seldon-style error answer."""
    return status, JSON, seldon.error_body(status, message, reason)


def model_error(exc: BaseException) -> Answer:
    """A 500 with the model's own error text; the traceback goes to the server log."""
    # The model's own error text is what the caller needs; the traceback goes to the server
    # log for whoever owns the model. The server keeps serving.
    traceback.print_exception(exc, file=sys.stderr)
    return seldon_error(500, f"{type(exc).__name__}: {exc}", "MICROSERVICE_INTERNAL_ERROR")


async def lifespan(receive: Receive, send: Send) -> None:
    """Answer ASGI lifespan messages."""
    # The server runs uvicorn with lifespan="off"; this keeps other ASGI servers happy.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
