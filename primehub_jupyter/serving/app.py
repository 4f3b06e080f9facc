"""The model server's ASGI application: Seldon v1 predictions and health checks."""

from __future__ import annotations

import os
import re
import sys
import traceback
import uuid
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

import numpy as np
import orjson

from .errors import PayloadError, PayloadTooLargeError
from .protocols import seldon
from .runtimes.base import Runtime

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_JSON = b"application/json"
_TEXT = b"text/plain; charset=utf-8"
# Client-chosen request ids are echoed in headers and log lines, so they must be one visible
# token: no spaces (log fields are space separated) and a bounded length.
_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")
_PREDICT_PATHS = ("/api/v1.0/predictions", "/api/v0.1/predictions")
_MAX_LOGGED_PATH = 512


_QUIET_PATHS = frozenset({"/health/ping", "/health/status"})


class _ClientGone(Exception):
    """The client disconnected before its request body arrived."""


class ModelServerApp:
    """Raw ASGI app serving one loaded runtime.

    The only blocking call on the event loop is the model itself (`predict`); everything else
    is a few dict lookups, one JSON decode and one encode per request.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        name: str,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        access_log: bool = True,
        deployment: str | None = None,
        replica: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.name = name
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log
        self.deployment = deployment
        self.replica = replica
        self._routes: dict[str, tuple[str, Callable[..., Awaitable[tuple[int, bytes, bytes]]]]]
        self._routes = {path: ("POST", self._predictions) for path in _PREDICT_PATHS}
        self._routes["/health/ping"] = ("GET", self._ping)
        self._routes["/health/status"] = ("GET", self._status)

    async def predict(self, X: np.ndarray, names: list[str] | None, meta: dict[str, Any]) -> Any:
        """Run the model. The single place a batching scheduler replaces later."""
        return self.runtime.predict(X, names, meta)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        started = perf_counter()
        request_id: bytes | None = None
        forwarded_id: bytes | None = None
        user: bytes | None = None
        content_length: bytes | None = None
        for key, value in scope["headers"]:
            if key == b"request-id":
                request_id = value
            elif key == b"x-request-id":
                forwarded_id = value
            elif key == b"x-forwarded-user":
                user = value
            elif key == b"content-length":
                content_length = value
        if request_id is None:
            request_id = forwarded_id
        if request_id is None or not _REQUEST_ID.fullmatch(request_id):
            request_id = uuid.uuid4().hex.encode()

        path = scope["path"]
        extra_headers: list[tuple[bytes, bytes]] = []
        route = self._routes.get(path)
        try:
            if route is None:
                status, content_type, body = _error(404, f"no route {path}", "NOT_FOUND")
            elif scope["method"] != route[0]:
                status, content_type, body = _error(
                    405, f"{path} accepts {route[0]} only", "METHOD_NOT_ALLOWED"
                )
                extra_headers.append((b"allow", route[0].encode()))
            else:
                status, content_type, body = await route[1](receive, content_length, request_id)
        except _ClientGone:
            if self.access_log:  # 499: nginx's code for "client closed the request"
                self._log(scope, 499, started, user, request_id)
            return

        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (b"request-id", request_id),
            *extra_headers,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        # Successful health probes come every few seconds and would bury real traffic.
        if self.access_log and not (status == 200 and path in _QUIET_PATHS):
            self._log(scope, status, started, user, request_id)

    async def _predictions(
        self, receive: Receive, content_length: bytes | None, request_id: bytes
    ) -> tuple[int, bytes, bytes]:
        try:
            body = await self._read_body(receive, content_length)
            request = seldon.decode_request(body, runtime=self.runtime.name)
            X = self.runtime.check_input(request.X, request.names)
        except PayloadError as exc:
            return _error(exc.status, str(exc), exc.reason)
        try:
            output = np.asarray(await self.predict(X, request.names, request.meta))
            meta = dict(request.meta)
            meta["puid"] = request_id.decode()
            body = seldon.encode_response(output, request.kind, self.runtime.class_names, meta)
        except PayloadError as exc:  # a runtime may reject input only it can judge
            return _error(exc.status, str(exc), exc.reason)
        except Exception as exc:
            # The model's own error text is what the caller needs; the traceback goes to the
            # server log for whoever owns the model. The server keeps serving.
            traceback.print_exc(file=sys.stderr)
            return _error(500, f"{type(exc).__name__}: {exc}", "MICROSERVICE_INTERNAL_ERROR")
        return 200, _JSON, body

    async def _read_body(self, receive: Receive, content_length: bytes | None) -> bytes:
        limit = self.max_body_bytes
        if content_length is not None and content_length.isdigit() and int(content_length) > limit:
            # Answer before reading: the server discards the rest of the upload itself.
            raise PayloadTooLargeError(_too_large(limit))
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(_too_large(limit))
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _ping(self, *_: Any) -> tuple[int, bytes, bytes]:
        return 200, _TEXT, b"pong"

    async def _status(self, *_: Any) -> tuple[int, bytes, bytes]:
        descriptor = self.runtime.descriptor
        status = {
            "status": "ok",
            "name": self.name,
            "runtime": self.runtime.name,
            "framework": descriptor.framework if descriptor else None,
            "predictMethod": getattr(self.runtime, "method", None),
            "classNames": self.runtime.class_names,
            "deployment": self.deployment,
            "replica": self.replica,
            "pid": os.getpid(),
        }
        return 200, _JSON, orjson.dumps(status)

    def _log(
        self, scope: Scope, status: int, started: float, user: bytes | None, request_id: bytes
    ) -> None:
        millis = (perf_counter() - started) * 1000.0
        who = user.replace(b" ", b"_")[:128] if user else b"-"
        path = scope["path"][:_MAX_LOGGED_PATH].replace(" ", "%20")
        line = b"%s %s %d %.2fms user=%s request_id=%s\n" % (
            scope["method"].encode(),
            path.encode("utf-8", "replace"),
            status,
            millis,
            who,
            request_id,
        )
        # One write(2) per line: atomic on a pipe, so lines from several workers never mix.
        # (try/except rather than contextlib.suppress: this runs on every request.)
        try:  # noqa: SIM105
            os.write(1, line)
        except OSError:
            pass


def _too_large(limit: int) -> str:
    return (
        f"the request body is larger than this server's limit of {limit} bytes; send fewer rows "
        "per request or start the model server with a larger --max-body-bytes"
    )


def _error(status: int, message: str, reason: str) -> tuple[int, bytes, bytes]:
    return status, _JSON, seldon.error_body(status, message, reason)


async def _lifespan(receive: Receive, send: Send) -> None:
    # The server runs uvicorn with lifespan="off"; this keeps other ASGI servers happy.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
