"""One replica of a deployment on this machine, the deployment's state, and how both run."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ...core.models import DeploymentRecord, Phase, PredictorPhase, ReplicaStatus
from ...core.quota import Usage
from .autoscaler import ScaleSettings
from .logs import LOG_NAME
from .processes import ProcessHandle

STARTING = "Starting"
READY = "Ready"
CRASHED = "CrashLoopBackOff"
RETIRING = "Retiring"  # out of traffic, stopping after the next routes push and a drain
TERMINATING = "Terminating"


@dataclass
class Replica:
    """A model-server process serving one slot of a predictor's template."""

    name: str
    deployment_id: str
    slot: int
    template: str
    directory: Path
    predictor: str = ""
    port: int = 0
    handle: ProcessHandle | None = None
    state: str = STARTING
    restarts: int = 0
    start_time: str | None = None
    next_start: float = 0.0
    last_probe: float = 0.0
    probe_failures: int = 0
    probing: bool = False
    load_error: str = ""
    last_exit: str = ""
    dropped_lines: int = 0  # engine lines that could not be written to its log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.directory / LOG_NAME

    @property
    def termination_log(self) -> Path:
        return self.directory / "termination-log"

    @property
    def alive(self) -> bool:
        return self.handle is not None and self.handle.exit_code() is None

    @property
    def ready(self) -> bool:
        return self.state == READY

    def to_status(self) -> ReplicaStatus:
        message = self.load_error or self.last_exit
        if self.state == CRASHED and self.next_start > time.monotonic():
            message = f"{message} (restarting in {self.next_start - time.monotonic():.0f} s)"
        return ReplicaStatus(
            name=self.name,
            predictor=self.predictor,
            ready=self.ready,
            phase=self.state,
            restarts=self.restarts,
            message=message.strip(),
            start_time=self.start_time,
        )


@dataclass
class PredictorState:
    """What the engine knows about one predictor of a deployment: its rollout and routes."""

    name: str
    template: str | None = None
    wanted_replicas: int = 0
    progress_since: float | None = None  # when the current rollout began (None: settled)
    routed: list[Replica] = field(default_factory=list)
    phase: PredictorPhase = PredictorPhase.DEPLOYING
    message: str = ""


@dataclass
class DeploymentState:
    """What the engine knows about one deployment beyond its stored spec."""

    deployment: DeploymentRecord
    seq: int
    replicas: list[Replica] = field(default_factory=list)
    client_hashes: dict[str, str] = field(default_factory=dict)
    admitted: Usage | None = None
    predictors: dict[str, PredictorState] = field(default_factory=dict)  # by name, spec order
    phase: Phase = Phase.DEPLOYING
    message: str = ""
    saved_phase: tuple[str, str] | None = None
    deleted: bool = False
    quarantined: str = ""  # why the stored deployment could not be read; nothing runs for it

    @property
    def id(self) -> str:
        return self.deployment.id

    @property
    def progress_since(self) -> float | None:
        """When the oldest unfinished predictor rollout began (None: every one settled)."""
        started = [p.progress_since for p in self.predictors.values() if p.progress_since]
        return min(started) if started else None

    @property
    def routed(self) -> list[Replica]:
        """The replicas in the gateway's table, every predictor's."""
        return [r for p in self.predictors.values() for r in p.routed]

    def replicas_of(self, predictor: str) -> list[Replica]:
        """The replicas (any state) of one predictor."""
        return [r for r in self.replicas if r.predictor == predictor]


@dataclass(frozen=True)
class ReplicaSettings:
    """How replicas run and roll out: the LocalEngine's settings the reconciler works with."""

    deploy_timeout: float = 300.0
    drain_seconds: float = 1.0
    stop_grace_seconds: float = 10.0
    restart_backoff_max: float = 60.0
    python_executable: str = sys.executable
    model_server_args: tuple[str, ...] = ()
    machine_cpu: float = 0.0  # 0: cores x cpu_overcommit
    cpu_overcommit: float = 4.0
    machine_memory: int = 0  # 0: the machine's RAM
    log_max_bytes: int = 10 * 1024 * 1024
    tick_seconds: float = 0.25
    scale: ScaleSettings = field(default_factory=ScaleSettings)
    templates: str = "auto"  # replica templates (templates.py): auto, on or off

    def backoff(self, restarts: int) -> float:
        """Seconds before the next start of a replica that has crashed `restarts` times."""
        return min(self.restart_backoff_max, 2.0**restarts)
