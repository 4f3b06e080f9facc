"""ChangeFeed: one shared poll of the engine, broadcast as per-user change events."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import PrimeHubConfig

log = logging.getLogger(__name__)

# What of a deployment counts as a change worth telling (spec, phase, message, replicas...).
STATUS_FIELDS = ("phase", "message", "replicas", "availableReplicas", "updatedReplicas", "endpoint")


def deployment_fingerprint(summary: dict[str, Any]) -> str:
    """A string that changes when the deployment's spec or its visible status changes."""
    status = summary.get("status") or {}
    return json.dumps(
        {"spec": summary.get("spec"), "status": {k: status.get(k) for k in STATUS_FIELDS}},
        sort_keys=True,
        default=str,
    )


def group_fingerprints(config: PrimeHubConfig) -> dict[str, str]:
    """Each group's settings (enabled, members, quota, instance types) as a comparable string."""
    return {g.name: g.model_dump_json() for g in config.groups}


@dataclass
class Event:
    """One change: `kind` is deployment or groups; `groups` says who may see it."""

    kind: str
    data: dict[str, Any]
    groups: frozenset[str]
    id: int = 0
    members: frozenset[str] = frozenset()


class Subscription:
    """One client's bounded queue of events; a client that falls behind is dropped."""

    def __init__(self, feed: ChangeFeed, user: str, maxsize: int) -> None:
        self.feed = feed
        self.user = user
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.dropped = False
        self.on_drop: Callable[[], Any] | None = None

    def offer(self, event: Event) -> None:
        """Queue an event, or drop the subscription when its queue is full."""
        if self.dropped:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped = True
            log.info("events: dropping a subscriber of %s that does not keep up", self.user)
            self.feed.unsubscribe(self)
            if self.on_drop is not None:
                with contextlib.suppress(Exception):
                    self.on_drop()

    async def next(self, timeout: float) -> Event | None:
        """The next event, or None after `timeout` seconds without one."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    def close(self) -> None:
        self.feed.unsubscribe(self)


@dataclass
class _State:
    deployments: dict[str, tuple[str, str, str]] = field(
        default_factory=dict
    )  # group, print, phase
    groups: dict[str, str] = field(default_factory=dict)
    members: dict[str, frozenset[str]] = field(default_factory=dict)


class ChangeFeed:
    """Polls `engine.list_deployments()` (and the group settings) while anyone listens.

    One poll serves every subscriber: the engine is asked about twice a second however many
    views are open, and not at all when none is. Each change goes to the subscribers whose
    groups may see it.
    """

    def __init__(self, service: Any, *, interval: float = 0.5, queue_size: int = 256) -> None:
        self.service = service
        self.interval = interval
        self.queue_size = queue_size
        self.subscribers: set[Subscription] = set()
        self._state: _State | None = None
        self._task: asyncio.Task | None = None
        self._ready: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._ids = itertools.count(1)
        self.polls = 0

    async def subscribe(self, user: str) -> Subscription:
        """A new subscription; returns once the feed holds a baseline to tell changes from."""
        subscription = Subscription(self, user, self.queue_size)
        self.subscribers.add(subscription)
        if self._task is None or self._task.done():
            self._ready = asyncio.Event()
            self._wake = asyncio.Event()
            self._task = asyncio.ensure_future(self._run())
        assert self._ready is not None
        await self._ready.wait()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscribers.discard(subscription)
        if not self.subscribers and self._wake is not None:
            self._wake.set()  # let the poll loop notice at once that nobody listens

    async def _snapshot(self) -> _State:
        deployments = await self.service.engine.list_deployments()
        state = _State()
        for d in deployments:
            summary = d.summary_json()
            printed = deployment_fingerprint(summary)
            state.deployments[d.id] = (d.spec.group_name, printed, summary["status"]["phase"])
        config = self.service.config()
        state.groups = group_fingerprints(config)
        state.members = {g.name: frozenset(g.members) for g in config.groups}
        return state

    async def _run(self) -> None:
        assert self._ready is not None and self._wake is not None
        try:
            while self.subscribers:
                try:
                    state = await self._snapshot()
                except Exception:  # an engine hiccup must not end every stream
                    log.exception("events: listing deployments failed; trying again")
                    state = None
                self.polls += 1
                if state is not None:
                    if self._state is not None:
                        await self._broadcast(self._diff(self._state, state))
                    self._state = state
                    self._ready.set()
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
        finally:
            # With nobody listening the baseline goes stale: the next subscriber takes a new one.
            self._state = None
            self._ready.set()

    def _diff(self, old: _State, new: _State) -> list[Event]:
        events = []
        for deployment_id, (group, printed, phase) in new.deployments.items():
            before = old.deployments.get(deployment_id)
            if before is None or before[1] != printed:
                action = "created" if before is None else "changed"
                data = {"action": action, "id": deployment_id, "group": group, "phase": phase}
                events.append(Event("deployment", data, frozenset({group})))
        for deployment_id, (group, _, _) in old.deployments.items():
            if deployment_id not in new.deployments:
                data = {"action": "deleted", "id": deployment_id, "group": group}
                events.append(Event("deployment", data, frozenset({group})))
        changed = sorted(
            name
            for name in set(old.groups) | set(new.groups)
            if old.groups.get(name) != new.groups.get(name)
        )
        if changed:
            # Members before or after the change hear of it (a removed member must reload too).
            members = frozenset().union(
                *(
                    old.members.get(n, frozenset()) | new.members.get(n, frozenset())
                    for n in changed
                )
            )
            events.append(Event("groups", {"groups": changed}, frozenset(changed), members=members))
        return events

    async def _broadcast(self, events: list[Event]) -> None:
        if not events:
            return
        config = self.service.config()
        for event in events:
            event.id = next(self._ids)
        for subscription in list(self.subscribers):
            visible = {g.name for g in config.user_groups(subscription.user)}
            for event in events:
                if event.groups & visible or subscription.user in event.members:
                    subscription.offer(event)

    async def close(self) -> None:
        """Drop every subscriber and stop polling."""
        for subscription in list(self.subscribers):
            self.unsubscribe(subscription)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


_feeds: weakref.WeakKeyDictionary[Any, ChangeFeed] = weakref.WeakKeyDictionary()


def feed_of(service: Any) -> ChangeFeed:
    """The one ChangeFeed of a DeploymentService (made on first use)."""
    feed = _feeds.get(service)
    if feed is None:
        feed = _feeds[service] = ChangeFeed(service)
    return feed
