"""Forwarding `/deployment/<id>/...` requests to model-server replicas, with retry and auth."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time

import orjson
from aiohttp import web

from .access import Gatekeeper
from .auth import ClientAuthenticator, internal_token
from .hold import HOLD_RETRY_AFTER, HoldFull, Holds, waking_message
from .load import AnsweredIds, feedback_reference
from .metrics import request_kind
from .routes import VISIBLE_ASCII, PredictorRoute, Replica, Route, carry_over
from .shadow import Copy, ShadowMirror
from .upstream import (
    BrokenResponse,
    ConnectFailed,
    Connection,
    Disconnected,
    ReadTimeout,
    UpstreamError,
    UpstreamPool,
)

log = logging.getLogger("primehub_jupyter.gateway")

MAX_BODY = 64 * 1024 * 1024
# Responses up to this size are read whole and sent with Content-Length (the fast path for
# predictions); larger or chunked ones are streamed through.
BUFFERED_RESPONSE = 1024 * 1024
CONNECT_TIMEOUT = 5.0
# Seconds without a byte from a replica before the request fails with 504; a model may think
# for a long time, so this only catches replicas that hang.
READ_TIMEOUT = 600.0
# Seconds a replica that refused a connection is tried after the others.
DOWN_FOR = 2.0
# Below uvicorn's default keep-alive (5 s), so the pool rarely picks a connection the replica
# is just closing.
POOL_KEEPALIVE = 4.0
RETRY_AFTER = "5"
# On every answer a predictor gave or was chosen for (canary, A/B, feedback joins).
PREDICTOR_HEADER = "X-PrimeHub-Predictor"
# Request ids the model server takes (Request-ID first), as the gateway joins feedback by them.
REQUEST_ID_HEADERS = ("Request-ID", "X-Request-ID")
MAX_REQUEST_ID = 128

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# How the control plane calls a deployment on behalf of a signed-in user (see Proxy._vouched).
INTERNAL_TOKEN = "X-PrimeHub-Internal-Token"
INTERNAL_USER = "X-PrimeHub-User"
# Request headers the gateway removes or sets itself. Authorization and the internal token are
# secrets; X-Forwarded-User must only ever be the gateway's own statement of who authenticated.
DROP_REQUEST = HOP_BY_HOP | {
    "authorization",
    INTERNAL_TOKEN.lower(),
    INTERNAL_USER.lower(),
    "x-forwarded-user",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-prefix",
    "x-forwarded-host",
    "host",
    "content-length",
    "expect",
}
# A replica's own CORS headers are replaced by the gateway's (one policy for every endpoint).
DROP_RESPONSE = HOP_BY_HOP | {
    "content-length",
    "access-control-allow-origin",
    "access-control-expose-headers",
}
DROP_REQUEST_RAW = frozenset(name.encode() for name in DROP_REQUEST)
DROP_RESPONSE_RAW = frozenset(name.encode() for name in DROP_RESPONSE)
# Methods whose requests carry a Content-Length even when the body is empty.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
JSON_HEADERS = {"Content-Type": "application/json"}
# Browser pages on other origins (JupyterLab's service catalog, Swagger UI's "try it out") may
# call endpoints. "*" never admits the browser's own credentials (cookies, cached Basic auth):
# a private endpoint still needs the caller to set Authorization with a client token itself.
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": (
        "Request-ID, Inference-Header-Content-Length, X-PrimeHub-Predictor"
    ),
}
CORS_PREFLIGHT = {
    **CORS_HEADERS,
    "Access-Control-Allow-Methods": "GET, POST, HEAD",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Request-ID",
    "Access-Control-Max-Age": "600",
}
_CORS_RAW = [(name, value) for name, value in CORS_HEADERS.items()]


def json_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """A `{"message": ...}` error response."""
    merged = {**JSON_HEADERS, **headers} if headers else JSON_HEADERS
    return web.Response(status=status, body=orjson.dumps({"message": message}), headers=merged)


def _connection_tokens(values: list[bytes]) -> frozenset[bytes]:
    """Header names that Connection headers declare hop-by-hop."""
    return frozenset(t.strip().lower() for value in values for t in value.split(b","))


class BodyTooLarge(Exception):
    """The request body exceeds MAX_BODY."""


class BodyIncomplete(Exception):
    """The client closed the connection before sending its whole body."""


async def read_body(request: web.BaseRequest, limit: int = MAX_BODY) -> bytes:
    """Read the whole request body (needed to retry it on another replica), at most `limit`."""
    if not request.body_exists:
        return b""
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge  # answered before "100 Continue", so the client never sends it
    expect = request.headers.get("Expect")
    if expect is not None and expect.lower() == "100-continue" and request.version >= (1, 1):
        # The low-level aiohttp server leaves this to us; curl waits a second without it.
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if length is not None:
        try:
            return await request.content.readexactly(length)
        except asyncio.IncompleteReadError:
            raise BodyIncomplete from None
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class Proxy:
    """Holds the routing table and the upstream connection pool, and forwards requests."""

    def __init__(
        self, admin_token: str, holds: Holds | None = None, access: Gatekeeper | None = None
    ) -> None:
        self._admin_token = admin_token
        # Requests waiting for a predictor at zero replicas to wake (see gateway/hold.py).
        self.holds = holds or Holds()
        self.routes: dict[str, Route] = {}
        # Deployments whose routing entry the last table had but the gateway refused.
        self.rejected: dict[str, str] = {}
        # HTTP Basic clients, and bearer JWTs when the server is configured for them.
        self.access = access or Gatekeeper(ClientAuthenticator())
        self.pool = UpstreamPool(
            connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT, idle_timeout=POOL_KEEPALIVE
        )
        self.mirror = ShadowMirror(self.pool)
        # Which predictor answered each recent prediction, so its feedback goes (and counts) there.
        self.answered = AnsweredIds()

    async def close(self) -> None:
        """Stop mirroring, close pooled upstream connections and the hashing threads."""
        await self.mirror.close()
        await self.pool.close()
        self.access.close()

    def replace_routes(self, routes: dict[str, Route], rejected: dict[str, str]) -> None:
        """Swap in a new routing table; requests already forwarded finish on their replica."""
        carry_over(self.routes, routes)
        self.routes = routes
        self.rejected = rejected

    async def forward(
        self, request: web.BaseRequest, dep_id: str, target: str, path: str
    ) -> web.StreamResponse:
        """Answer a request for deployment `dep_id`; `target` is the upstream path and query."""
        route = self.routes.get(dep_id)
        if route is None:
            if dep_id in self.rejected:
                # The reason goes to the engine (and the deployment's status), not to anonymous
                # callers: it may name a private deployment's clients.
                return json_response(
                    503,
                    f"deployment '{dep_id}' is not routed: the gateway refused its routing "
                    "entry (its status says why)",
                    {"Retry-After": RETRY_AFTER},
                )
            return json_response(404, f"deployment '{dep_id[:80]}' not found")
        user: str | None = None
        if INTERNAL_TOKEN in request.headers and self._vouched(request, dep_id):
            user = request.headers.get(INTERNAL_USER, "")
            # Jupyter user names may be non-ASCII; they are passed on as UTF-8.
            if not user or len(user) > 256 or not user.isprintable():
                return json_response(400, f"{INTERNAL_USER} must name the signed-in user")
        if route.private and user is None:
            admitted = await self.access.admit(route, request)
            if isinstance(admitted, web.StreamResponse):
                return admitted
            user = admitted
        if user is not None:
            request["user"] = user  # for the access log
        kind = request_kind(path)
        predictor: PredictorRoute | None = None
        if kind != "feedback":  # chosen before the body is read: a 503 needs no body
            sticky = route.sticky_header
            predictor = route.choose(request.headers.get(sticky) if sticky else None)
            if predictor is None or not predictor.available:
                woken = await self._wait_for_replica(request, route, predictor)
                if isinstance(woken, web.StreamResponse):
                    return woken
                route, predictor = woken
        try:
            body = await read_body(request)
        except BodyTooLarge:
            return json_response(413, f"request body larger than {MAX_BODY // 1048576} MiB")
        except BodyIncomplete:
            return json_response(400, "the request body ended before its Content-Length")
        joined = False
        reward: float | None = None
        if predictor is None:
            # Feedback goes to the predictor that answered the request it is about.
            request_id, reward = feedback_reference(body)
            request_id = request_id or _request_id(request)
            answered = self.answered.lookup(dep_id, request_id) if request_id else None
            predictor = route.predictor(answered) if answered is not None else None
            joined = predictor is not None and predictor.available
            if not joined:
                sticky = route.sticky_header
                predictor = route.choose(request.headers.get(sticky) if sticky else None)
            if predictor is None or not predictor.available:
                woken = await self._wait_for_replica(request, route, predictor)
                if isinstance(woken, web.StreamResponse):
                    return woken
                route, predictor = woken
        request["predictor"] = predictor.name  # for the gateway's metrics
        named = {PREDICTOR_HEADER: predictor.name}
        method = request.method
        start_line = f"{method} {target} HTTP/1.1\r\nHost: ".encode("utf-8", "surrogateescape")
        headers = _upstream_headers(request, route, user, method, len(body))
        load = predictor.load
        started = load.begin()
        status = 0
        try:
            response = await self._send(
                request, route, predictor, start_line, headers, body, kind == "feedback"
            )
            status = response.status
        finally:
            load.end()
            if kind == "predict" and status:  # 0: the client left, nobody's error
                elapsed = time.monotonic() - started
                load.observe(elapsed, error=status >= 500)
        if not response.prepared:
            response.headers.update(named)
        if 200 <= status < 300:
            if kind == "predict":
                answer_id = response.headers.get("Request-ID") or _request_id(request)
                if answer_id and not _usable_id(answer_id):
                    answer_id = None
                if answer_id:
                    self.answered.remember(dep_id, answer_id, predictor.name)
                shadow = route.shadow
                if shadow is not None and shadow.available:
                    self._mirror(shadow, start_line, headers, body, response, answer_id, request)
                elif shadow is not None and shadow.hold:
                    # A shadow at zero replicas is never waited for: the copy is dropped, and
                    # counted, which the engine's autoscaler reads as a request that wakes it.
                    shadow.load.shadow_dropped += 1
            elif joined:
                load.joined(reward)
        return response

    async def _wait_for_replica(
        self, request: web.BaseRequest, route: Route, predictor: PredictorRoute | None
    ) -> tuple[Route, PredictorRoute] | web.StreamResponse:
        """Hold a request for a predictor without a replica that is waking (or may wake).

        The route and predictor to send it to once a routes update brought a replica; else the
        answer: 503 with Retry-After when the hold is full or its wait ran out, the usual 503
        for a predictor that does not wake on demand, 404 when the deployment went away.
        """
        if predictor is None or not predictor.hold:
            return _unavailable(request, route, predictor)
        dep_id, name = route.id, predictor.name
        request["predictor"] = name  # for the gateway's metrics, whatever the answer
        named = {"Retry-After": HOLD_RETRY_AFTER, PREDICTOR_HEADER: name}

        def ready() -> bool:
            current = self.routes.get(dep_id)
            now = current.predictor(name) if current is not None else None
            # Gone (deleted, renamed) or no longer waking: stop waiting and answer now.
            return now is None or now.available or not now.hold

        try:
            woke = await self.holds.wait((dep_id, name), ready)
        except HoldFull:
            why = f"{self.holds.limit} requests already wait for it"
            return json_response(503, waking_message(dep_id, name, why), named)
        if not woke:
            why = f"no replica was ready within {self.holds.max_wait:g} s"
            if self.holds.closed:
                why = "the gateway is shutting down"
            return json_response(503, waking_message(dep_id, name, why), named)
        current = self.routes.get(dep_id)
        if current is None:
            return json_response(404, f"deployment '{dep_id}' not found")
        now = current.predictor(name)
        if now is None or not now.available:
            return _unavailable(request, current, now)
        return current, now

    def _mirror(
        self,
        shadow: PredictorRoute,
        start_line: bytes,
        headers: bytes,
        body: bytes,
        response: web.StreamResponse,
        answer_id: str | None,
        request: web.BaseRequest,
    ) -> None:
        """Queue a copy of a prediction for the shadow, under the primary's request id."""
        if answer_id and _request_id(request) is None:
            # The shadow's answer then carries the same puid as the primary's.
            headers = headers[:-2] + b"Request-ID: " + answer_id.encode("ascii") + b"\r\n\r\n"
        primary = response.body if isinstance(response, web.Response) else None
        self.mirror.offer(
            Copy(
                shadow=shadow,
                start_line=start_line,
                headers=headers,
                body=body,
                primary_status=response.status,
                primary_answer=primary if isinstance(primary, bytes) else None,
            )
        )

    def _vouched(self, request: web.BaseRequest, dep_id: str) -> bool:
        """Whether the control plane vouches for the request's X-PrimeHub-User.

        The Jupyter server invokes private deployments for signed-in users (the sidebar's "try
        it") without a client token; it proves itself with a token derived from the admin token
        for this one deployment (`internal_token`), so a request addressed to any other
        deployment is not vouched for. A wrong token counts as no vouching at all, so the
        request falls back to HTTP Basic.
        """
        given = request.headers.get(INTERNAL_TOKEN, "").encode("utf-8", "replace")
        expected = internal_token(self._admin_token, dep_id).encode("ascii")
        return hmac.compare_digest(given, expected)

    async def _send(
        self,
        request: web.BaseRequest,
        route: Route,
        predictor: PredictorRoute,
        start_line: bytes,
        headers: bytes,
        body: bytes,
        feedback: bool,
    ) -> web.StreamResponse:
        now = self.pool.loop.time()
        candidates = predictor.candidates(now)
        if len(candidates) == 1 and not feedback:
            # A lone replica gets a second try: the first may have hit a pooled connection the
            # replica closed at the same moment.
            candidates.append(candidates[0])
        head_only = request.method == "HEAD"
        failures: list[str] = []
        index = 0
        while index < len(candidates):
            replica = candidates[index]
            index += 1
            connection: Connection | None = None
            try:
                connection = await self.pool.connect(
                    replica.url, replica.host, replica.port, replica.tls
                )
                await connection.exchange(
                    b"".join((start_line, replica.host_header, headers)), body, head_only
                )
            except ConnectFailed as exc:
                # The request never left: safe to send anywhere else, feedback included.
                replica.down_until = now + DOWN_FOR
                failures.append(f"{replica.name}: cannot connect ({exc})")
            except Disconnected as exc:
                # Closed before any response byte: the model may or may not have seen the
                # request. Predictions are safe to repeat; feedback would be counted twice.
                failures.append(f"{replica.name}: {exc}")
                if feedback:
                    break
            except ReadTimeout:
                _discard(connection)
                return json_response(
                    504, f"deployment '{route.id}': replica {replica.name} did not answer in time"
                )
            except UpstreamError as exc:
                failures.append(f"{replica.name}: {exc}")
                _discard(connection)
                break
            except BaseException:
                _discard(connection)  # the client went away (cancelled): never reuse it
                raise
            else:
                if not _bufferable(connection):
                    return await self._relay(request, route, predictor, replica, connection)
                try:
                    payload = await connection.read()
                except UpstreamError as exc:
                    # The client has seen nothing yet, so this is as safe to repeat as a
                    # disconnect before the first byte (a replica killed mid-answer), and as
                    # unsafe for feedback.
                    failures.append(f"{replica.name}: broke off its response ({exc})")
                    if feedback:
                        _discard(connection)
                        break
                except BaseException:
                    _discard(connection)  # the client went away (cancelled): never reuse it
                    raise
                else:
                    try:
                        return web.Response(
                            status=connection.status,
                            reason=connection.reason.decode("latin-1") or None,
                            headers=_response_headers(connection.headers),
                            body=payload,
                        )
                    finally:
                        connection.release()
            _discard(connection)
            if index == len(candidates):
                # During a rolling update the engine may have switched the table to new replicas
                # and stopped the old ones while this request was in flight: try the new ones
                # of the same predictor.
                current = self.routes.get(route.id)
                latest = current.predictor(predictor.name) if current is not None else None
                if current is not None and latest is not None and current is not route:
                    tried = {c.url for c in candidates}
                    candidates.extend(r for r in latest.candidates(now) if r.url not in tried)
                    route, predictor = current, latest
        return json_response(
            502, f"deployment '{route.id}': no replica could answer ({'; '.join(failures)})"
        )

    async def _relay(
        self,
        request: web.BaseRequest,
        route: Route,
        predictor: PredictorRoute,
        replica: Replica,
        upstream: Connection,
    ) -> web.StreamResponse:
        """Stream a large or chunked response through as it arrives."""
        try:
            headers = _response_headers(upstream.headers)
            headers.append((PREDICTOR_HEADER, predictor.name))
            reason = upstream.reason.decode("latin-1") or None
            return await self._stream(request, route, replica, upstream, headers, reason)
        finally:
            upstream.release()

    async def _stream(
        self,
        request: web.BaseRequest,
        route: Route,
        replica: Replica,
        upstream: Connection,
        headers: list[tuple[str, str]],
        reason: str | None,
    ) -> web.StreamResponse:
        stream = web.StreamResponse(status=upstream.status, reason=reason, headers=headers)
        if upstream.content_length is not None:
            stream.content_length = upstream.content_length
        await stream.prepare(request)
        try:
            async for chunk in upstream.iter_body():
                await stream.write(chunk)
        except ConnectionResetError:
            pass  # the client left; aiohttp closes its side
        except BrokenResponse as exc:
            # The status line is gone already: cut the client connection so it sees the
            # response is incomplete instead of a short but well-formed one.
            log.warning(
                "deployment %s: replica %s broke off a response: %s", route.id, replica.name, exc
            )
            if request.transport is not None:
                request.transport.close()
        return stream


def _unavailable(
    request: web.BaseRequest, route: Route, predictor: PredictorRoute | None
) -> web.Response:
    """503: no predictor of the deployment has a ready replica (naming the one chosen)."""
    headers = {"Retry-After": RETRY_AFTER}
    if predictor is not None:
        headers[PREDICTOR_HEADER] = predictor.name
        request["predictor"] = predictor.name
    return json_response(503, route.unavailable_reason(), headers)


def _usable_id(request_id: str) -> bool:
    """A request id as the model server takes it (so long ones cannot fill the id memory)."""
    return len(request_id) <= MAX_REQUEST_ID and VISIBLE_ASCII.fullmatch(request_id) is not None


def _request_id(request: web.BaseRequest) -> str | None:
    """The request id the client sent, as the model server reads it."""
    for name in REQUEST_ID_HEADERS:
        value = request.headers.get(name)
        if value:
            return value
    return None


def _bufferable(connection: Connection) -> bool:
    """Small, known-length answers are read whole before the client sees any byte."""
    length = connection.content_length
    return connection.complete or (length is not None and length <= BUFFERED_RESPONSE)


def _discard(connection: Connection | None) -> None:
    if connection is not None:
        connection.release()


def _upstream_headers(
    request: web.BaseRequest, route: Route, user: str | None, method: str, length: int
) -> bytes:
    """The request's header block after the Host line, as sent to the replica."""
    raw = request.raw_headers
    drop = DROP_REQUEST_RAW
    connection_values = [v for n, v in raw if n.lower() == b"connection"]
    if connection_values:
        drop = drop | _connection_tokens(connection_values)
    parts: list[bytes] = [b"\r\n"]
    forwarded_for: list[bytes] = []
    host = b""
    for name, value in raw:
        lowered = name.lower()
        if lowered in drop:
            if lowered == b"x-forwarded-for":
                forwarded_for.append(value)
            elif lowered == b"host":
                host = value
            continue
        parts += (name, b": ", value, b"\r\n")
    forwarded_for.append((request.remote or "").encode("ascii", "replace"))
    parts += (b"X-Forwarded-For: ", b", ".join(forwarded_for), b"\r\n")
    parts += (b"X-Forwarded-Proto: http\r\nX-Forwarded-Prefix: ", route.prefix_raw, b"\r\n")
    if host:
        parts += (b"X-Forwarded-Host: ", host, b"\r\n")
    if user is not None:
        parts += (b"X-Forwarded-User: ", user.encode("utf-8", "surrogateescape"), b"\r\n")
    if length or method in BODY_METHODS:
        parts += (b"Content-Length: ", str(length).encode("ascii"), b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def _response_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The replica's response headers minus hop-by-hop ones, for aiohttp."""
    drop = DROP_RESPONSE_RAW
    connection_values = [v for n, v in raw if n.lower() == b"connection"]
    if connection_values:
        drop = drop | _connection_tokens(connection_values)
    return [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in raw
        if name.lower() not in drop
    ] + _CORS_RAW
