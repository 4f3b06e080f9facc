"""The engine interface: one abstract base for the local and the Kubernetes engines."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from traitlets import Instance, Type
from traitlets.config import Config, LoggingConfigurable
from traitlets.traitlets import MetaHasTraits

from ..core.access import JwtSettings
from ..core.config import ConfigStore
from ..core.errors import BadRequest
from ..core.jobs import JobRecord
from ..core.metrics import MetricsReport
from ..core.models import DeploymentRecord, DeploymentSpec
from ..core.traffic import PredictorCounters

DEFAULT_TAIL = 2000


class _EngineMeta(MetaHasTraits, ABCMeta):
    """Lets an engine be both a configurable (traitlets) and an abstract base class."""


@dataclass
class InvokeResult:
    """An HTTP answer from a deployment's endpoint."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class EngineClass(Type):
    """A traitlets `Type` of engine classes whose import-string default is imported lazily.

    traitlets' own `Type` imports its default when the owner is built, so a server configured
    with the Kubernetes engine would still import the local one (and its POSIX-only fcntl).
    """

    def instance_init(self, obj: Any) -> None:
        if isinstance(self.klass, str):
            self.klass = self._resolve_string(self.klass)

    def default(self, obj: Any = None) -> Any:
        if isinstance(self.default_value, str):
            self.default_value = self._resolve_string(self.default_value)
        return self.default_value


class Engine(LoggingConfigurable, metaclass=_EngineMeta):
    """Where deployments run; the service layer is the only caller.

    The engine owns the stored object (spec, history, resourceVersion) and computes status.
    It never decides who may do what: the service has checked that before calling.
    """

    config_store = Instance(ConfigStore, help="The groups/instance types configuration.")
    jwt_settings = Instance(
        JwtSettings,
        allow_none=True,
        help="Bearer JWTs private endpoints accept (from PrimeHubApp.jwt_*); None: Basic only.",
    )

    @classmethod
    def server_defaults(
        cls, config: Config, *, data_dir: str, root_dir: str | None
    ) -> dict[str, Any]:
        """Constructor arguments this engine takes from the Jupyter server it runs in.

        `data_dir` is the extension's state directory, `root_dir` the server's (None without
        one); an engine uses them only where its own config section leaves a setting unset.
        The base takes nothing.
        """
        return {}

    @property
    def gpu_supported(self) -> bool:
        """Whether instance types with GPUs can run."""
        return False

    @property
    def endpoint_base(self) -> str | None:
        """Where model endpoints live (`<base>/deployment/<id>/...`), once known; else None."""
        return None

    async def start(self) -> None:
        """Begin reconciling; called once when the server starts."""

    async def shutdown(self) -> None:
        """Stop background work and release resources."""

    def check_spec(self, spec: DeploymentSpec) -> None:
        """Raise a ValidationError when this engine cannot run the spec at all."""

    @abstractmethod
    async def create(self, deployment: DeploymentRecord) -> DeploymentRecord:
        """Store a new deployment; Conflict if the id is taken."""

    @abstractmethod
    async def get(self, deployment_id: str) -> DeploymentRecord:
        """The deployment with its current status; NotFound if absent."""

    @abstractmethod
    async def list_deployments(self) -> list[DeploymentRecord]:
        """Every deployment, with status."""

    @abstractmethod
    async def replace(
        self, deployment: DeploymentRecord, *, client_secret: tuple[str, str] | None = None
    ) -> DeploymentRecord:
        """Store a new spec and history.

        `deployment.resource_version` is the version the caller read: Conflict if the stored
        one differs. `client_secret` is (name, token hash) of a client to add or replace;
        hashes of clients no longer named in the spec are dropped.
        """

    @abstractmethod
    async def delete(self, deployment_id: str) -> None:
        """Remove the deployment and everything that runs it."""

    @abstractmethod
    async def replica_names(self, deployment_id: str) -> list[str]:
        """Names of replicas that have logs, current ones first."""

    @abstractmethod
    async def logs(self, deployment_id: str, replica: str | None, tail: int | None) -> list[str]:
        """The last `tail` log lines (all when None), oldest first, UTC timestamps."""

    @abstractmethod
    def follow_logs(self, deployment_id: str, replica: str | None) -> AsyncIterator[str]:
        """New log lines as they are written, until the consumer stops iterating."""

    @abstractmethod
    def download_logs(self, deployment_id: str, replica: str | None) -> AsyncIterator[bytes]:
        """The whole log, in chunks."""

    async def predictor_counters(self, deployment_id: str) -> list[PredictorCounters]:
        """Per-predictor counts (requests, errors, latency, joined feedback, shadow diffs).

        Engines that cannot count per predictor return an empty list.
        """
        return []

    @abstractmethod
    async def metrics(self, deployment_id: str, window: float, step: float) -> MetricsReport:
        """Time series of traffic, errors, latency, reward and replica usage.

        The report's shape is fixed in core/metrics.py (docs/internals.md "Metrics"): the same
        for every engine.
        """

    @abstractmethod
    async def invoke(
        self, deployment_id: str, path: str, body: bytes, headers: dict[str, str], user: str
    ) -> InvokeResult:
        """Call the deployment's endpoint on behalf of a signed-in user (no client token)."""

    # ---- batch jobs (core/jobs.py); engines without jobs answer 400 ----------------------

    async def create_job(self, deployment: DeploymentRecord, job: JobRecord) -> JobRecord:
        """Check the job can run (input readable, columns present, output free) and queue it.

        `job.spec` is resolved by the service (paths, format, predictor). Raises
        ValidationError (422) naming the problem; the job is stored only when it can run.
        """
        raise BadRequest("batch jobs are not supported by this engine")

    async def list_jobs(self, deployment_id: str) -> list[JobRecord]:
        """The deployment's jobs, newest first (at most core.jobs.MAX_JOBS_KEPT)."""
        return []

    async def get_job(self, deployment_id: str, job_id: str) -> JobRecord:
        """One job with its current progress; NotFound if absent."""
        raise BadRequest("batch jobs are not supported by this engine")

    async def delete_job(self, deployment_id: str, job_id: str) -> JobRecord:
        """Cancel a job that has not finished (phase Cancelled), or remove a finished one."""
        raise BadRequest("batch jobs are not supported by this engine")

    async def job_logs(self, deployment_id: str, job_id: str, tail: int | None) -> list[str]:
        """The job process's last `tail` log lines (all when None), oldest first."""
        raise BadRequest("batch jobs are not supported by this engine")

    async def running_jobs(self) -> list[JobRecord]:
        """Jobs Pending or Running on any deployment (each holds one replica of quota)."""
        return []
