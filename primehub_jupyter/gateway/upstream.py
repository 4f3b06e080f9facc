"""A lean HTTP/1.1 client for replicas: pooled keep-alive connections parsed with httptools.

aiohttp's ClientSession cost the gateway about two thirds of its CPU per proxied request (see
bench/README.md); this client does only what a reverse proxy to a local replica needs: one write
per request, one C parser per connection, no cookies, redirects, tracing or per-request timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator

import httptools

# A streamed response body stops being read from the replica above this much buffered data, so a
# slow client cannot make the gateway hold a large response in memory.
PAUSE_ABOVE = 1024 * 1024


class UpstreamError(Exception):
    """A replica could not be used; subclasses tell whether a retry is safe."""


class ConnectFailed(UpstreamError):
    """No connection: the request never left the gateway."""


class Disconnected(UpstreamError):
    """The connection closed or reset before any response byte arrived."""


class BrokenResponse(UpstreamError):
    """The replica started answering and then failed (bad HTTP, closed mid-response)."""


class ReadTimeout(UpstreamError):
    """The replica sent nothing for longer than the read timeout."""


class Connection(asyncio.Protocol):
    """One keep-alive connection to a replica and the state of the exchange running on it."""

    def __init__(self, pool: UpstreamPool, key: str) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.last_active = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.length_known = False
        self.content_length: int | None = None
        self.head_only = False
        self.in_flight = False
        self.received = False
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.paused = False
        self.error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None

    # --- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.in_flight:
            # Bytes nobody asked for: the connection is out of step, never reuse it.
            self.abort()
            return
        self.received = True
        self.last_active = self.pool.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail(BrokenResponse(f"invalid HTTP response: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if not self.in_flight or self.complete:
            return
        if self.headers_done and not self.length_known and exc is None:
            self._finish()  # a body delimited by the end of the connection
        elif not self.received:
            reason = "connection reset" if exc else "server disconnected"
            self.fail(Disconnected(reason))
        else:
            self.fail(BrokenResponse("connection closed in the middle of the response"))

    # --- httptools callbacks ----------------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length":
            self.length_known = True
            self.content_length = int(value)  # llhttp has rejected anything but digits
        elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
            self.length_known = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            # An interim answer (e.g. 103 Early Hints): the real one follows.
            self.headers = []
            self.reason = b""
            self.length_known = False
            self.content_length = None
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True
        if status in (204, 304):
            self.length_known = True
        if self.head_only:
            # httptools cannot be told a HEAD answer has no body; finish here and never reuse.
            self.keep_alive = False
            self._finish()
        else:
            self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > PAUSE_ABOVE and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.headers_done and not self.complete:
            self._finish()

    # --- exchange ---------------------------------------------------------------------------------

    def _finish(self) -> None:
        self.complete = True
        self._wake()

    def fail(self, error: UpstreamError) -> None:
        """End the running exchange with `error` (the first error wins)."""
        if self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self) -> None:
        waiter = self.pool.loop.create_future()
        self._waiter = waiter
        await waiter

    def abort(self) -> None:
        """Close at once, dropping anything unsent; the connection is never reused."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def exchange(self, request: bytes, body: bytes, head_only: bool) -> None:
        """Send one request and wait for the response headers; raises UpstreamError."""
        self.in_flight = True
        self.head_only = head_only
        self.last_active = self.pool.loop.time()
        assert self.transport is not None
        if body and len(body) > 65536:
            self.transport.writelines((request, body))  # no copy of a large body
        else:
            self.transport.write(request + body if body else request)
        while not self.headers_done and self.error is None:
            await self._wait()
        if self.error is not None:
            raise self.error

    async def read(self) -> bytes:
        """The whole response body."""
        while not self.complete and self.error is None:
            await self._wait()
        if self.error is not None:
            raise self.error
        chunks = self.chunks
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def iter_body(self) -> AsyncIterator[bytes]:
        """The response body piece by piece, reading from the replica only as fast as consumed."""
        while True:
            if self.chunks:
                chunks, self.chunks, self.buffered = self.chunks, [], 0
                if self.paused and self.transport is not None and not self.closed:
                    self.paused = False
                    self.transport.resume_reading()
                yield b"".join(chunks)
            elif self.error is not None:
                raise self.error
            elif self.complete:
                return
            else:
                await self._wait()

    def release(self) -> None:
        """Return the connection to the pool when it can carry another request, else close it."""
        reusable = self.complete and self.keep_alive and not self.paused
        if reusable and not self.closed and self.error is None:
            self._reset()
            self.pool.put_idle(self)
        else:
            self.abort()
            self.pool.forget(self)


class UpstreamPool:
    """Keep-alive connections per replica, with idle expiry and a read timeout sweep."""

    def __init__(
        self,
        connect_timeout: float,
        read_timeout: float,
        idle_timeout: float,
        max_idle_per_replica: int = 256,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle_per_replica
        self._idle: dict[str, list[Connection]] = {}
        self._busy: set[Connection] = set()
        self._tls = ssl.create_default_context()
        self._sweeper = self.loop.create_task(self._sweep())

    async def connect(self, key: str, host: str, port: int, tls: bool) -> Connection:
        """An idle connection to the replica `key`, or a new one; raises ConnectFailed."""
        idle = self._idle.get(key)
        if idle:
            # Past the idle timeout the replica may be closing it right now: not worth the race.
            fresh_since = self.loop.time() - self.idle_timeout
            while idle:
                connection = idle.pop()
                transport = connection.transport
                if connection.closed or transport is None or transport.is_closing():
                    continue
                if connection.last_active < fresh_since:
                    connection.abort()
                    continue
                self._busy.add(connection)
                return connection
        try:
            _, protocol = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: Connection(self, key),
                    host,
                    port,
                    ssl=self._tls if tls else None,
                    server_hostname=host if tls else None,
                ),
                self.connect_timeout,
            )
        except asyncio.TimeoutError:
            raise ConnectFailed("connect timed out") from None
        except OSError as exc:
            raise ConnectFailed((exc.strerror or type(exc).__name__).lower()) from None
        self._busy.add(protocol)
        return protocol

    def put_idle(self, connection: Connection) -> None:
        """Keep a finished connection for the next request to the same replica."""
        self._busy.discard(connection)
        idle = self._idle.setdefault(connection.key, [])
        if len(idle) >= self.max_idle:
            connection.abort()
            return
        idle.append(connection)

    def forget(self, connection: Connection) -> None:
        """Drop a closed connection from the pool's bookkeeping."""
        self._busy.discard(connection)
        idle = self._idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)

    async def _sweep(self) -> None:
        # One timer for all connections instead of one per request.
        while True:
            await asyncio.sleep(1.0)
            now = self.loop.time()
            for key, idle in list(self._idle.items()):
                stale = [c for c in idle if now - c.last_active > self.idle_timeout]
                for connection in stale:
                    idle.remove(connection)
                    connection.abort()
                if not idle:
                    del self._idle[key]
            for connection in list(self._busy):
                if connection.in_flight and now - connection.last_active > self.read_timeout:
                    connection.fail(ReadTimeout("no data from the replica"))
                    connection.abort()

    async def close(self) -> None:
        """Close every connection and stop the sweeper."""
        self._sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sweeper
        for idle in self._idle.values():
            for connection in idle:
                connection.abort()
        for connection in self._busy:
            connection.abort()
        self._idle.clear()
        self._busy.clear()
