"""Requests the gateway holds while a predictor at zero replicas wakes up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

# Defaults of --hold-queue and --hold-timeout: a replica of a small model starts in a few
# seconds; a queue this long absorbs a burst without letting a stuck wake pile up memory.
HOLD_QUEUE = 64
HOLD_TIMEOUT = 30.0
# Seconds a refused or timed-out held request is told to wait before retrying.
HOLD_RETRY_AFTER = "5"
# Longest long poll of GET /_primehub/holds.
MAX_POLL_WAIT = 30.0

Key = tuple[str, str]  # (deployment id, predictor name)


class HoldFull(Exception):
    """The predictor's hold queue is full; the request is refused at once."""


class Holds:
    """Bounded waiting rooms, one per predictor, emptied when the routes bring a replica.

    A held request waits for a routes update (never a poll of the table), then asks its
    `ready` callable whether its predictor has a replica now; so a replica added by the engine
    is seen by every waiting request the moment the table is in effect. The counts of held
    requests are what the engine's autoscaler reads to wake the predictor.
    """

    def __init__(self, limit: int = HOLD_QUEUE, max_wait: float = HOLD_TIMEOUT) -> None:
        self.limit = limit
        self.max_wait = max_wait
        self.counts: dict[Key, int] = {}
        # Bumped whenever a request starts waiting: a long poll returns when it moves.
        self.version = 0
        self.closed = False
        self._routes_changed = asyncio.Event()
        self._held_changed = asyncio.Event()

    async def wait(self, key: Key, ready: Callable[[], bool]) -> bool:
        """Hold a request until `ready()` holds after a routes update, at most `max_wait` s.

        True when a replica is there; False after the wait or when the gateway shuts down.
        Raises HoldFull (without waiting) when `limit` requests of this predictor already wait.
        """
        held = self.counts.get(key, 0)
        if held >= self.limit:
            raise HoldFull
        self.counts[key] = held + 1
        self.version += 1
        self._held_changed.set()
        self._held_changed = asyncio.Event()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        try:
            while not self.closed:
                # Taken before the check: an update after the check sets this very event.
                changed = self._routes_changed
                if ready():
                    return True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                try:
                    await asyncio.wait_for(changed.wait(), remaining)
                except asyncio.TimeoutError:
                    return ready()
            return False
        finally:
            left = self.counts[key] - 1
            if left:
                self.counts[key] = left
            else:
                del self.counts[key]

    def routes_changed(self) -> None:
        """A new routing table is in effect: every held request checks for its replica."""
        self._routes_changed.set()
        self._routes_changed = asyncio.Event()

    def close(self) -> None:
        """The gateway is shutting down: release every held request (they get 503)."""
        self.closed = True
        self.routes_changed()

    def report(self) -> dict[str, dict[str, int]]:
        """Held requests by deployment id and predictor name (waiting ones only)."""
        report: dict[str, dict[str, int]] = {}
        for (dep_id, predictor), count in self.counts.items():
            report.setdefault(dep_id, {})[predictor] = count
        return report

    async def poll(self, after: int, wait: float) -> None:
        """Return once a request started waiting after `version` was `after`, or after `wait` s."""
        if self.version != after:
            return
        changed = self._held_changed
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(changed.wait(), min(max(wait, 0.0), MAX_POLL_WAIT))


def waking_message(dep_id: str, predictor: str, why: str) -> str:
    """The 503 text of a held request that could not be answered."""
    return (
        f"deployment '{dep_id}': predictor '{predictor}' is waking up from zero replicas "
        f"({why}); retry in {HOLD_RETRY_AFTER} s"
    )
