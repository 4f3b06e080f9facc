"""The local engine's autoscaling policy: load samples in, a replica count per predictor out."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from ...core.models import Predictor, PredictorPhase


@dataclass(frozen=True)
class ScaleSettings:
    """How fast the autoscaler reacts; the engine's settings (tests shorten the windows)."""

    # Seconds of samples averaged into the observed concurrency: short, so a load step shows
    # within a few seconds, yet one sample's spike alone does not double the replicas.
    concurrency_window: float = 2.0
    # Seconds the desire must stay lower before replicas are removed (Kubernetes' HPA calls
    # this the scale-down stabilization window): a lull between bursts does not stop replicas
    # that the next burst would have to start again.
    stable_window: float = 45.0


@dataclass(frozen=True)
class Bounds:
    """What one predictor allows: its replica range, its target and its idle period."""

    lowest: int
    highest: int
    target: int = 8  # in-flight requests per replica
    idle_seconds: float | None = None  # None: never to zero

    @classmethod
    def of(cls, predictor: Predictor) -> Bounds:
        """The bounds a predictor's spec sets (a fixed count is lowest == highest)."""
        idle = predictor.idle_seconds
        return cls(
            lowest=predictor.lowest,
            highest=predictor.highest,
            target=predictor.concurrency_target,
            idle_seconds=float(idle) if idle is not None else None,
        )


@dataclass(frozen=True)
class Sample:
    """One reading of a predictor's load at the gateway.

    `in_flight` counts requests being answered, `held` requests waiting for a first replica,
    and `requests` is a counter of requests ever answered (any change means activity since the
    last sample, even when every request was too short to be seen in flight).
    """

    in_flight: int = 0
    held: int = 0
    requests: int | None = None


@dataclass
class PredictorScaler:
    """The autoscaling state of one predictor: recent samples and the replica count it wants.

    Pure: the caller passes the time (monotonic seconds) with every call, so tests drive it
    through hours of load in microseconds.
    """

    bounds: Bounds
    settings: ScaleSettings
    replicas: int
    last_active: float
    # Set when the count leaves zero; the engine clears it once a replica is ready (WakingUp).
    woke: bool = False
    held: int = 0  # requests the gateway held for it at the last sample
    _load: deque[tuple[float, int]] = field(default_factory=deque)  # (time, concurrency)
    _wants: deque[tuple[float, int]] = field(default_factory=deque)  # (time, replicas wanted)
    _requests: int | None = None

    @classmethod
    def start(cls, bounds: Bounds, settings: ScaleSettings, now: float) -> PredictorScaler:
        """A predictor just deployed: one replica at least, so the model is seen to load."""
        replicas = max(bounds.lowest, 1)
        scaler = cls(bounds=bounds, settings=settings, replicas=replicas, last_active=now)
        scaler._wants.append((now, replicas))
        return scaler

    @property
    def at_zero(self) -> bool:
        """Whether the policy has scaled this predictor to zero replicas."""
        return self.replicas == 0

    def rebound(self, bounds: Bounds) -> None:
        """Take new bounds (a spec update); the count moves into them at once."""
        self.bounds = bounds
        floor = bounds.lowest if self.at_zero else max(bounds.lowest, 1)
        self.replicas = min(max(self.replicas, floor), bounds.highest)

    def observe(self, now: float, sample: Sample) -> int:
        """Record a sample taken at `now` and return the replica count wanted from now on."""
        concurrency = sample.in_flight + sample.held
        self.held = sample.held
        changed = sample.requests is not None and sample.requests != self._requests
        if concurrency > 0 or (changed and self._requests is not None):
            self.last_active = now
        self._requests = sample.requests
        self._load.append((now, concurrency))
        while self._load and self._load[0][0] < now - self.settings.concurrency_window:
            self._load.popleft()
        average = sum(c for _, c in self._load) / len(self._load)
        wanted = math.ceil(average / self.bounds.target)
        # Held requests wait for replicas now: they count at once, not on average.
        wanted = max(wanted, math.ceil(sample.held / self.bounds.target))
        return self._decide(now, wanted)

    def wake(self, now: float) -> int:
        """A request is held for this predictor: at least one replica, at once."""
        self.last_active = now
        return self._decide(now, 1)

    def _decide(self, now: float, wanted: int) -> int:
        bounds = self.bounds
        floor = max(bounds.lowest, 1)
        wanted = min(max(wanted, floor), bounds.highest)
        self._wants.append((now, wanted))
        while self._wants and self._wants[0][0] < now - self.settings.stable_window:
            self._wants.popleft()
        # Up at once (the newest want is in the window); down only to the most any want of
        # the stable window asked for, i.e. after the whole window wanted fewer.
        replicas = min(max(w for _, w in self._wants), bounds.highest)
        idle = bounds.idle_seconds
        if (
            bounds.lowest == 0
            and idle is not None
            and now - self.last_active >= idle
            and wanted <= floor
        ):
            replicas = 0
        if self.replicas == 0 and replicas:
            self.woke = True
        self.replicas = replicas
        return replicas


class Autoscaler:
    """Every autoscaled predictor's `PredictorScaler`, by (deployment id, predictor name)."""

    def __init__(self, settings: ScaleSettings | None = None) -> None:
        self.settings = settings or ScaleSettings()
        self.scalers: dict[tuple[str, str], PredictorScaler] = {}

    def scaler(self, key: tuple[str, str], bounds: Bounds, now: float) -> PredictorScaler:
        """The predictor's scaler, created on first use and kept within `bounds`."""
        scaler = self.scalers.get(key)
        if scaler is None:
            scaler = self.scalers[key] = PredictorScaler.start(bounds, self.settings, now)
        elif scaler.bounds != bounds:
            scaler.rebound(bounds)
        return scaler

    def forget(self, keep: set[tuple[str, str]]) -> None:
        """Drop the scalers of predictors that no longer exist (or stopped)."""
        for key in list(self.scalers):
            if key not in keep:
                del self.scalers[key]


def scale_phase(
    predictor: Predictor, scaler: PredictorScaler | None, *, ready: int
) -> tuple[PredictorPhase, str] | None:
    """ScaledToZero or WakingUp with its message; None when the rollout's phase applies.

    The caller has already let a problem (a model that fails to load) win over both.
    """
    if scaler is None or predictor.idle_seconds is None:
        return None
    if scaler.at_zero:
        return (
            PredictorPhase.SCALED_TO_ZERO,
            f"scaled to zero after {predictor.idle_seconds} s without requests; "
            "the next request wakes it",
        )
    if ready == 0 and scaler.woke:
        held = scaler.held
        waiting = f"; {held} request{'s' if held != 1 else ''} held" if held else ""
        return PredictorPhase.WAKING_UP, f"waking up from zero replicas{waiting}"
    return None
