"""The local engine's reconciler: desired state in, replica processes and gateway routes out."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import psutil

from ...core.config import ConfigStore, format_memory
from ...core.errors import StorageUnavailable, ValidationError
from ...core.models import DeploymentSpec, Phase, utcnow
from ...core.quota import Usage, quota_problem_for_usage, requested
from ...serving.settings import model_server_args as metadata_args
from ...serving.settings import request_log_enabled
from .adoption import mark_env
from .files import private_dir
from .gateway_process import GatewayProcess, child_env
from .processes import Prober, append_engine_line, bind_loopback, spawn
from .replica import CRASHED, READY, RETIRING, STARTING, TERMINATING, Replica, Runtime
from .sandbox import Sandbox
from .store import ReplicaRecord, Store

LOAD_FAILURE_EXIT_CODE = 3
PROBE_INTERVAL_READY = 2.0
PROBE_FAILURES_UNREADY = 3


class Reconciler:
    """Turns each deployment's spec into running, probed replicas and the gateway's routes.

    A mixin of LocalEngine: it works on the engine's runtimes, store, gateway and settings.
    Each tick admits deployments (group, instance type, quota, machine), starts or retires
    replicas (a rolling update keeps the old ones serving until the new are ready), restarts
    crashed ones with backoff, sets phases and pushes the routing table.
    """

    # Provided by LocalEngine (traits and state).
    config_store: ConfigStore
    deploy_timeout: float
    drain_seconds: float
    stop_grace_seconds: float
    restart_backoff_max: float
    python_executable: str
    model_server_args: list[str]
    machine_cpu: float
    cpu_overcommit: float
    machine_memory: int
    log_max_bytes: int
    tick_seconds: float
    log: Any
    _runtimes: dict[str, Runtime]
    _gateway: GatewayProcess | None
    _prober: Prober
    _wake: asyncio.Event
    _tasks: set[asyncio.Task]
    _tick_lock: asyncio.Lock
    _sandbox: Sandbox
    _pending_rows: dict[str, ReplicaRecord | None]
    _storage_failing: bool

    @property
    def store(self) -> Store:  # pragma: no cover - overridden by LocalEngine
        raise NotImplementedError

    @property
    def request_log_dir(self) -> Path:  # pragma: no cover - overridden by LocalEngine
        raise NotImplementedError

    def resolve_model_uri(self, uri: str) -> Path:  # pragma: no cover - LocalEngine's
        raise NotImplementedError

    def _replica_dir(self, deployment_id: str, name: str) -> Path:  # pragma: no cover
        raise NotImplementedError

    def kick(self) -> None:  # pragma: no cover - overridden by LocalEngine
        raise NotImplementedError

    @property
    def engine_id(self) -> str:  # pragma: no cover - overridden by LocalEngine
        raise NotImplementedError

    async def _run(self) -> None:
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop reconciling every other deployment
                self.log.exception("PrimeHub reconciler tick failed")
            busy = any(
                r.phase in (Phase.DEPLOYING, Phase.STOPPING) or r.progress_since is not None
                for r in self._runtimes.values()
            )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), self.tick_seconds if busy else self.tick_seconds * 4
                )
            self._wake.clear()

    async def _reconcile_now(self) -> None:
        """One tick right away, so a change is in effect (routes pushed) on return."""
        await self._tick()

    async def _tick(self) -> None:
        async with self._tick_lock:
            await self._tick_locked()

    async def _tick_locked(self) -> None:
        assert self._gateway is not None
        await self._gateway.ensure_running()
        config = self.config_store.get()
        await self._flush_pending_rows()
        await self._probe_all()
        admitted_by_group: dict[str, Usage] = {}
        machine = Usage()
        for runtime in sorted(self._runtimes.values(), key=lambda r: r.seq):
            if runtime.deleted or runtime.quarantined:
                continue
            await self._reconcile(runtime, config, admitted_by_group)
            if runtime.admitted is not None:
                group = runtime.deployment.spec.group_name
                admitted_by_group[group] = admitted_by_group.get(group, Usage()).add(
                    runtime.admitted
                )
                machine = machine.add(runtime.admitted)
        pushed = await self._push_routes()
        for runtime in list(self._runtimes.values()):
            refused = self._gateway.rejected.get(runtime.id)
            if refused is not None:  # only this deployment: the gateway routes the others
                reason = f"the gateway refused this deployment's routing entry: {refused}"
                self._set_phase(runtime, Phase.FAILED, reason)
            for replica in runtime.replicas:
                if replica.state == TERMINATING and replica.handle is not None:
                    continue
                if replica.state == RETIRING and pushed:
                    replica.state = TERMINATING
                    self._spawn_task(self._terminate(runtime, replica, drain=True))
            await self._save_phase(runtime)

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _save_phase(self, runtime: Runtime) -> None:
        current = (runtime.phase.value, runtime.message)
        if current != runtime.saved_phase and not runtime.deleted:
            try:
                await self.store.save_phase(runtime.id, *current)
            except StorageUnavailable as error:
                self._storage_failed(error)  # kept in memory; saved by a later tick
                return
            self._storage_ok()
            runtime.saved_phase = current

    # ---- replica rows: written with retries, never lost from memory ---------------------

    def _record_of(self, replica: Replica) -> ReplicaRecord:
        handle = replica.handle
        return ReplicaRecord(
            name=replica.name,
            deployment_id=replica.deployment_id,
            slot=replica.slot,
            template=replica.template,
            # pid 0: the intent to start it (written before the spawn), completed after.
            pid=handle.pid if handle is not None else 0,
            create_time=handle.create_time if handle is not None else 0.0,
            port=replica.port,
            restarts=replica.restarts,
            start_time=replica.start_time,
        )

    async def _write_replica(self, name: str, record: ReplicaRecord | None) -> bool:
        """Store (or with None forget) a replica's row; when storage fails, a later tick retries.

        The process itself is known in memory and carries its mark, so a failed write loses
        nothing: the row only speeds up adoption after a restart.
        """
        self._pending_rows.pop(name, None)
        try:
            if record is None:
                await self.store.forget_replica(name)
            else:
                await self.store.save_replica(record)
        except StorageUnavailable as error:
            self._storage_failed(error)
            self._pending_rows.setdefault(name, record)
            return False
        self._storage_ok()
        return True

    async def _flush_pending_rows(self) -> None:
        for name, record in list(self._pending_rows.items()):
            if not await self._write_replica(name, record):
                return  # still failing: the rest waits for the next tick

    def _note(self, replica: Replica, text: str) -> None:
        """An engine event in the replica's log; a failed write (disk full) is counted, and the
        count is written with the next line that gets through, so no loss is silent."""
        if replica.dropped_lines:
            text = f"{text} ({replica.dropped_lines} earlier engine lines were lost)"
        try:
            append_engine_line(replica.log_file, text)
        except OSError as error:
            if not replica.dropped_lines:
                self.log.warning("cannot write the log of replica %s: %s", replica.name, error)
            replica.dropped_lines += 1
            return
        replica.dropped_lines = 0

    def _storage_failed(self, error: StorageUnavailable) -> None:
        if not self._storage_failing:
            self.log.error("PrimeHub state is not being saved: %s", error.message)
        self._storage_failing = True

    def _storage_ok(self) -> None:
        if self._storage_failing:
            self.log.warning("PrimeHub state is saved again")
        self._storage_failing = False

    def _template(self, spec: DeploymentSpec) -> str:
        predictor = spec.predictor
        key = json.dumps(
            {
                "uri": predictor.model_uri,
                "image": predictor.model_image,
                "instanceType": predictor.instance_type,
                "metadata": predictor.metadata,
                "env": [e.to_json() for e in spec.env],
            },
            sort_keys=True,
        )
        return hashlib.sha256(key.encode()).hexdigest()[:5]

    def _machine_capacity(self) -> Usage:
        cpu = self.machine_cpu or (os.cpu_count() or 1) * self.cpu_overcommit
        memory = self.machine_memory or psutil.virtual_memory().total
        return Usage(cpu=cpu, memory=memory)

    def _admission_problem(
        self, runtime: Runtime, want: Usage, admitted_by_group: dict[str, Usage]
    ) -> str | None:
        config = self.config_store.get()
        group = runtime.deployment.spec.group_name
        others = Usage()
        everyone = Usage()
        for other in self._runtimes.values():
            if other is runtime or other.admitted is None or other.deleted:
                continue
            everyone = everyone.add(other.admitted)
            if other.deployment.spec.group_name == group:
                others = others.add(other.admitted)
        problem = quota_problem_for_usage(config, group, want, others)
        if problem:
            return problem
        capacity = self._machine_capacity()
        if everyone.cpu + want.cpu > capacity.cpu + 1e-9:
            return (
                f"machine resource not enough: cpu {want.cpu:g} requested, "
                f"{max(capacity.cpu - everyone.cpu, 0):g} of {capacity.cpu:g} free"
            )
        if everyone.memory + want.memory > capacity.memory:
            return (
                f"machine resource not enough: memory {format_memory(want.memory)} requested, "
                f"{format_memory(max(capacity.memory - everyone.memory, 0))} free"
            )
        return None

    async def _reconcile(
        self, runtime: Runtime, config: Any, admitted_by_group: dict[str, Usage]
    ) -> None:
        spec = runtime.deployment.spec
        await self._observe_exits(runtime)
        if spec.stop:
            runtime.admitted = None
            runtime.progress_since = None
            self._retire(runtime, list(runtime.replicas))
            alive = [r for r in runtime.replicas if r.alive]
            runtime.routed = []
            self._set_phase(runtime, Phase.STOPPING if alive else Phase.STOPPED, "")
            return
        problem = config.problem_with(spec.group_name, spec.predictor.instance_type)
        if problem:
            runtime.admitted = None
            runtime.routed = []
            self._retire(runtime, list(runtime.replicas))
            self._set_phase(runtime, Phase.FAILED, problem)
            return
        want = requested(config, runtime.deployment)
        if runtime.admitted != want:
            problem = self._admission_problem(runtime, want, admitted_by_group)
            if problem:
                serving = [r for r in runtime.replicas if r.ready]
                runtime.routed = serving
                if serving:
                    problem += "; the running version keeps serving"
                self._set_phase(runtime, Phase.FAILED, problem)
                return
            runtime.admitted = want
        template = self._template(spec)
        wanted = spec.predictor.replicas
        if template != runtime.template or wanted > runtime.wanted_replicas:
            runtime.progress_since = time.monotonic()
        runtime.template = template
        runtime.wanted_replicas = wanted
        current = [r for r in runtime.replicas if r.template == template and r.state != RETIRING]
        current = [r for r in current if r.state != TERMINATING]
        slots = {r.slot for r in current}
        for slot in range(wanted):
            if slot not in slots:
                replica = self._new_replica(runtime, slot, template)
                runtime.replicas.append(replica)
                current.append(replica)
        surplus = [r for r in current if r.slot >= wanted]
        self._retire(runtime, surplus)
        current = [r for r in current if r.slot < wanted]
        now = time.monotonic()
        for replica in current:
            if replica.handle is None and now >= replica.next_start:
                try:
                    await self._start_replica(runtime, replica)
                except OSError as error:  # e.g. no space for its directory: try again later
                    replica.last_exit = f"could not start: {error}"
                    replica.state = CRASHED
                    replica.next_start = now + min(self.restart_backoff_max, 2.0**replica.restarts)
                    replica.restarts += 1
        ready = [r for r in current if r.ready]
        old = [
            r
            for r in runtime.replicas
            if r not in current and r.state not in (TERMINATING, RETIRING)
        ]
        if len(ready) == wanted:
            runtime.routed = ready
            self._retire(runtime, old)
            runtime.progress_since = None
            self._set_phase(runtime, Phase.DEPLOYED, "")
            return
        old_ready = [r for r in old if r.ready]
        runtime.routed = ready + old_ready
        keeps = "; the previous version keeps serving" if old_ready else ""
        errors = [r.load_error for r in current if r.load_error]
        if errors:
            self._set_phase(runtime, Phase.FAILED, errors[0] + keeps)
            return
        waited = now - runtime.progress_since if runtime.progress_since is not None else 0.0
        if runtime.progress_since is not None and waited > self.deploy_timeout:
            detail = next((r.last_exit for r in current if r.last_exit), "")
            self._set_phase(
                runtime,
                Phase.FAILED,
                f"not ready within the deploy timeout of {self.deploy_timeout:g} s "
                f"({len(ready)} of {wanted} replicas ready){': ' + detail if detail else ''}"
                + keeps,
            )
            return
        crashed = next((r for r in current if r.state == CRASHED), None)
        message = f"{len(ready)} of {wanted} replicas ready"
        if crashed is not None:
            message += f"; {crashed.name} {crashed.last_exit}, restart {crashed.restarts}"
        self._set_phase(runtime, Phase.DEPLOYING, message)

    def _set_phase(self, runtime: Runtime, phase: Phase, message: str) -> None:
        if (runtime.phase, runtime.message) != (phase, message):
            self.log.info("deployment %s: %s %s", runtime.id, phase.value, message)
        runtime.phase, runtime.message = phase, message

    def _new_replica(self, runtime: Runtime, slot: int, template: str) -> Replica:
        name = f"{runtime.id}-{template}-{slot}"
        return Replica(
            name=name,
            deployment_id=runtime.id,
            slot=slot,
            template=template,
            directory=self._replica_dir(runtime.id, name),
        )

    def _retire(self, runtime: Runtime, replicas: list[Replica]) -> None:
        """Take replicas out of traffic; they stop after the next routes push and a drain."""
        for replica in replicas:
            if replica.state in (TERMINATING, RETIRING):
                continue
            if replica.handle is None or not replica.alive:
                runtime.replicas.remove(replica)
                self._spawn_task(self._write_replica(replica.name, None))
                continue
            replica.state = RETIRING

    async def _terminate(self, runtime: Runtime, replica: Replica, *, drain: bool) -> None:
        replica.state = TERMINATING
        if drain and self.drain_seconds > 0:
            await asyncio.sleep(self.drain_seconds)
        if replica.handle is not None:
            await replica.handle.terminate(self.stop_grace_seconds)
            self._note(replica, "replica stopped")
        if replica in runtime.replicas:
            runtime.replicas.remove(replica)
        if not runtime.deleted:
            await self._write_replica(replica.name, None)
        self.kick()

    async def _start_replica(self, runtime: Runtime, replica: Replica) -> None:
        spec = runtime.deployment.spec
        config = self.config_store.get()
        instance = config.instance_type(spec.predictor.instance_type)
        threads = str(max(1, int(instance.cpu if instance else 1)))
        private_dir(replica.directory)
        replica.termination_log.unlink(missing_ok=True)
        bundle = self.resolve_model_uri(spec.predictor.model_uri or "")
        sock = bind_loopback()
        replica.port = sock.getsockname()[1]
        # The intent first (no pid yet); a failed write does not stop the start: the process
        # carries its mark, so a restarted server finds it either way.
        await self._write_replica(replica.name, self._record_of(replica))
        if runtime.deleted or replica not in runtime.replicas:
            sock.close()  # deleted (or retired) while the intent was being written
            return
        try:
            argv = [
                self.python_executable,
                "-m",
                "primehub_jupyter.serving",
                str(bundle),
                "--fd",
                str(sock.fileno()),
                "--log-file",
                str(replica.log_file),
                "--termination-log",
                str(replica.termination_log),
                "--deployment",
                runtime.id,
                "--replica",
                replica.name,
                "--predictor",
                spec.predictor.name,
                *metadata_args(spec.predictor.metadata, request_log_dir=self.request_log_dir),
                "--log-max-bytes",
                str(self.log_max_bytes),
                *self.model_server_args,
            ]
            extra = {
                "PYTHONUNBUFFERED": "1",
                "OMP_NUM_THREADS": threads,
                "OPENBLAS_NUM_THREADS": threads,
                "MKL_NUM_THREADS": threads,
                "PREDICTIVE_UNIT_ID": spec.predictor.name,
                "SELDON_DEPLOYMENT_ID": runtime.id,
                **{e.name: e.value for e in spec.env},
                # Last, so a user's env cannot change the mark adoption relies on.
                **mark_env(self.engine_id, runtime.id, replica.name, replica.port),
            }
            if replica.restarts:
                self._note(replica, f"restarting replica (restart {replica.restarts})")
            else:
                self._note(replica, f"starting replica for {bundle}")
            replica.handle = spawn(
                self._sandboxed(runtime, replica, bundle, argv),
                log_file=replica.log_file,
                env=self._sandbox.environment(child_env(extra)),
                cwd=replica.directory,
                pass_fds=(sock.fileno(),),
                sandboxed=self._sandbox.enabled,
            )
        finally:
            sock.close()
        replica.state = STARTING
        replica.start_time = utcnow()
        replica.probe_failures = 0
        await self._write_replica(replica.name, self._record_of(replica))

    def _sandboxed(
        self, runtime: Runtime, replica: Replica, bundle: Path, argv: list[str]
    ) -> list[str]:
        """The model server's command line inside the sandbox (unchanged without one)."""
        if not self._sandbox.enabled:
            return argv
        writable = [replica.directory]
        if request_log_enabled(runtime.deployment.spec.predictor.metadata):
            writable.append(private_dir(self.request_log_dir / runtime.id))
        others = []
        for other in self._runtimes.values():
            with contextlib.suppress(ValidationError):
                if other is not runtime and other.deployment.spec.predictor.model_uri:
                    others.append(self.resolve_model_uri(other.deployment.spec.predictor.model_uri))
        mounts = self._sandbox.mounts_for(
            bundle=bundle, writable=writable, secrets=self._sandbox_secrets(), others=others
        )
        return self._sandbox.wrap(argv, mounts, chdir=replica.directory)

    def _sandbox_secrets(self) -> list[Path]:
        """What no replica may see: state, config, Jupyter's runtime and config files."""
        from jupyter_core.paths import jupyter_config_path, jupyter_runtime_dir

        data_dir = self.request_log_dir.parent
        paths = [data_dir, Path(self.config_store.path)]
        paths += [Path(jupyter_runtime_dir()), *(Path(p) for p in jupyter_config_path())]
        return paths

    async def _observe_exits(self, runtime: Runtime) -> None:
        """Notice replicas that ended, record why, schedule their restart with backoff."""
        for replica in runtime.replicas:
            if replica.handle is None or replica.state in (TERMINATING, RETIRING):
                continue
            code = replica.handle.exit_code()
            if code is None:
                continue
            # Its launcher may have been killed alone: nothing of the old process may outlive it.
            await asyncio.to_thread(replica.handle.kill_leftovers)
            message = ""
            with contextlib.suppress(OSError):
                message = replica.termination_log.read_text().strip()
            if code == LOAD_FAILURE_EXIT_CODE or message:
                replica.load_error = message or "the model failed to load (see the logs)"
            if code < 0:
                replica.last_exit = f"killed by signal {-code}" if code != -1 else "exited"
            else:
                replica.last_exit = f"exited with code {code}"
            backoff = min(self.restart_backoff_max, 2.0**replica.restarts)
            self._note(
                replica,
                f"replica {replica.last_exit}; restarting in {backoff:g} s",
            )
            self.log.warning(
                "replica %s %s; restart in %g s", replica.name, replica.last_exit, backoff
            )
            replica.handle = None
            replica.state = CRASHED
            replica.restarts += 1
            replica.next_start = time.monotonic() + backoff

    async def _probe_all(self) -> None:
        """Start health probes that are due; they run beside the tick, never inside it.

        A replica's socket listens before its model is loaded, so a probe of a loading replica
        waits (up to the probe timeout) rather than failing fast: it must not stall the tick.
        """
        now = time.monotonic()
        for runtime in self._runtimes.values():
            for replica in runtime.replicas:
                if replica.handle is None or replica.probing:
                    continue
                if replica.state in (TERMINATING, RETIRING, CRASHED):
                    continue
                due = replica.state == STARTING or now - replica.last_probe >= PROBE_INTERVAL_READY
                if due:
                    replica.probing = True
                    self._spawn_task(self._probe(replica))

    async def _probe(self, replica: Replica) -> None:
        try:
            ok = await self._prober.ok(f"{replica.url}/health/ping")
        finally:
            replica.probing = False
            replica.last_probe = time.monotonic()
        if replica.handle is None or replica.state in (TERMINATING, RETIRING, CRASHED):
            return
        if ok:
            replica.probe_failures = 0
            if replica.state == STARTING:
                replica.state = READY
                replica.load_error = ""
                self._note(replica, "replica ready")
                self.kick()
            return
        replica.probe_failures += 1
        if replica.state == READY and replica.probe_failures >= PROBE_FAILURES_UNREADY:
            replica.state = STARTING
            self._note(replica, "replica not answering health checks")
            self.kick()

    def _routes(self) -> dict[str, Any]:
        routes: dict[str, Any] = {}
        for runtime in self._runtimes.values():
            if runtime.deleted:
                continue
            spec = runtime.deployment.spec
            routes[runtime.id] = {
                "phase": runtime.phase.value,
                "message": runtime.message,
                "accessType": spec.endpoint.access_type,
                "clients": dict(runtime.client_hashes),
                "replicas": [
                    {"name": r.name, "url": r.url}
                    for r in runtime.routed
                    if r.ready and r.state == READY
                ],
            }
        return routes

    async def _push_routes(self) -> bool:
        if self._gateway is None:
            return False
        return await self._gateway.push(self._routes())
