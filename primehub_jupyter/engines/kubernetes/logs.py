"""Pod logs of a Kubernetes deployment: tail, merge by time, follow and download."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from ...core.errors import ServiceError
from ...core.models import utcnow
from . import resources
from .client import PODS, Kube, KubeError
from .crd import LABEL_ID
from .phases import pod_ready

_K8S_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z ")
_OUR_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


def log_line(line: str) -> str:
    """A pod log line with the API's timestamp (nanoseconds) cut to our format (milliseconds)."""
    match = _K8S_TIMESTAMP.match(line)
    if not match:
        return line
    fraction = (match.group(2) or "").ljust(3, "0")[:3]
    return f"{match.group(1)}.{fraction}Z {line[match.end() :]}"


def tag_line(replica: str, line: str) -> str:
    """`<time> [replica] text`, like the local engine's merged logs."""
    if _OUR_TIMESTAMP.match(line):
        return f"{line[:24]} [{replica}] {line[25:]}"
    return f"[{replica}] {line}"


class PodLogs:
    """The model containers' logs of a deployment's pods (the initializer's while loading).

    `error` turns an API error into the engine's error; `follow_poll_seconds` is how often a
    follow looks for new pods.
    """

    def __init__(
        self,
        kube: Kube,
        error: Callable[[KubeError], ServiceError],
        follow_poll_seconds: float,
    ) -> None:
        self.kube = kube
        self.error = error
        self.follow_poll_seconds = follow_poll_seconds

    async def pods(self, deployment_id: str) -> list[dict[str, Any]]:
        pods = await self.kube.list(PODS, labels=f"{LABEL_ID}={deployment_id}")
        return sorted(
            pods,
            key=lambda p: (
                bool(p["metadata"].get("deletionTimestamp")),
                not pod_ready(p),
                p["metadata"].get("creationTimestamp") or "",
                p["metadata"]["name"],
            ),
        )

    async def _pod_lines(self, pod: str, tail: int | None) -> list[str]:
        """The model container's log; the initializer's while the model has not started."""
        try:
            text = await self.kube.pod_log(pod, resources.MODEL_CONTAINER, tail=tail)
        except KubeError as error:
            if error.status != 400:
                raise self.error(error) from None
            try:
                text = await self.kube.pod_log(pod, resources.INITIALIZER_CONTAINER, tail=tail)
            except KubeError:
                return [f"{utcnow()} {error.message}"]
        return [log_line(line) for line in text.splitlines()]

    async def lines(self, deployment_id: str, replica: str | None, tail: int | None) -> list[str]:
        names = [replica] if replica else await self._current_pods(deployment_id)
        if len(names) == 1:
            return await self._pod_lines(names[0], tail)
        per_pod = await asyncio.gather(*(self._pod_lines(n, tail) for n in names))
        tagged: list[tuple[str, int, str]] = []
        for name, lines in zip(names, per_pod, strict=True):
            last = ""
            for i, line in enumerate(lines):
                last = line[:24] if _OUR_TIMESTAMP.match(line) else last
                tagged.append((last, i, tag_line(name, line)))
        tagged.sort(key=lambda item: (item[0], item[1]))
        merged = [t[2] for t in tagged]
        return merged if tail is None else merged[-tail:] if tail else []

    async def _current_pods(self, deployment_id: str) -> list[str]:
        pods = await self.pods(deployment_id)
        live = [p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")]
        return live or [p["metadata"]["name"] for p in pods[:1]]

    async def follow(self, deployment_id: str, replica: str | None) -> AsyncIterator[str]:
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(maxsize=10000)
        pumps: dict[str, asyncio.Task] = {}

        async def pump(pod: str) -> None:
            while True:
                try:
                    async for line in self.kube.follow_pod_log(pod, resources.MODEL_CONTAINER):
                        await queue.put((pod, log_line(line)))
                    return  # the pod is gone
                except KubeError as error:
                    if error.status != 400:  # 400: the container is not running yet
                        return
                await asyncio.sleep(self.follow_poll_seconds)

        try:
            next_scan = 0.0
            while True:
                if time.monotonic() >= next_scan:
                    names = [replica] if replica else await self._current_pods(deployment_id)
                    for name in names:
                        if name not in pumps:  # pod names are never reused
                            pumps[name] = asyncio.create_task(pump(name))
                    next_scan = time.monotonic() + self.follow_poll_seconds
                try:
                    pod, line = await asyncio.wait_for(queue.get(), self.follow_poll_seconds)
                except asyncio.TimeoutError:
                    continue
                several = replica is None and sum(not t.done() for t in pumps.values()) > 1
                yield tag_line(pod, line) if several else line
        finally:
            for task in pumps.values():
                task.cancel()
            await asyncio.gather(*pumps.values(), return_exceptions=True)

    async def download(self, deployment_id: str, replica: str | None) -> AsyncIterator[bytes]:
        names = (
            [replica]
            if replica
            else [p["metadata"]["name"] for p in await self.pods(deployment_id)]
        )
        for name in names:
            if len(names) > 1:
                yield f"===== replica {name} =====\n".encode()
            lines = await self._pod_lines(name, None)
            yield ("\n".join(lines) + ("\n" if lines else "")).encode()
