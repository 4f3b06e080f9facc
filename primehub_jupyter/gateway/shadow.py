"""Mirroring predictions to a shadow predictor off the request's path, and comparing answers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import orjson

from .routes import PredictorRoute
from .upstream import ConnectFailed, Connection, UpstreamError, UpstreamPool

log = logging.getLogger("primehub_jupyter.gateway")

# Copies waiting for a worker; when full, new copies are dropped (and counted), never waited for.
SHADOW_QUEUE = 256
SHADOW_WORKERS = 4
# Shadow answers larger than this are not read for comparison (the copy still counts).
SHADOW_ANSWER_LIMIT = 1024 * 1024
# Top-level answer fields that differ between two models by design: Seldon's meta (puid, tags,
# requestPath) and V2's id, model name and version.
IGNORED_FIELDS = frozenset({"meta", "id", "model_name", "model_version"})
REL_TOLERANCE = 1e-6
ABS_TOLERANCE = 1e-9


@dataclass(slots=True)
class Copy:
    """One prediction to send to the shadow, with the primary's answer to compare with."""

    shadow: PredictorRoute
    start_line: bytes  # request line up to and including "Host: "
    headers: bytes  # the header block after the Host value, as sent to the primary
    body: bytes
    primary_status: int
    primary_answer: bytes | None  # None when the primary's answer was streamed (not compared)


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=REL_TOLERANCE, abs_tol=ABS_TOLERANCE)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def same_answer(primary: bytes, shadow: bytes) -> bool:
    """Whether two answers say the same: JSON-equal after parsing, numbers within a tolerance,
    per-model fields (IGNORED_FIELDS) left out; bytes-equal when either is not JSON."""
    try:
        first, second = orjson.loads(primary), orjson.loads(shadow)
    except orjson.JSONDecodeError:
        return primary == shadow
    if isinstance(first, dict) and isinstance(second, dict):
        first = {k: v for k, v in first.items() if k not in IGNORED_FIELDS}
        second = {k: v for k, v in second.items() if k not in IGNORED_FIELDS}
    try:
        return _close(first, second)
    except RecursionError:  # deeper than Python's stack: compare the text
        return primary == shadow


class ShadowMirror:
    """A bounded queue of copies and a few workers sending them to shadow predictors.

    `offer` never waits: the primary's answer goes out whatever the shadow does. A shadow's
    counters get a request (and an error when it fails or answers 5xx) for each copy sent, a
    comparison for each answer compared with the primary's, and its load a drop for each copy
    the full queue refused.
    """

    def __init__(
        self, pool: UpstreamPool, queue_size: int = SHADOW_QUEUE, workers: int = SHADOW_WORKERS
    ) -> None:
        self.pool = pool
        self.queue: asyncio.Queue[Copy] = asyncio.Queue(queue_size)
        self.worker_count = workers
        self._workers: list[asyncio.Task] = []

    def offer(self, copy: Copy) -> bool:
        """Queue a copy for the shadow; False (and counted) when the queue is full."""
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._work(), name=f"primehub-shadow-{i}")
                for i in range(self.worker_count)
            ]
        try:
            self.queue.put_nowait(copy)
        except asyncio.QueueFull:
            copy.shadow.load.shadow_dropped += 1
            return False
        return True

    async def close(self) -> None:
        """Stop the workers; copies still queued are not sent."""
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []

    async def _work(self) -> None:
        while True:
            copy = await self.queue.get()
            try:
                await self.send(copy)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad copy must not stop mirroring
                log.exception("shadow copy to %s failed", copy.shadow.name)

    async def send(self, copy: Copy) -> None:
        """Send one copy to a replica of the shadow, count it and compare the answers."""
        shadow = copy.shadow
        load = shadow.load
        started = load.begin()
        status = 0
        answer: bytes | None = None
        try:
            status, answer = await self._exchange(copy)
        finally:
            load.end()
            load.counters.observe(time.monotonic() - started, error=status == 0 or status >= 500)
        if status == 0 or status >= 500 or copy.primary_answer is None or answer is None:
            return
        load.counters.compared += 1
        if status != copy.primary_status or not same_answer(copy.primary_answer, answer):
            load.counters.differed += 1

    async def _exchange(self, copy: Copy) -> tuple[int, bytes | None]:
        """(status, answer) from the first shadow replica that takes the copy; (0, None)
        when none does."""
        for replica in copy.shadow.candidates(self.pool.loop.time()):
            connection: Connection | None = None
            try:
                connection = await self.pool.connect(
                    replica.url, replica.host, replica.port, replica.tls
                )
                await connection.exchange(
                    b"".join((copy.start_line, replica.host_header, copy.headers)),
                    copy.body,
                    False,
                )
                length = connection.content_length
                if length is not None and length > SHADOW_ANSWER_LIMIT:
                    return connection.status, None
                return connection.status, await connection.read()
            except ConnectFailed:
                continue  # never sent: another replica may take it
            except UpstreamError:
                return 0, None
            finally:
                if connection is not None:
                    connection.release()
        return 0, None
