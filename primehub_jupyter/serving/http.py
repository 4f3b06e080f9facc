"""HTTP plumbing of the model server: the per-request context, body reading, answers, errors."""

from __future__ import annotations

import re
import sys
import traceback
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import PayloadError, PayloadTooLargeError
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
    """The whole request body (decompressed), at most `limit` bytes (413 beyond)."""
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
    encoding = call.content_encoding
    if encoding is not None and encoding not in (b"identity", b""):
        body = decompress(body, encoding, limit)
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


def decompress(body: bytes, encoding: bytes, limit: int) -> bytes:
    """Undo Content-Encoding gzip/deflate without ever holding more than `limit` bytes."""
    if encoding == b"gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == b"deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise PayloadError(f"Content-Encoding {encoding.decode('latin-1')!r} is not supported")
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise PayloadError(f"the {encoding.decode()} body cannot be decompressed: {exc}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise PayloadTooLargeError(too_large(limit))
    return data


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
