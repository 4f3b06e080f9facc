"""Replica processes: start one (sandboxed), probe it, notice its exit, stop it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

from ...core.config import ConfigStore
from ...core.errors import ValidationError
from ...core.models import DeploymentSpec, Predictor, utcnow
from ...serving.settings import model_server_args as metadata_args
from ...serving.settings import request_log_enabled
from ..rollout import LOAD_FAILURE_EXIT_CODE
from .adoption import mark_env
from .files import private_dir
from .gateway_process import child_env
from .processes import Prober, append_engine_line, bind_loopback, spawn
from .replica import (
    CRASHED,
    READY,
    RETIRING,
    STARTING,
    TERMINATING,
    DeploymentState,
    Replica,
    ReplicaSettings,
)
from .rows import ReplicaRows
from .sandbox import Sandbox

PROBE_INTERVAL_READY = 2.0
PROBE_FAILURES_UNREADY = 3

log = logging.getLogger(__name__)


def note(replica: Replica, text: str) -> None:
    """An engine event in the replica's log; a failed write (disk full) is counted, and the
    count is written with the next line that gets through, so no loss is silent."""
    if replica.dropped_lines:
        text = f"{text} ({replica.dropped_lines} earlier engine lines were lost)"
    try:
        append_engine_line(replica.log_file, text)
    except OSError as error:
        if not replica.dropped_lines:
            log.warning("cannot write the log of replica %s: %s", replica.name, error)
        replica.dropped_lines += 1
        return
    replica.dropped_lines = 0


def predictor_of(spec: DeploymentSpec, replica: Replica) -> Predictor:
    """The predictor of the spec a replica serves (the primary for one no predictor claims)."""
    return next((p for p in spec.predictors if p.name == replica.predictor), spec.predictor)


class ReplicaLauncher:
    """Runs model-server processes for replicas: the reconciler decides, this one acts.

    `kick` asks the reconciler for a tick (a replica became ready, or stopped answering).
    """

    def __init__(
        self,
        *,
        settings: ReplicaSettings,
        config_store: ConfigStore,
        rows: ReplicaRows,
        sandbox: Sandbox,
        prober: Prober,
        engine_id: str,
        request_log_dir: Path,
        resolve_model_uri: Callable[[str], Path],
        kick: Callable[[], None],
        log: Any = None,
    ) -> None:
        self.settings = settings
        self.config_store = config_store
        self.rows = rows
        self.sandbox = sandbox
        self.prober = prober
        self.engine_id = engine_id
        self.request_log_dir = request_log_dir
        self.resolve_model_uri = resolve_model_uri
        self.kick = kick
        self.log = log or logging.getLogger(__name__)

    async def start(
        self, state: DeploymentState, replica: Replica, others: Iterable[DeploymentState] = ()
    ) -> None:
        """Spawn the replica's model server on a socket bound here; `others` stay unseen."""
        spec = state.deployment.spec
        predictor = predictor_of(spec, replica)
        config = self.config_store.get()
        instance = config.instance_type(predictor.instance_type)
        threads = str(max(1, int(instance.cpu if instance else 1)))
        private_dir(replica.directory)
        replica.termination_log.unlink(missing_ok=True)
        bundle = self.resolve_model_uri(predictor.model_uri or "")
        sock = bind_loopback()
        replica.port = sock.getsockname()[1]
        # The intent first (no pid yet); a failed write does not stop the start: the process
        # carries its mark, so a restarted server finds it either way.
        await self.rows.write(replica.name, self.rows.record_of(replica))
        if state.deleted or replica not in state.replicas:
            sock.close()  # deleted (or retired) while the intent was being written
            return
        try:
            argv = [
                self.settings.python_executable,
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
                state.id,
                "--replica",
                replica.name,
                "--predictor",
                predictor.name,
                *metadata_args(predictor.metadata, request_log_dir=self.request_log_dir),
                "--log-max-bytes",
                str(self.settings.log_max_bytes),
                *self.settings.model_server_args,
            ]
            extra = {
                "PYTHONUNBUFFERED": "1",
                "OMP_NUM_THREADS": threads,
                "OPENBLAS_NUM_THREADS": threads,
                "MKL_NUM_THREADS": threads,
                "PREDICTIVE_UNIT_ID": predictor.name,
                "SELDON_DEPLOYMENT_ID": state.id,
                **{e.name: e.value for e in spec.env},
                # Last, so a user's env cannot change the mark adoption relies on.
                **mark_env(self.engine_id, state.id, replica.name, replica.port),
            }
            if replica.restarts:
                note(replica, f"restarting replica (restart {replica.restarts})")
            else:
                note(replica, f"starting replica for {bundle}")
            replica.handle = spawn(
                self._sandboxed(state, replica, bundle, argv, others),
                log_file=replica.log_file,
                env=self.sandbox.environment(child_env(extra)),
                cwd=replica.directory,
                pass_fds=(sock.fileno(),),
                sandboxed=self.sandbox.enabled,
            )
        finally:
            sock.close()
        replica.state = STARTING
        replica.start_time = utcnow()
        replica.probe_failures = 0
        await self.rows.write(replica.name, self.rows.record_of(replica))

    def _sandboxed(
        self,
        state: DeploymentState,
        replica: Replica,
        bundle: Path,
        argv: list[str],
        others: Iterable[DeploymentState],
    ) -> list[str]:
        """The model server's command line inside the sandbox (unchanged without one)."""
        if not self.sandbox.enabled:
            return argv
        writable = [replica.directory]
        if request_log_enabled(predictor_of(state.deployment.spec, replica).metadata):
            writable.append(private_dir(self.request_log_dir / state.id))
        hidden = []
        for other in others:
            if other is state:
                continue
            for each in other.deployment.spec.predictors:
                with contextlib.suppress(ValidationError):
                    if each.model_uri:
                        hidden.append(self.resolve_model_uri(each.model_uri))
        mounts = self.sandbox.mounts_for(
            bundle=bundle, writable=writable, secrets=self._secrets(), others=hidden
        )
        return self.sandbox.wrap(argv, mounts, chdir=replica.directory)

    def _secrets(self) -> list[Path]:
        """What no replica may see: state, config, Jupyter's runtime and config files."""
        from jupyter_core.paths import jupyter_config_path, jupyter_runtime_dir

        data_dir = self.request_log_dir.parent
        paths = [data_dir, Path(self.config_store.path)]
        paths += [Path(jupyter_runtime_dir()), *(Path(p) for p in jupyter_config_path())]
        return paths

    async def observe_exits(self, state: DeploymentState) -> None:
        """Notice replicas that ended, record why, schedule their restart with backoff."""
        for replica in state.replicas:
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
            backoff = self.settings.backoff(replica.restarts)
            note(replica, f"replica {replica.last_exit}; restarting in {backoff:g} s")
            self.log.warning(
                "replica %s %s; restart in %g s", replica.name, replica.last_exit, backoff
            )
            replica.handle = None
            replica.state = CRASHED
            replica.restarts += 1
            replica.next_start = time.monotonic() + backoff

    def due_probes(self, states: Iterable[DeploymentState]) -> list[Coroutine[Any, Any, None]]:
        """Health probes that are due, to run beside the tick, never inside it.

        A replica's socket listens before its model is loaded, so a probe of a loading replica
        waits (up to the probe timeout) rather than failing fast: it must not stall the tick.
        """
        now = time.monotonic()
        probes = []
        for state in states:
            for replica in state.replicas:
                if replica.handle is None or replica.probing:
                    continue
                if replica.state in (TERMINATING, RETIRING, CRASHED):
                    continue
                due = replica.state == STARTING or now - replica.last_probe >= PROBE_INTERVAL_READY
                if due:
                    replica.probing = True
                    probes.append(self.probe(replica))
        return probes

    async def probe(self, replica: Replica) -> None:
        """One health check: Starting becomes Ready; Ready that stops answering, Starting."""
        try:
            ok = await self.prober.ok(f"{replica.url}/health/ping")
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
                note(replica, "replica ready")
                self.kick()
            return
        replica.probe_failures += 1
        if replica.state == READY and replica.probe_failures >= PROBE_FAILURES_UNREADY:
            replica.state = STARTING
            note(replica, "replica not answering health checks")
            self.kick()

    async def terminate(self, state: DeploymentState, replica: Replica, *, drain: bool) -> None:
        """Stop a replica (after the drain, when asked) and forget it."""
        replica.state = TERMINATING
        if drain and self.settings.drain_seconds > 0:
            await asyncio.sleep(self.settings.drain_seconds)
        if replica.handle is not None:
            await replica.handle.terminate(self.settings.stop_grace_seconds)
            note(replica, "replica stopped")
        if replica in state.replicas:
            state.replicas.remove(replica)
        if not state.deleted:
            await self.rows.write(replica.name, None)
        self.kick()
