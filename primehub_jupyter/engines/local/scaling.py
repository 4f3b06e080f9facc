"""The local engine's scale loop: gateway load in, autoscaler decisions, reconciler woken."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp

from .autoscaler import Autoscaler, Bounds, Sample
from .gateway_process import GatewayProcess
from .replica import DeploymentState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Load:
    """One predictor's load as the gateway reports it."""

    in_flight: int = 0
    requests: int | None = None


def parse_load(document: Any) -> dict[tuple[str, str], Load]:
    """In-flight requests and request counters by (deployment, predictor) from GET /_primehub/load.

    Tolerant: a field missing or of the wrong type reads as no load (the gateway may be older).
    """
    loads: dict[tuple[str, str], Load] = {}
    deployments = document.get("deployments") if isinstance(document, dict) else None
    if not isinstance(deployments, dict):
        return loads
    for dep_id, entry in deployments.items():
        predictors = entry.get("predictors") if isinstance(entry, dict) else None
        if not isinstance(predictors, dict):
            continue
        for name, raw in predictors.items():
            if not isinstance(raw, dict):
                continue
            in_flight = raw.get("inFlight")
            counters = raw.get("counters")
            requests = counters.get("requests") if isinstance(counters, dict) else None
            dropped = raw.get("shadowDropped")
            if isinstance(requests, int) and isinstance(dropped, int):
                # A shadow's copies dropped while it was at zero count as requests: they wake it.
                requests += dropped
            loads[(dep_id, name)] = Load(
                in_flight=in_flight if isinstance(in_flight, int) else 0,
                requests=requests if isinstance(requests, int) else None,
            )
    return loads


def parse_held(document: Any) -> tuple[int, dict[tuple[str, str], int]]:
    """The version and the held requests by (deployment, predictor) from GET /_primehub/holds."""
    if not isinstance(document, dict):
        return -1, {}
    version = document.get("version")
    held: dict[tuple[str, str], int] = {}
    raw = document.get("held")
    if isinstance(raw, dict):
        for dep_id, predictors in raw.items():
            if isinstance(predictors, dict):
                for name, count in predictors.items():
                    if isinstance(count, int) and count > 0:
                        held[(dep_id, name)] = count
    return (version if isinstance(version, int) else -1), held


class ScaleLoop:
    """Feeds the autoscaler from the gateway and kicks the reconciler when a count changes.

    Every `interval` seconds it reads the gateway's held requests and load; a long poll on the
    held requests returns early when a request starts waiting, so a predictor at zero starts
    its replica at once rather than at the next interval.
    """

    def __init__(
        self,
        *,
        gateway: GatewayProcess,
        autoscaler: Autoscaler,
        deployments: Callable[[], Iterable[DeploymentState]],
        kick: Callable[[], None],
        interval: float = 1.0,
    ) -> None:
        self.gateway = gateway
        self.autoscaler = autoscaler
        self.deployments = deployments
        self.kick = kick
        self.interval = interval
        self.held: dict[tuple[str, str], int] = {}
        self._version = -1
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Run in the background until `stop()`."""
        self._task = asyncio.create_task(self._run(), name="primehub-scale-loop")

    async def stop(self) -> None:
        """End the loop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.step(wait=self.interval)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug or a gateway restart must not end autoscaling
                log.exception("PrimeHub scale loop step failed")
            # A burst of newly held requests returns the poll at once: at most 20 steps a second.
            await asyncio.sleep(max(0.0, 0.05 - (time.monotonic() - started)))

    async def step(self, wait: float = 0.0) -> bool:
        """Read the gateway (waiting up to `wait` s for a newly held request) and decide.

        True when some predictor's replica count changed (the reconciler was kicked).
        """
        if self.gateway.port is None:
            await asyncio.sleep(wait)
            return False
        holds = await self._get(f"/_primehub/holds?after={self._version}&wait={wait:.3f}", wait)
        if holds is None:
            await asyncio.sleep(wait)  # the gateway is restarting; the reconciler handles it
            return False
        self._version, self.held = parse_held(holds)
        load = parse_load({"deployments": await self.gateway.load()})
        changed = self.observe(load, self.held, time.monotonic())
        if changed:
            self.kick()
        return changed

    def observe(
        self, load: dict[tuple[str, str], Load], held: dict[tuple[str, str], int], now: float
    ) -> bool:
        """Give each autoscaled predictor its sample; True when a replica count changed."""
        changed = False
        keep: set[tuple[str, str]] = set()
        for state in self.deployments():
            if state.deleted or state.quarantined or state.deployment.spec.stop:
                continue
            for predictor in state.deployment.spec.predictors:
                if not predictor.autoscaled:
                    continue
                key = (state.id, predictor.name)
                keep.add(key)
                scaler = self.autoscaler.scaler(key, Bounds.of(predictor), now)
                before = scaler.replicas
                seen = load.get(key, Load())
                sample = Sample(seen.in_flight, held.get(key, 0), seen.requests)
                if scaler.observe(now, sample) != before:
                    log.info(
                        "deployment %s: predictor %s scales from %d to %d replicas",
                        state.id,
                        predictor.name,
                        before,
                        scaler.replicas,
                    )
                    changed = True
        self.autoscaler.forget(keep)
        return changed

    async def _get(self, path: str, wait: float) -> Any:
        try:
            async with self.gateway.prober.session().get(
                f"{self.gateway.url}{path}",
                headers=self.gateway.internal_admin_headers(),
                timeout=aiohttp.ClientTimeout(total=wait + 5.0),
            ) as response:
                if response.status != 200:
                    return None
                return await response.json()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
            return None
