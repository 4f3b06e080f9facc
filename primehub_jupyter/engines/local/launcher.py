"""Replica processes: start one (sandboxed), probe it, notice its exit, stop it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

from ...core.config import ConfigStore
from ...core.errors import ValidationError
from ...core.models import DeploymentSpec, Predictor, utcnow
from ...serving.settings import model_server_args as metadata_args
from ...serving.settings import request_log_enabled
from ...serving.template import EXIT_CODE_FILE
from ..rollout import LOAD_FAILURE_EXIT_CODE
from .adoption import mark_env
from .files import private_dir
from .gateway_process import child_env
from .processes import Prober, ProcessHandle, append_engine_line, bind_loopback, spawn
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
from .templates import (
    TemplateProcess,
    Templates,
    replica_mark_env,
    template_mark_env,
    uses_templates,
)

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


def secret_paths(data_dir: Path, config_file: Path) -> list[Path]:
    """What no replica or job may see: state, config, Jupyter's runtime and config files."""
    from jupyter_core.paths import jupyter_config_path, jupyter_runtime_dir

    paths = [data_dir, config_file]
    paths += [Path(jupyter_runtime_dir()), *(Path(p) for p in jupyter_config_path())]
    return paths


# The niceness of a shadow predictor's processes (inherited by the model server and its forks).
SHADOW_NICENESS = 10


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
        self.templates = Templates(logger=self.log)
        self._waits: set[asyncio.Task[None]] = set()  # templates loading

    async def start(
        self, state: DeploymentState, replica: Replica, others: Iterable[DeploymentState] = ()
    ) -> None:
        """Spawn the replica's model server on a socket bound here; `others` stay unseen.

        With a template for its deployment template (templates.py), the replica is forked from
        it instead; while the template loads, this returns with no process (the next tick
        after it is ready starts the replica), and a template that failed to load leaves its
        replicas to start the usual way, which reports the failure as ever.
        """
        predictor = predictor_of(state.deployment.spec, replica)
        bundle = self.resolve_model_uri(predictor.model_uri or "")
        template = None
        if uses_templates(self.settings.templates, predictor):
            template = self.templates.get(state.id, replica.template)
            if template is None or (template.ended and not template.failed):
                self._start_template(state, replica, predictor, bundle, others)
                return
            if template.failed:
                template = None
            elif not template.ready:
                return
        private_dir(replica.directory)
        replica.termination_log.unlink(missing_ok=True)
        (replica.directory / EXIT_CODE_FILE).unlink(missing_ok=True)
        sock = bind_loopback()
        replica.port = sock.getsockname()[1]
        # The intent first (no pid yet); a failed write does not stop the start: the process
        # carries its mark, so a restarted server finds it either way.
        await self.rows.write(replica.name, self.rows.record_of(replica))
        if state.deleted or replica not in state.replicas:
            sock.close()  # deleted (or retired) while the intent was being written
            return
        try:
            if replica.restarts:
                note(replica, f"restarting replica (restart {replica.restarts})")
            else:
                note(replica, f"starting replica for {bundle}")
            if template is not None:
                replica.handle = await self._fork(template, replica, sock)
            else:
                argv, extra = self._command(
                    state, predictor, bundle, "primehub_jupyter.serving", replica
                )
                argv += ["--fd", str(sock.fileno())]
                extra.update(mark_env(self.engine_id, state.id, replica.name, replica.port))
                writable = [replica.directory]
                replica.handle = spawn(
                    self._sandboxed(
                        state, predictor, bundle, argv, others, writable, replica.directory
                    ),
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
        if template is not None:
            self.kick()  # probe it now: a forked replica answers within milliseconds

    def _command(
        self,
        state: DeploymentState,
        predictor: Predictor,
        bundle: Path,
        module: str,
        replica: Replica | None = None,
        directory: Path | None = None,
    ) -> tuple[list[str], dict[str, str]]:
        """The argv (without --fd) and environment of a replica's model server, or of a
        template (no replica; its log and termination log in `directory`)."""
        if replica is not None:
            log_file, termination_log = replica.log_file, replica.termination_log
            named = ["--replica", replica.name]
        else:
            assert directory is not None
            log_file, termination_log = TemplateProcess.files(directory)
            named = []
        spec = state.deployment.spec
        instance = self.config_store.get().instance_type(predictor.instance_type)
        threads = str(max(1, int(instance.cpu if instance else 1)))
        argv = [
            self.settings.python_executable,
            "-m",
            module,
            str(bundle),
            "--log-file",
            str(log_file),
            "--termination-log",
            str(termination_log),
            "--deployment",
            state.id,
            *named,
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
        }
        return argv, extra

    def _start_template(
        self,
        state: DeploymentState,
        replica: Replica,
        predictor: Predictor,
        bundle: Path,
        others: Iterable[DeploymentState],
    ) -> None:
        """Spawn the template of the replica's deployment template, in the sandbox its replicas
        would get (every replica directory of the deployment writable), and wait for it aside."""
        directory = replica.directory.parent.parent / "templates" / replica.template
        private_dir(replica.directory.parent)
        private_dir(directory)
        log_file, termination_log = TemplateProcess.files(directory)
        termination_log.unlink(missing_ok=True)
        module = "primehub_jupyter.serving.template"
        argv, extra = self._command(state, predictor, bundle, module, directory=directory)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        theirs.set_inheritable(True)
        env = self.sandbox.environment(child_env(extra))
        marks = template_mark_env(self.engine_id, state.id, len(replica.name) + 3)
        for key in marks:  # the marks last, the replica name's slot at the very end
            env.pop(key, None)
        env.update(marks)
        writable = [replica.directory.parent, directory]
        try:
            handle = spawn(
                self._sandboxed(
                    state,
                    predictor,
                    bundle,
                    [*argv, "--fd", str(theirs.fileno())],
                    others,
                    writable,
                    directory,
                ),
                log_file=log_file,
                env=env,
                cwd=directory,
                pass_fds=(theirs.fileno(),),
                sandboxed=self.sandbox.enabled,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        process = TemplateProcess(state.id, replica.template, directory, handle, ours)
        self.templates.add(process)
        note(replica, "loading the model once in a replica template; replicas fork from it")
        self.log.info(
            "replica template %s-%s started (pid %d)", state.id, replica.template, handle.pid
        )

        async def wait() -> None:
            await asyncio.to_thread(process.wait_ready, self.settings.deploy_timeout)
            if process.failed:
                if not process.ended:
                    await process.handle.terminate(self.settings.stop_grace_seconds)
                note(replica, f"replica template failed ({process.failed}); starting it alone")
                self.log.warning(
                    "replica template %s-%s failed: %s", state.id, replica.template, process.failed
                )
            self.kick()

        task = asyncio.create_task(wait())
        self._waits.add(task)
        task.add_done_callback(self._waits.discard)

    async def _fork(
        self, template: TemplateProcess, replica: Replica, sock: socket.socket
    ) -> ProcessHandle:
        request = {
            "replica": replica.name,
            "directory": str(replica.directory),
            "log_file": str(replica.log_file),
            "termination_log": str(replica.termination_log),
            "environment": replica_mark_env(replica.name, replica.port),
        }
        async with template.lock:
            try:
                return await asyncio.to_thread(template.fork, request, sock)
            except OSError:
                # A template that cannot fork is not asked again: the next start makes a new one.
                self.templates.discard(template)
                await template.handle.terminate(self.settings.stop_grace_seconds)
                raise

    def unwanted_templates(
        self, states: Iterable[DeploymentState]
    ) -> list[Coroutine[Any, Any, None]]:
        """Stops of templates no deployment needs any more (to run beside the tick).

        A template is needed while a replica of it runs (a rollout's old replicas serve until
        the new ones are ready, and in a sandbox they live in the template's PID namespace) and
        while it is its deployment's current template: a deployment scaled to zero keeps it
        warm; a stopped or deleted one does not.
        """
        wanted = set()
        for state in states:
            if state.deleted:
                continue
            wanted |= {(state.id, r.template) for r in state.replicas if r.handle is not None}
            if not state.quarantined and not state.deployment.spec.stop:
                wanted |= {(state.id, p.template) for p in state.predictors.values() if p.template}
        return self.templates.unwanted(wanted, self.settings.stop_grace_seconds)

    async def stop_templates(self) -> None:
        """Stop every template (engine shutdown)."""
        await self.templates.stop_all(self.settings.stop_grace_seconds)

    def _sandboxed(
        self,
        state: DeploymentState,
        predictor: Predictor,
        bundle: Path,
        argv: list[str],
        others: Iterable[DeploymentState],
        writable: list[Path],
        chdir: Path,
    ) -> list[str]:
        """The model server's command line inside the sandbox (unchanged without one); a
        shadow's runs at a lower CPU priority."""
        nice = shutil.which("nice")
        # A shadow's answers are never returned: on a busy machine the primary's replicas get
        # the CPU first, so mirroring costs the callers as little as it can. `nice` execs the
        # sandbox, so every process below it (and every fork) inherits the priority.
        lower = [nice, "-n", str(SHADOW_NICENESS)] if predictor.shadow and nice else []
        if not self.sandbox.enabled:
            return [*lower, *argv]
        writable = list(writable)
        if request_log_enabled(predictor.metadata):
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
        return [*lower, *self.sandbox.wrap(argv, mounts, chdir=chdir)]

    def _secrets(self) -> list[Path]:
        return secret_paths(self.request_log_dir.parent, Path(self.config_store.path))

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
