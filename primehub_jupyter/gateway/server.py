"""The local gateway process: command line, admin API, request dispatch and lifecycle."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from .access import Gatekeeper
from .auth import JWKS_REFRESH, ClientAuthenticator
from .hold import HOLD_QUEUE, HOLD_TIMEOUT, Holds
from .metrics import GatewayMetrics, request_kind
from .proxy import (
    CORS_HEADERS,
    CORS_PREFLIGHT,
    BodyIncomplete,
    BodyTooLarge,
    Proxy,
    json_response,
    read_body,
)
from .routes import RouteError, parse_routes

if TYPE_CHECKING:
    from .jwt_auth import BearerAuthenticator

log = logging.getLogger("primehub_jupyter.gateway")
access_log = logging.getLogger("primehub_jupyter.gateway.access")

DEPLOYMENT_PREFIX = "/deployment/"
ADMIN_PREFIX = "/_primehub/"
ADMIN_PATHS = frozenset(
    {
        "/_primehub/routes",
        "/_primehub/health",
        "/_primehub/metrics",
        "/_primehub/load",
        "/_primehub/holds",
    }
)
MAX_ROUTES_BODY = 16 * 1024 * 1024
# Seconds in-flight requests get to finish after SIGTERM before their connections are closed.
SHUTDOWN_GRACE = 10.0
RETRY_AFTER = "1"
# Percent-encoded '/', '\\' and NUL: a server behind us may decode them into separators.
ENCODED_SEPARATOR = re.compile(r"%(?:2f|5c|00)", re.IGNORECASE)
DOT_SEGMENT = re.compile(r"(?:\.|%2e){1,2}", re.IGNORECASE)
# The query of GET /_primehub/holds: the version last seen and seconds to wait for a newer one.
HOLDS_QUERY = re.compile(r"after=(-1|\d{1,18})&wait=(\d{1,2}(?:\.\d{1,3})?)")
UNSAFE_PATH = (
    "the path of a deployment request must not contain '.' or '..' segments (also "
    "percent-encoded), encoded '/' or '\\' (%2F, %5C), backslashes or NUL bytes"
)

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def unsafe_path(path: str) -> bool:
    """Whether a raw request path (no query) could address something outside its own prefix.

    Dot segments and encoded separators are refused rather than normalised, as they are never
    needed to reach a model: whatever a client, a proxy or a replica would make of them, no
    request may leave the deployment its path starts with.
    """
    if "%" not in path and "/." not in path and "\\" not in path and "\x00" not in path:
        return False  # the common case, without a regex
    if "\\" in path or "\x00" in path or ENCODED_SEPARATOR.search(path):
        return True
    return any(DOT_SEGMENT.fullmatch(segment) for segment in path.split("/"))


class Gateway:
    """The request handler of the gateway: admin endpoints plus the deployment proxy."""

    def __init__(self, admin_token: str, proxy: Proxy) -> None:
        self._admin = f"Bearer {admin_token}".encode()
        self.proxy = proxy
        self.metrics = GatewayMetrics(lambda: self.proxy.routes)
        # Until the engine's first table, "not found" would be a lie about every deployment.
        self.has_routes = False
        self.draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Dispatch one request; the hot path is a prefix check and two string partitions."""
        raw = request.raw_path
        if raw.startswith(DEPLOYMENT_PREFIX):
            if self.draining or not self.has_routes:
                return self._unavailable()
            path, sep, query = raw.partition("?")
            dep_id, _, tail = path[len(DEPLOYMENT_PREFIX) :].partition("/")
            target = f"/{tail}?{query}" if sep else f"/{tail}"
            started = time.perf_counter()
            status = 499  # the client went away before an answer (nginx's code)
            preflight = (
                request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
            )
            self._in_flight += 1
            self._idle.clear()
            try:
                response: web.StreamResponse
                if unsafe_path(path):
                    response = json_response(400, UNSAFE_PATH)
                elif preflight:
                    # A browser's CORS preflight carries no credentials: answered here, never
                    # forwarded, so a private endpoint's check still applies to the real request.
                    response = web.Response(status=204, headers=CORS_PREFLIGHT)
                else:
                    response = await self.proxy.forward(request, dep_id, target, path)
                if not response.prepared:  # the gateway's own answers (errors, 401) too
                    response.headers.update(CORS_HEADERS)
                status = response.status
                return response
            finally:
                self._in_flight -= 1
                if not self._in_flight:
                    self._idle.set()
                if dep_id in self.proxy.routes:  # unknown ids would grow the series unbounded
                    # A browser's preflight is no prediction, whatever its path.
                    kind = "other" if preflight else request_kind(path)
                    elapsed = time.perf_counter() - started
                    predictor = request.get("predictor", "")
                    self.metrics.observe(dep_id, status, kind, elapsed, predictor)
        if raw.startswith(ADMIN_PREFIX):
            return await self._admin_request(request)
        return json_response(404, "not found: deployments are served under /deployment/<id>/<path>")

    def _unavailable(self) -> web.Response:
        if self.draining:
            response = json_response(
                503, "the gateway is shutting down; retry shortly", {"Retry-After": RETRY_AFTER}
            )
            response.force_close()  # the client reconnects to whatever serves next
            return response
        return json_response(
            503,
            "the gateway has not received its routing table yet; retry shortly",
            {"Retry-After": RETRY_AFTER},
        )

    async def drain(self, grace: float) -> bool:
        """Answer new deployment requests 503 and wait (at most `grace` s) for in-flight ones.

        True when every in-flight request finished in time.
        """
        self.draining = True
        self.proxy.holds.close()  # held requests get 503 now rather than after their wait
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except asyncio.TimeoutError:
            return False
        return True

    async def handle_logged(self, request: web.BaseRequest) -> web.StreamResponse:
        """`handle` plus one access-log line (path without query: queries may carry secrets)."""
        started = time.perf_counter()
        status = 500
        try:
            response = await self.handle(request)
            status = response.status
            return response
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            user = request.get("user") or "-"
            access_log.info(
                "%s %s %d %.1fms user=%s",
                request.method,
                request.raw_path.partition("?")[0],  # raw: a decoded %0A could forge a line
                status,
                elapsed,
                user,
            )

    def _authorized(self, request: web.BaseRequest) -> bool:
        given = request.headers.get("Authorization", "").encode("utf-8", "replace")
        return hmac.compare_digest(given, self._admin)

    async def _admin_request(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path not in ADMIN_PATHS:
            return json_response(404, f"no admin endpoint {path}")
        if not self._authorized(request):
            return json_response(
                401,
                "admin endpoints need 'Authorization: Bearer <admin token>'",
                {"WWW-Authenticate": 'Bearer realm="primehub gateway admin"'},
            )
        if path == "/_primehub/metrics":
            return web.Response(
                body=self.metrics.render(), content_type="text/plain", charset="utf-8"
            )
        if path == "/_primehub/holds":
            return await self._holds(request)
        if path == "/_primehub/load":
            if request.method not in ("GET", "HEAD"):
                return json_response(405, "use GET /_primehub/load", {"Allow": "GET, HEAD"})
            return web.Response(body=orjson.dumps(self.load()), content_type="application/json")
        if path == "/_primehub/health":
            if request.method not in ("GET", "HEAD"):
                return json_response(405, "use GET /_primehub/health", {"Allow": "GET, HEAD"})
            return self._ok()
        if request.method != "PUT":
            return json_response(405, "use PUT /_primehub/routes", {"Allow": "PUT"})
        return await self._put_routes(request)

    async def _holds(self, request: web.BaseRequest) -> web.Response:
        """Held requests per predictor; a long poll: `?after=V&wait=S` returns early when a
        request starts waiting after version V (the engine wakes the predictor at once)."""
        if request.method != "GET":
            return json_response(405, "use GET /_primehub/holds", {"Allow": "GET"})
        query = request.query_string
        if query:
            match = HOLDS_QUERY.fullmatch(query)
            if match is None:
                return json_response(400, "query must be ?after=<version>&wait=<seconds>")
            await self.proxy.holds.poll(int(match[1]), float(match[2]))
        holds = self.proxy.holds
        body = orjson.dumps({"version": holds.version, "held": holds.report()})
        return web.Response(body=body, content_type="application/json")

    def load(self) -> dict[str, Any]:
        """Per deployment, per predictor (spec order): in flight, age of the last request in
        seconds, held requests, dropped shadow copies and counters (PredictorCounters JSON)."""
        now = time.monotonic()
        held = self.proxy.holds.counts
        return {
            "deployments": {
                dep_id: {
                    "predictors": {
                        p.name: {
                            "traffic": p.traffic,
                            "shadow": p.shadow,
                            "replicas": len(p.replicas),
                            # Requests waiting for it to wake (gateway/hold.py).
                            "held": held.get((dep_id, p.name), 0),
                            **p.load.to_json(p.name, p.shadow, now),
                        }
                        for p in route.predictors
                    }
                }
                for dep_id, route in self.proxy.routes.items()
            }
        }

    def _ok(self) -> web.Response:
        body = orjson.dumps({"ok": True, "deployments": len(self.proxy.routes)})
        return web.Response(body=body, content_type="application/json")

    async def _put_routes(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            raw = await read_body(request, MAX_ROUTES_BODY)
        except BodyTooLarge:
            return json_response(413, "routing table larger than 16 MiB")
        except BodyIncomplete:
            return json_response(400, "the routing table ended before its Content-Length")
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return json_response(400, f"body is not valid JSON: {exc}")
        try:
            routes, rejected = parse_routes(document)
        except RouteError as exc:
            return json_response(400, f"invalid routing table: {exc}")
        # Synchronous, so no request sees half a table and two PUTs cannot interleave.
        self.proxy.replace_routes(routes, rejected)
        self.has_routes = True
        self.proxy.holds.routes_changed()  # held requests look for their new replica now
        self.metrics.forget(routes)
        log.info(
            "routes updated: %d deployment(s): %s",
            len(routes),
            ", ".join(f"{r.id}[{len(r.replicas)}]" for r in routes.values()) or "-",
        )
        for dep_id, reason in rejected.items():
            # %r: the id and reason may hold control characters that would forge log lines.
            log.warning("routing entry of %r refused: %r", dep_id, reason)
        body = {"ok": True, "deployments": len(routes), "rejected": rejected}
        return web.Response(body=orjson.dumps(body), content_type="application/json")


class _UtcFormatter(logging.Formatter):
    """`2026-11-22T13:53:00.123Z text`, every line of a multi-line record prefixed."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        prefix = f"{stamp}.{int(record.msecs):03d}Z "
        if record.levelno != logging.INFO:
            prefix += f"{record.levelname} "
        text = super().format(record)
        return "\n".join(prefix + line for line in text.splitlines() or [""])


def configure_logging(log_file: str | None, access: bool) -> None:
    """Send the gateway's (and aiohttp's) logs to `log_file`, appending, or to stderr."""
    handler: logging.Handler
    if log_file:
        handler = logging.FileHandler(log_file, mode="a", encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_UtcFormatter("%(message)s"))
    for name in ("primehub_jupyter.gateway", "aiohttp", "asyncio"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.INFO if name == "primehub_jupyter.gateway" else logging.WARNING)
    # aiohttp's own access logger is off; ours runs only with --access-log.
    logging.getLogger("aiohttp.access").setLevel(logging.CRITICAL)
    access_log.setLevel(logging.INFO if access else logging.CRITICAL)
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").addHandler(handler)


def read_admin_token(path: str) -> str:
    """The admin token from its file (first line, surrounding whitespace removed)."""
    text = Path(path).read_text(encoding="utf-8").strip()
    token = text.splitlines()[0].strip() if text else ""
    if not token:
        raise ValueError(f"admin token file {path} is empty")
    return token


def write_port_file(path: str, port: int) -> None:
    """Write the bound port atomically, so a reader never sees a partial number."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{port}\n", encoding="ascii")
    os.replace(tmp, target)


async def serve(args: argparse.Namespace, admin_token: str) -> None:
    """Run the gateway until SIGTERM or SIGINT, then drain in-flight requests and exit."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    access = Gatekeeper(ClientAuthenticator())
    if args.jwt_config:
        try:
            access.bearer = bearer_authenticator(args.jwt_config, access.basic, args.jwks_refresh)
        except (OSError, ValueError) as exc:  # the engine wrote it: a bug or a damaged file
            log.error("cannot read the bearer JWT settings %s: %s", args.jwt_config, exc)
            raise SystemExit(2) from None
    proxy = Proxy(admin_token, Holds(args.hold_queue, args.hold_timeout), access)
    gateway = Gateway(admin_token, proxy)
    handler: Handler = gateway.handle_logged if args.access_log else gateway.handle
    server = web.Server(
        handler,
        # Stop work for clients that went away instead of finishing it for no one.
        handler_cancellation=True,
        access_log=None,
        # Bodies go to the replica as sent, Content-Encoding and all: decompressing here while
        # forwarding the header would hand the replica plain bytes labelled gzip.
        auto_decompress=False,
    )
    # The drain above already waited; what is left is cancelled after a short moment.
    runner = web.ServerRunner(server, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, backlog=1024, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", args.host, args.port, exc)
        await runner.cleanup()
        await proxy.close()
        raise SystemExit(1) from None
    port = _bound_port(runner, args.port)
    if args.port_file:
        write_port_file(args.port_file, port)
    log.info(
        "gateway listening on http://%s:%d (pid %d, access log %s, %s)",
        args.host,
        port,
        os.getpid(),
        "on" if args.access_log else "off",
        type(loop).__module__.split(".")[0],
    )
    try:
        await stop.wait()
        # Like nginx's graceful stop: close the listening socket first (new connections are
        # refused, so clients go elsewhere at once), answer requests on open connections with
        # 503 + Retry-After, and let the ones in flight finish.
        log.info("gateway draining (at most %g s)", args.shutdown_grace)
        await site.stop()
        if not await gateway.drain(args.shutdown_grace):
            log.warning("requests still in flight after %g s; closing them", args.shutdown_grace)
    finally:
        log.info("gateway shutting down")
        await runner.cleanup()
        await proxy.close()
        if args.port_file:
            _remove_port_file(args.port_file, port)
        log.info("gateway stopped")


def bearer_authenticator(
    path: str, basic: ClientAuthenticator, refresh: float
) -> BearerAuthenticator:
    """The bearer JWT check configured by the settings file at `path`; its keys load meanwhile.

    Imported here so a gateway without bearer tokens never loads PyJWT and pydantic.
    """
    from .jwt_auth import BearerAuthenticator, read_settings

    settings = read_settings(path)
    bearer = BearerAuthenticator(settings, basic.limiter, refresh)
    bearer.start()
    log.info(
        "bearer JWTs from issuer %s (audience %s, keys %s)",
        settings.issuer,
        settings.audience,
        bearer.keys.source,
    )
    return bearer


def _bound_port(runner: web.BaseRunner, requested: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return requested


def _remove_port_file(path: str, port: int) -> None:
    # Only our own port: a gateway started after us may already have written its own.
    with contextlib.suppress(OSError):
        if Path(path).read_text(encoding="ascii").strip() == str(port):
            os.unlink(path)


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m primehub_jupyter.gateway`."""
    parser = argparse.ArgumentParser(
        prog="python -m primehub_jupyter.gateway",
        description="Route /deployment/<id>/ traffic to local model-server replicas.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="port to bind; 0 picks a free one")
    parser.add_argument(
        "--admin-token-file",
        required=True,
        help="file holding the bearer token of the /_primehub/ admin API",
    )
    parser.add_argument("--port-file", help="write the bound port here (atomically) once listening")
    parser.add_argument("--log-file", help="append timestamped log lines here (default stderr)")
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=SHUTDOWN_GRACE,
        help=f"seconds in-flight requests get to finish after SIGTERM (default {SHUTDOWN_GRACE:g})",
    )
    parser.add_argument(
        "--hold-queue",
        type=int,
        default=HOLD_QUEUE,
        help="requests held per predictor while it wakes from zero replicas; more get 503 "
        f"(default {HOLD_QUEUE})",
    )
    parser.add_argument(
        "--hold-timeout",
        type=float,
        default=HOLD_TIMEOUT,
        help="seconds a held request waits for a replica before it gets 503 "
        f"(default {HOLD_TIMEOUT:g})",
    )
    parser.add_argument(
        "--jwt-config",
        help="JSON file of the bearer JWT settings (core.access.JwtSettings: issuer, audience, "
        "jwks URL or path, ...); without it private deployments take HTTP Basic only",
    )
    parser.add_argument(
        "--jwks-refresh",
        type=float,
        default=JWKS_REFRESH,
        help="fetch the issuer's key set at most once per this many seconds, e.g. when tokens "
        f"name an unknown kid (default {JWKS_REFRESH:g})",
    )
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="log one line per request (default off)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse arguments, read the admin token, serve until told to stop."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_file, args.access_log)
    try:
        admin_token = read_admin_token(args.admin_token_file)
    except (OSError, ValueError) as exc:
        log.error("cannot read the admin token: %s", exc)
        print(f"error: cannot read the admin token: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:  # e.g. Windows: the default loop works, only slower
        asyncio.run(serve(args, admin_token))
    else:
        uvloop.run(serve(args, admin_token))
    return 0
