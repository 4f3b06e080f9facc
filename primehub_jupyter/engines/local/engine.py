"""LocalEngine: desired state in SQLite, a reconciler that runs replicas behind a gateway."""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from traitlets import Bool, Enum, Float, Integer, List, Unicode, default
from traitlets.config import Config

from ...core.errors import NotFound, Unchangeable, ValidationError
from ...core.metrics import MetricsReport
from ...core.models import (
    DeploymentRecord,
    DeploymentSpec,
    Phase,
    Predictor,
    PredictorPhase,
    PredictorStatus,
    utcnow,
)
from ...core.traffic import PredictorCounters
from ...serving.settings import model_server_args
from ..base import Engine, InvokeResult
from . import adoption
from . import logs as logfiles
from .autoscaler import ScaleSettings
from .files import private_dir, request_log_dir, restrict_tree
from .gateway_process import GatewayProcess, child_env
from .job_process import resolve_path
from .jobs import JobMethods, LocalJobs
from .launcher import ReplicaLauncher, secret_paths
from .metrics import LocalMetrics
from .processes import Prober
from .reconciler import Reconciler
from .replica import TERMINATING, DeploymentState, Replica, ReplicaSettings
from .rows import ReplicaRows
from .sandbox import MODES as SANDBOX_MODES
from .sandbox import Sandbox
from .scaling import ScaleLoop
from .store import Store
from .templates import MODES as TEMPLATE_MODES

_PHASES = {phase.value for phase in Phase}


class LocalEngine(JobMethods, Engine):
    """Runs deployments as model-server processes on 127.0.0.1 behind a local gateway, and
    batch jobs as sandboxed runner processes beside them (jobs.py)."""

    data_dir = Unicode(
        "",
        config=True,
        help="Where state and replica logs live (default: <Jupyter data dir>/primehub).",
    )
    root_dir = Unicode("", config=True, help="Relative modelURI paths are resolved against this.")
    gateway_port = Integer(
        0, config=True, help="Gateway port; 0 reuses the previous port when free, else any port."
    )
    gateway_url = Unicode(
        "", config=True, help="Public base URL of the gateway, when users reach it via a proxy."
    )
    deploy_timeout = Float(
        300.0, config=True, help="Seconds a rollout may take before the deployment is Failed."
    )
    drain_seconds = Float(
        1.0, config=True, help="Seconds old replicas keep serving after traffic moved away."
    )
    stop_grace_seconds = Float(10.0, config=True, help="SIGTERM to SIGKILL grace period.")
    restart_backoff_max = Float(60.0, config=True, help="Longest wait before restarting a crash.")
    stop_replicas_on_exit = Bool(
        True,
        config=True,
        help="Stop replicas and the gateway when the server stops (they come back on start).",
    )
    python_executable = Unicode(sys.executable, config=True, help="Python that runs replicas.")
    model_server_args = List(Unicode(), config=True, help="Extra model-server arguments.")
    machine_cpu = Float(
        0.0, config=True, help="CPU this machine offers to deployments (0: cores x cpu_overcommit)."
    )
    cpu_overcommit = Float(4.0, config=True, help="How many times the cores may be promised.")
    machine_memory = Integer(
        0, config=True, help="Memory in bytes offered to deployments (0: the machine's RAM)."
    )
    log_max_bytes = Integer(
        10 * 1024 * 1024, config=True, help="Rotate each replica's log at this size (one kept)."
    )
    metrics_interval = Float(5.0, config=True, help="Seconds between metrics scrapes.")
    metrics_retention = Float(3600.0, config=True, help="Seconds of metrics kept in memory.")
    tick_seconds = Float(0.25, config=True, help="Reconciler period while something changes.")
    scale_interval = Float(
        1.0,
        config=True,
        help="Seconds between readings of the gateway's load for the autoscaler (a request held "
        "for a predictor at zero is seen at once).",
    )
    scale_concurrency_window = Float(
        2.0,
        config=True,
        help="Seconds of load averaged into an autoscaled predictor's concurrency (scale-up).",
    )
    scale_stable_window = Float(
        45.0,
        config=True,
        help="Seconds an autoscaled predictor must want fewer replicas before they are removed.",
    )
    hold_queue = Integer(
        64,
        config=True,
        help="Requests the gateway holds per predictor while it wakes from zero; more get 503.",
    )
    hold_timeout = Float(
        30.0,
        config=True,
        help="Seconds a held request waits for a replica before the gateway answers 503.",
    )
    sandbox = Enum(
        list(SANDBOX_MODES),
        default_value="auto",
        config=True,
        help="Run replicas in a bubblewrap sandbox: 'auto' when bwrap works here (else a "
        "warning), 'bwrap' always (replicas do not start without it), 'off' never.",
    )
    replica_templates = Enum(
        list(TEMPLATE_MODES),
        default_value="auto",
        config=True,
        help="Start replicas by forking a warm template process that loaded the model once "
        "(sandboxed like a replica): 'auto' for autoscaled predictors, 'on' always, 'off' never.",
    )
    sandbox_network = Bool(
        False,
        config=True,
        help="Let sandboxed replicas use this machine's network (outbound calls, e.g. to a "
        "feature store). Off: a replica reaches no port, not even other replicas on 127.0.0.1.",
    )

    @default("data_dir")
    def _default_data_dir(self) -> str:
        from jupyter_core.paths import jupyter_data_dir

        return os.path.join(jupyter_data_dir(), "primehub")

    @classmethod
    def server_defaults(
        cls, config: Config, *, data_dir: str, root_dir: str | None
    ) -> dict[str, Any]:
        """The extension's data dir and the server's root dir, unless configured here."""
        sections = [c.__name__ for c in cls.__mro__ if issubclass(c, LocalEngine)]
        configured = {key for name in sections for key in config.get(name, {})}
        defaults: dict[str, Any] = {}
        if "data_dir" not in configured:
            defaults["data_dir"] = data_dir
        if "root_dir" not in configured and root_dir is not None:
            defaults["root_dir"] = root_dir
        return defaults

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._store: Store | None = None
        self._reconciler: Reconciler | None = None
        self._metrics: LocalMetrics | None = None
        self._prober = Prober()
        self._gateway: GatewayProcess | None = None
        self._scale_loop: ScaleLoop | None = None
        self._lock_fd: int | None = None
        self._session: aiohttp.ClientSession | None = None
        self._samples: dict[Path, tuple[float, dict | None]] = {}
        self._sandbox = Sandbox(
            self.sandbox,
            python=self.python_executable,
            share_network=self.sandbox_network,
            logger=self.log,
        )

    # ---- lifecycle --------------------------------------------------------------------

    @property
    def base_dir(self) -> Path:
        return Path(self.data_dir).expanduser()

    @property
    def store(self) -> Store:
        assert self._store is not None, "the engine is not started"
        return self._store

    @property
    def reconciler(self) -> Reconciler:
        """The reconciler: it owns the deployments' state and their replica processes."""
        assert self._reconciler is not None, "the engine is not started"
        return self._reconciler

    @property
    def _states(self) -> dict[str, DeploymentState]:
        return self._reconciler.deployments if self._reconciler is not None else {}

    @property
    def replica_settings(self) -> ReplicaSettings:
        """How replicas run and roll out, from this engine's configuration."""
        return ReplicaSettings(
            deploy_timeout=self.deploy_timeout,
            drain_seconds=self.drain_seconds,
            stop_grace_seconds=self.stop_grace_seconds,
            restart_backoff_max=self.restart_backoff_max,
            python_executable=self.python_executable,
            model_server_args=tuple(self.model_server_args),
            machine_cpu=self.machine_cpu,
            cpu_overcommit=self.cpu_overcommit,
            machine_memory=self.machine_memory,
            log_max_bytes=self.log_max_bytes,
            tick_seconds=self.tick_seconds,
            scale=ScaleSettings(
                concurrency_window=self.scale_concurrency_window,
                stable_window=self.scale_stable_window,
            ),
            templates=self.replica_templates,
        )

    @property
    def engine_id(self) -> str:
        """This engine's mark on its replica processes (derived from the data dir)."""
        return adoption.engine_id(self.base_dir)

    @property
    def gateway_base_url(self) -> str:
        if self.gateway_url:
            return self.gateway_url.rstrip("/")
        assert self._gateway is not None
        return self._gateway.url

    @property
    def endpoint_base(self) -> str | None:
        return self.gateway_base_url if self.gateway_url or self._gateway is not None else None

    def endpoint_of(self, deployment_id: str) -> str:
        return f"{self.gateway_base_url}/deployment/{deployment_id}/api/v1.0/predictions"

    def _acquire_lock(self) -> None:
        private_dir(self.base_dir)
        restrict_tree(self.base_dir)  # secrets live here; older versions made it all 0755/0644
        path = self.base_dir / "engine.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RuntimeError(
                f"the data dir {self.base_dir} is in use by another PrimeHub server (pid {owner}); "
                "stop it or choose another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    async def start(self) -> None:
        self._acquire_lock()
        await asyncio.to_thread(self._sandbox.check, child_env({}))
        self._store = Store(self.base_dir / "state.sqlite3")
        await self._store.open()
        self._gateway = GatewayProcess(
            self.base_dir / "gateway",
            port=self.gateway_port,
            python=self.python_executable,
            prober=self._prober,
            extra_args=(
                "--hold-queue",
                str(self.hold_queue),
                "--hold-timeout",
                str(self.hold_timeout),
            ),
            jwt_settings=self.jwt_settings,
        )
        settings = self.replica_settings
        rows = ReplicaRows(self._store, self.log)
        jobs = self._jobs = LocalJobs(
            store=self._store,
            sandbox=self._sandbox,
            config_store=self.config_store,
            data_dir=self.base_dir,
            root_dir=self.root_dir,
            engine_id=self.engine_id,
            python=self.python_executable,
            stop_grace_seconds=self.stop_grace_seconds,
            deployments=lambda: self._states,
            resolve_model_uri=self.resolve_model_uri,
            secrets=lambda: secret_paths(self.base_dir, Path(self.config_store.path)),
            log=self.log,
        )
        reconciler = self._reconciler = Reconciler(
            settings=settings,
            config_store=self.config_store,
            gateway=self._gateway,
            rows=rows,
            data_dir=self.base_dir,
            engine_id=self.engine_id,
            make_launcher=lambda kick: ReplicaLauncher(
                settings=settings,
                config_store=self.config_store,
                rows=rows,
                sandbox=self._sandbox,
                prober=self._prober,
                engine_id=self.engine_id,
                request_log_dir=self.request_log_dir,
                resolve_model_uri=self.resolve_model_uri,
                kick=kick,
                log=self.log,
            ),
            jobs_usage=jobs.usage,
            log=self.log,
        )
        for stored in await self._store.load_all():
            state = DeploymentState(stored.deployment, stored.seq, quarantined=stored.problem)
            state.phase = Phase(stored.phase) if stored.phase in _PHASES else Phase.DEPLOYING
            state.message = stored.message
            state.saved_phase = (stored.phase, stored.message)
            state.client_hashes = await self._store.client_hashes(stored.deployment.id)
            reconciler.deployments[state.id] = state
        await jobs.adopt()  # before admission: running jobs hold quota
        await self._gateway.start()
        await reconciler.adopt()
        jobs.start()
        self._metrics = LocalMetrics(
            gateway=self._gateway,
            prober=self._prober,
            deployments=lambda: list(reconciler.deployments.values()),
            retention=self.metrics_retention,
            interval=self.metrics_interval,
            log=self.log,
        )
        reconciler.start()
        self._scale_loop = ScaleLoop(
            gateway=self._gateway,
            autoscaler=reconciler.autoscaler,
            deployments=lambda: list(reconciler.deployments.values()),
            kick=reconciler.kick,
            interval=self.scale_interval,
        )
        self._scale_loop.start()
        self._metrics.start()
        self.log.info(
            "PrimeHub local engine: %d deployments, gateway %s, data %s",
            len(reconciler.deployments),
            self.gateway_base_url,
            self.base_dir,
        )

    async def shutdown(self) -> None:
        if self._scale_loop is not None:
            await self._scale_loop.stop()
        if self._metrics is not None:
            await self._metrics.stop()
        reconciler = self._reconciler
        if self._jobs is not None:
            await self._jobs.stop(stop_processes=self.stop_replicas_on_exit)
        if reconciler is not None:
            await reconciler.stop()
        if self.stop_replicas_on_exit and self._store is not None and reconciler is not None:
            # The gateway first: on SIGTERM it stops accepting and finishes what is in flight,
            # which needs the replicas still running; only then do the replicas stop.
            if self._gateway is not None:
                await self._gateway.stop(self.stop_grace_seconds)
            await reconciler.stop_replicas()
        if self._store is not None:
            if reconciler is not None:
                for state in reconciler.deployments.values():
                    await reconciler.rows.save_phase(state)
            await self._store.close()
        await self._prober.close()
        if self._session is not None:
            await self._session.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def kick(self) -> None:
        """Reconcile now rather than at the next tick."""
        self.reconciler.kick()

    # ---- the Engine interface ---------------------------------------------------------

    def check_spec(self, spec: DeploymentSpec) -> None:
        for index, predictor in enumerate(spec.predictors):
            self._check_predictor(f"spec.predictors.{index}", predictor)

    def _check_predictor(self, where: str, predictor: Predictor) -> None:
        if not predictor.model_uri:
            raise ValidationError(
                "the local engine serves model bundles, not container images: set modelURI to a "
                "bundle directory (made with primehub_jupyter.package(...) or "
                "`primehub-deploy package`); modelImage is for the Kubernetes engine",
                details=[{"field": f"{where}.modelURI", "message": "required"}],
            )
        path = self.resolve_model_uri(predictor.model_uri, f"{where}.modelURI")
        from ...serving.bundle import load_bundle
        from ...serving.errors import BundleError

        try:
            model_server_args(predictor.metadata, request_log_dir=self.request_log_dir)
        except ValueError as error:
            raise ValidationError(
                str(error), details=[{"field": f"{where}.metadata", "message": str(error)}]
            ) from None

        try:
            load_bundle(path)
        except BundleError as error:
            raise ValidationError(
                f"model URI cannot be used: {error}",
                details=[{"field": f"{where}.modelURI", "message": str(error)}],
            ) from None

    @property
    def request_log_dir(self) -> Path:
        """Where replicas write request/response logs when a deployment turns them on."""
        return request_log_dir(self.base_dir)

    def resolve_model_uri(self, uri: str, field: str = "spec.predictors.0.modelURI") -> Path:
        """A local path for a modelURI (plain path or file://), or a validation error naming
        `field`."""
        return resolve_path(uri, self.root_dir, field, "a model URI").resolve()

    async def create(self, deployment: DeploymentRecord) -> DeploymentRecord:
        seq = await self.store.insert(deployment)
        stored = deployment.model_copy(deep=True)
        stored.resource_version = "1"
        self.reconciler.deployments[stored.id] = DeploymentState(
            stored, seq, phase=stored.status.phase
        )
        assert self._metrics is not None
        self._metrics.begin(stored.id)
        self.kick()
        return await self.get(stored.id)

    async def get(self, deployment_id: str) -> DeploymentRecord:
        state = self._states.get(deployment_id)
        if state is None or state.deleted:
            raise NotFound(f"deployment '{deployment_id}' not found")
        return self._with_status(state)

    async def list_deployments(self) -> list[DeploymentRecord]:
        return [self._with_status(r) for r in self._states.values() if not r.deleted]

    async def replace(
        self, deployment: DeploymentRecord, *, client_secret: tuple[str, str] | None = None
    ) -> DeploymentRecord:
        state = self._states.get(deployment.id)
        if state is None or state.deleted:
            raise NotFound(f"deployment '{deployment.id}' not found")
        if state.quarantined:
            raise Unchangeable(state.message)
        now = utcnow()
        stored = deployment.model_copy(deep=True)
        stored.status.last_updated = now
        stored.status.creation_time = state.deployment.status.creation_time
        version = await self.store.update(stored, int(deployment.resource_version), client_secret)
        stored.resource_version = str(version)
        state.deployment = stored
        names = {c.name for c in stored.spec.endpoint.clients}
        state.client_hashes = {k: v for k, v in state.client_hashes.items() if k in names}
        if client_secret is not None:
            state.client_hashes[client_secret[0]] = client_secret[1]
        await self.reconciler.tick()  # in effect (routes pushed) on return
        return self._with_status(state)

    async def delete(self, deployment_id: str) -> None:
        state = self._states.get(deployment_id)
        if state is None or state.deleted:
            raise NotFound(f"deployment '{deployment_id}' not found")
        # The row goes first: if it cannot be deleted (StorageUnavailable), nothing changed.
        # A crash after it leaves processes no deployment wants, which the next start ends.
        await self.store.delete(deployment_id)
        await self.job_manager.remove_deployment(deployment_id)
        await self.reconciler.remove(state)
        await asyncio.to_thread(
            shutil.rmtree, self.base_dir / "deployments" / deployment_id, ignore_errors=True
        )

    # ---- logs -------------------------------------------------------------------------

    def _replica_dirs(self, deployment_id: str) -> dict[str, Path]:
        """Replicas with logs: the current ones by predictor and slot, then older ones, newest
        first."""
        state = self._states.get(deployment_id)
        order = {name: i for i, name in enumerate(state.predictors if state else {})}

        def rank(replica: Replica) -> tuple[int, bool, int]:
            pstate = state.predictors.get(replica.predictor) if state else None
            current = pstate is not None and replica.template == pstate.template
            return (order.get(replica.predictor, len(order)), not current, replica.slot)

        current = sorted(
            (r for r in (state.replicas if state else []) if r.state != TERMINATING), key=rank
        )
        result = {r.name: r.directory for r in current}
        root = self.base_dir / "deployments" / deployment_id / "replicas"
        if root.exists():
            older = sorted(
                (d for d in root.iterdir() if d.is_dir() and d.name not in result),
                key=lambda d: d.stat().st_mtime,
                reverse=True,
            )
            result.update({d.name: d for d in older})
        return result

    async def replica_names(self, deployment_id: str) -> list[str]:
        await self.get(deployment_id)
        return list(self._replica_dirs(deployment_id))

    def _selected(self, deployment_id: str, replica: str | None) -> dict[str, Path]:
        dirs = self._replica_dirs(deployment_id)
        if replica is not None:
            return {replica: dirs[replica]} if replica in dirs else {}
        state = self._states.get(deployment_id)
        current = {
            r.name: dirs[r.name]
            for r in (state.replicas if state else [])
            if r.name in dirs and r.state != TERMINATING
        }
        if current:
            return current
        # Nothing runs (stopped or failed): show the most recent replica's log.
        return dict(list(dirs.items())[:1])

    async def logs(self, deployment_id: str, replica: str | None, tail: int | None) -> list[str]:
        await self.get(deployment_id)
        selected = self._selected(deployment_id, replica)
        return await asyncio.to_thread(logfiles.merged_tail, selected, tail)

    async def follow_logs(self, deployment_id: str, replica: str | None) -> AsyncIterator[str]:
        await self.get(deployment_id)
        async for line in logfiles.follow(
            lambda: self._selected(deployment_id, replica), tag=None if replica is None else False
        ):
            yield line

    async def download_logs(self, deployment_id: str, replica: str | None) -> AsyncIterator[bytes]:
        await self.get(deployment_id)
        selected = self._selected(deployment_id, replica)
        if replica is None:
            selected = self._replica_dirs(deployment_id)
        async for chunk in logfiles.download(selected):
            yield chunk

    # ---- metrics ----------------------------------------------------------------------

    async def metrics(self, deployment_id: str, window: float, step: float) -> MetricsReport:
        await self.get(deployment_id)
        assert self._metrics is not None
        return await self._metrics.report(deployment_id, window, step)

    # ---- invoke -----------------------------------------------------------------------

    async def invoke(
        self, deployment_id: str, path: str, body: bytes, headers: dict[str, str], user: str
    ) -> InvokeResult:
        await self.get(deployment_id)
        assert self._gateway is not None
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        url = self._gateway.invoke_url(deployment_id, path)
        sent = {**headers, **self._gateway.internal_headers(user, deployment_id)}
        async with self._session.post(url, data=body, headers=sent) as response:
            data = await response.read()
            keep = {"Content-Type", "Request-ID", "X-PrimeHub-Predictor"}
            return InvokeResult(
                response.status, data, {k: v for k, v in response.headers.items() if k in keep}
            )

    # ---- status -----------------------------------------------------------------------

    def _with_status(self, state: DeploymentState) -> DeploymentRecord:
        deployment = state.deployment.model_copy(deep=True)
        live = [r for r in state.replicas if r.state != TERMINATING or r.alive]
        status = deployment.status
        status.phase = state.phase
        status.message = state.message
        status.replicas = sum(1 for r in live if r.alive)
        status.available_replicas = len(state.routed)
        status.endpoint = self.endpoint_of(state.id) if self._gateway is not None else None
        status.replica_statuses = [r.to_status() for r in sorted(live, key=lambda r: r.name)]
        status.predictors = self._predictor_statuses(state, live)
        status.sample_request = self._sample_request(state.deployment.spec)
        return deployment

    def _predictor_statuses(
        self, state: DeploymentState, live: list[Replica]
    ) -> list[PredictorStatus]:
        """Per predictor, in spec order: weight, replicas running and routed, phase."""
        spec = state.deployment.spec
        weights = spec.weights()
        statuses = []
        for predictor in spec.predictors:
            pstate = state.predictors.get(predictor.name)
            statuses.append(
                PredictorStatus(
                    name=predictor.name,
                    traffic=weights.get(predictor.name, 0),
                    shadow=predictor.shadow,
                    replicas=sum(1 for r in live if r.predictor == predictor.name and r.alive),
                    available_replicas=len(pstate.routed) if pstate is not None else 0,
                    phase=pstate.phase if pstate is not None else PredictorPhase.DEPLOYING,
                    message=pstate.message if pstate is not None else "",
                )
            )
        return statuses

    async def predictor_counters(self, deployment_id: str) -> list[PredictorCounters]:
        """Counters of each predictor (spec order) from the gateway; zeros when it has none."""
        record = await self.get(deployment_id)
        assert self._gateway is not None
        load = await self._gateway.load()
        mine = load.get(deployment_id, {}).get("predictors", {}) if load else {}
        result = []
        for predictor in record.spec.predictors:
            raw = mine.get(predictor.name, {}).get("counters")
            counters = PredictorCounters.model_validate(raw) if raw else None
            if counters is None:
                counters = PredictorCounters.model_validate({"name": predictor.name})
            counters.name, counters.shadow = predictor.name, predictor.shadow
            result.append(counters)
        return result

    def _sample_request(self, spec: DeploymentSpec) -> dict | None:
        """The sample request recorded in the bundle, for "Run an Example" (cached by mtime)."""
        uri = spec.predictor.model_uri
        if not uri:
            return None
        try:
            path = self.resolve_model_uri(uri)
            mtime = (path / "bundle.yaml").stat().st_mtime
        except (OSError, ValidationError):
            return None
        cached = self._samples.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        from ...serving.bundle import load_bundle
        from ...serving.errors import BundleError

        try:
            sample = load_bundle(path).sample
            request = sample.request if sample is not None else None
        except (BundleError, OSError, ValueError):
            request = None
        self._samples[path] = (mtime, request)
        return request
