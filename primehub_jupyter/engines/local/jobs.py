"""The local engine's batch jobs: one sandboxed runner per job, supervised, resumed, cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...core.config import ConfigStore
from ...core.errors import NotFound, Unchangeable, ValidationError
from ...core.jobs import JobPhase, JobRecord
from ...core.models import DeploymentRecord, utcnow
from ...core.quota import Usage, job_usage
from . import logs as logfiles
from .files import private_dir
from .gateway_process import child_env
from .job_process import (
    EXIT_FAILED,
    EXIT_LOAD_FAILED,
    EXIT_SUCCEEDED,
    EXIT_USAGE,
    JobCommand,
    job_command,
    job_dir,
    log_file,
    read_progress,
    resolved_spec,
    run_check,
    scan_jobs,
    with_progress,
    write_job_file,
)
from .processes import ProcessHandle, append_engine_line, spawn
from .replica import DeploymentState
from .sandbox import Sandbox
from .store import Store, StoredJob

# A job process that keeps dying (killed, out of memory) is relaunched this often, then Failed.
MAX_RELAUNCHES = 5
# Seconds between looks at live jobs (progress, exit), and between idle looks.
POLL_SECONDS = 0.25
IDLE_SECONDS = 2.0

log = logging.getLogger(__name__)


@dataclass
class LiveJob:
    """A job the engine knows: its row, its directory, and its process while one runs."""

    stored: StoredJob
    directory: Path
    handle: ProcessHandle | None = None
    cancelling: bool = False

    @property
    def job(self) -> JobRecord:
        return self.stored.job


def note(directory: Path, text: str) -> None:
    """An engine event in the job's log (a failed write must not stop supervision)."""
    with contextlib.suppress(OSError):
        append_engine_line(log_file(directory), text)


class LocalJobs:
    """Runs the local engine's jobs: `python -m primehub_jupyter.serving.batch` per job.

    A job is checked (`--check`, sandboxed) before its row is written, then launched in the
    replicas' sandbox. A loop reads each runner's progress.json into the job's record and
    decides what an exit means: 0 Succeeded, 1 or 3 Failed, killed: launched again (the
    runner resumes after its last finished chunk). A restarted engine adopts the runners an
    earlier one left (by their recorded pid, or their mark) and relaunches the others.
    """

    def __init__(
        self,
        *,
        store: Store,
        sandbox: Sandbox,
        config_store: ConfigStore,
        data_dir: Path,
        root_dir: str,
        engine_id: str,
        python: str,
        stop_grace_seconds: float,
        deployments: Callable[[], dict[str, DeploymentState]],
        resolve_model_uri: Callable[[str], Path],
        secrets: Callable[[], list[Path]],
        log: Any = None,
    ) -> None:
        self.store = store
        self.sandbox = sandbox
        self.config_store = config_store
        self.data_dir = data_dir
        self.root_dir = root_dir
        self.engine_id = engine_id
        self.python = python
        self.grace = stop_grace_seconds
        self.deployments = deployments
        self.resolve_model_uri = resolve_model_uri
        self.secrets = secrets
        self.log = log or logging.getLogger(__name__)
        self.jobs: dict[str, LiveJob] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    async def adopt(self) -> None:
        """Load the stored jobs; adopt runners an earlier server left, end the unwanted ones.

        A runner is found by its recorded pid and start time, else by its mark (spawned just
        before a crash, before its pid was written). A live job with no runner is launched
        again by the first tick: it resumes after its last finished chunk.
        """
        marked = await asyncio.to_thread(scan_jobs, self.engine_id)
        by_job: dict[str, list] = {}
        for process in marked:
            by_job.setdefault(process.job_id, []).append(process)
        unwanted: list[ProcessHandle] = []
        deployments = self.deployments()
        for stored in await self.store.jobs():
            job = stored.job
            live = LiveJob(stored, job_dir(self.data_dir, job.deployment_id, job.id))
            processes = by_job.pop(job.id, [])
            if job.deployment_id not in deployments:
                await self.store.delete_job(job.id)
                unwanted += [ProcessHandle(p.pid, p.create_time) for p in processes]
                continue
            self.jobs[job.id] = live
            if job.phase.finished:
                unwanted += [ProcessHandle(p.pid, p.create_time) for p in processes]
                continue
            processes.sort(key=lambda p: (p.pid != stored.pid, p.create_time))
            keep = None
            for process in processes:
                handle = ProcessHandle.adopt(process.pid, process.create_time)
                if keep is None and handle is not None:
                    keep = handle
                elif handle is not None:
                    unwanted.append(handle)
            if keep is None and stored.pid:
                keep = ProcessHandle.adopt(stored.pid, stored.create_time)
            if keep is not None:
                live.handle = keep
                stored.pid, stored.create_time = keep.pid, keep.create_time
                self.log.info("adopted job %s (pid %d)", job.id, keep.pid)
            else:
                stored.pid, stored.create_time = 0, 0.0
                # It may have finished while no server watched: then that is its end.
                progress = await asyncio.to_thread(read_progress, live.directory)
                reported = (progress or {}).get("phase")
                if reported in (JobPhase.SUCCEEDED.value, JobPhase.FAILED.value):
                    code = EXIT_SUCCEEDED if reported == JobPhase.SUCCEEDED.value else EXIT_FAILED
                    await self._ended(live, code, progress)
        for processes in by_job.values():  # jobs nobody knows (a deleted deployment's)
            unwanted += [ProcessHandle(p.pid, p.create_time) for p in processes]
        if unwanted:
            self.log.warning("ending %d job processes no job wants", len(unwanted))
        await asyncio.gather(*(h.terminate(self.grace) for h in unwanted), return_exceptions=True)

    def start(self) -> None:
        """Supervise in the background until `stop()`."""
        self._task = asyncio.create_task(self._run(), name="primehub-jobs")

    async def stop(self, *, stop_processes: bool) -> None:
        """End supervision; with `stop_processes`, stop the runners between chunks (SIGTERM).

        Their jobs stay Running in the store: the next start launches them again and they
        resume where they stopped.
        """
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if not stop_processes:
            return
        live = [j for j in self.jobs.values() if j.handle is not None and not j.job.phase.finished]
        await asyncio.gather(*(j.handle.terminate(self.grace) for j in live if j.handle))
        for each in live:
            note(each.directory, "job stopped with the server; it resumes when the server starts")
            each.handle = None
            each.stored.pid, each.stored.create_time = 0, 0.0
            each.stored.job = with_progress(each.job, read_progress(each.directory))
            with contextlib.suppress(Exception):
                await self.store.save_job(each.stored)

    def kick(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop supervising every other job
                self.log.exception("PrimeHub job supervision failed")
            busy = any(not j.job.phase.finished for j in self.jobs.values())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS if busy else IDLE_SECONDS)
            self._wake.clear()

    # ---- reading --------------------------------------------------------------------------

    def _find(self, deployment_id: str, job_id: str) -> LiveJob:
        live = self.jobs.get(job_id)
        if live is None or live.job.deployment_id != deployment_id:
            raise NotFound(f"deployment '{deployment_id}' has no job '{job_id}'")
        return live

    def of_deployment(self, deployment_id: str) -> list[JobRecord]:
        """The deployment's jobs, newest first."""
        mine = [j for j in self.jobs.values() if j.job.deployment_id == deployment_id]
        return [j.job for j in sorted(mine, key=lambda j: j.stored.seq, reverse=True)]

    def get(self, deployment_id: str, job_id: str) -> JobRecord:
        return self._find(deployment_id, job_id).job

    def running(self) -> list[JobRecord]:
        """Jobs Pending or Running on any deployment."""
        return [j.job for j in self.jobs.values() if not j.job.phase.finished]

    def usage(self, group: str) -> Usage:
        """What the group's running jobs hold of its quota (one replica each)."""
        config = self.config_store.get()
        total = Usage()
        states = self.deployments()
        for job in self.running():
            state = states.get(job.deployment_id)
            if state is not None and state.deployment.spec.group_name == group:
                total = total.add(job_usage(config, state.deployment, job))
        return total

    async def logs(self, deployment_id: str, job_id: str, tail: int | None) -> list[str]:
        live = self._find(deployment_id, job_id)
        return await asyncio.to_thread(logfiles.replica_tail, live.directory, tail)

    # ---- writing --------------------------------------------------------------------------

    async def create(self, deployment: DeploymentRecord, job: JobRecord) -> JobRecord:
        """Resolve and check the job, store it, start its runner; 422 when it cannot run."""
        state = self.deployments().get(deployment.id)
        if state is None or state.deleted:
            raise NotFound(f"deployment '{deployment.id}' not found")
        if state.quarantined:
            raise Unchangeable(state.message)
        spec = await asyncio.to_thread(resolved_spec, job.spec, self.root_dir, self.secrets())
        job = job.model_copy(update={"spec": spec, "errors": spec.errors})
        bundle = self._bundle(job)
        if not bundle.is_dir():
            raise ValidationError(
                f"the bundle of predictor '{job.spec.predictor}' is gone: {bundle}",
                details=[{"field": "predictor", "message": "bundle missing"}],
            )
        directory = job_dir(self.data_dir, job.deployment_id, job.id)
        await asyncio.to_thread(private_dir, directory)
        try:
            await asyncio.to_thread(write_job_file, directory, job)
            problem = await run_check(self._command(job, bundle, directory, check=True))
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, directory, True)
            raise
        if problem:
            await asyncio.to_thread(shutil.rmtree, directory, True)
            raise ValidationError(problem, details=[{"field": "input", "message": problem}])
        async with self._lock:
            try:
                seq, removed = await self.store.insert_job(job)
            except BaseException:
                await asyncio.to_thread(shutil.rmtree, directory, True)
                raise
            for old in removed:
                gone = self.jobs.pop(old, None)
                if gone is not None:
                    await asyncio.to_thread(shutil.rmtree, gone.directory, True)
            live = LiveJob(StoredJob(seq, job), directory)
            self.jobs[job.id] = live
            await self._launch(live)
        self.kick()
        return live.job

    async def delete(self, deployment_id: str, job_id: str) -> JobRecord:
        """Cancel a live job (SIGTERM, then Cancelled) or remove a finished one and its files
        (never the output)."""
        live = self._find(deployment_id, job_id)
        async with self._lock:
            if not live.job.phase.finished:
                await self._cancel(live)
                return live.job
            await self.store.delete_job(job_id)
            self.jobs.pop(job_id, None)
        await asyncio.to_thread(shutil.rmtree, live.directory, True)
        return live.job

    async def remove_deployment(self, deployment_id: str) -> None:
        """End every job of a deleted deployment (its rows are gone with it)."""
        mine = [j for j in self.jobs.values() if j.job.deployment_id == deployment_id]
        for live in mine:
            live.cancelling = True
        await asyncio.gather(
            *(j.handle.terminate(self.grace) for j in mine if j.handle is not None),
            return_exceptions=True,
        )
        strays = await asyncio.to_thread(scan_jobs, self.engine_id, deployment_id)
        await asyncio.gather(
            *(ProcessHandle(s.pid, s.create_time).terminate(self.grace) for s in strays),
            return_exceptions=True,
        )
        for live in mine:
            self.jobs.pop(live.job.id, None)

    # ---- processes ------------------------------------------------------------------------

    def _bundle(self, job: JobRecord) -> Path:
        """The bundle of the job's predictor at the job's revision (the current spec's when
        that revision left the history): a resumed job scores with the model it began with."""
        state = self.deployments()[job.deployment_id]
        record = state.deployment
        entry = next((h for h in record.status.history if h.revision == job.revision), None)
        spec = entry.spec if entry is not None else record.spec
        predictor = next((p for p in spec.predictors if p.name == job.spec.predictor), None)
        if predictor is None or not predictor.model_uri:
            predictor = next(p for p in record.spec.predictors if p.name == job.spec.predictor)
        return self.resolve_model_uri(predictor.model_uri or "")

    def _command(
        self, job: JobRecord, bundle: Path, directory: Path, *, check: bool = False
    ) -> JobCommand:
        states = self.deployments()
        state = states[job.deployment_id]
        spec = state.deployment.spec
        predictor = next((p for p in spec.predictors if p.name == job.spec.predictor), None)
        instance = self.config_store.get().instance_type(
            predictor.instance_type if predictor is not None else spec.predictor.instance_type
        )
        threads = str(max(1, int(instance.cpu if instance else 1)))
        extra = {
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": threads,
            "OPENBLAS_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "SELDON_DEPLOYMENT_ID": job.deployment_id,
            "PREDICTIVE_UNIT_ID": job.spec.predictor,
            **{e.name: e.value for e in spec.env},
        }
        others = []
        for other in states.values():
            if other is state:
                continue
            for each in other.deployment.spec.predictors:
                with contextlib.suppress(ValidationError):
                    if each.model_uri:
                        others.append(self.resolve_model_uri(each.model_uri))
        return job_command(
            python=self.python,
            sandbox=self.sandbox,
            engine_id=self.engine_id,
            bundle=bundle,
            job=job,
            directory=directory,
            env=child_env(extra),
            secrets=self.secrets(),
            others=others,
            check=check,
        )

    async def _launch(self, live: LiveJob) -> None:
        """Start (or start again: it resumes) the job's runner; Failed when it cannot start."""
        job = live.job
        if live.cancelling or job.phase.finished or job.deployment_id not in self.deployments():
            return
        try:
            command = self._command(job, self._bundle(job), live.directory)
            if live.stored.restarts:
                note(
                    live.directory,
                    f"starting the job again (restart {live.stored.restarts}); it resumes "
                    f"after chunk {job.chunks_done}",
                )
            else:
                note(
                    live.directory, f"starting job {job.id}: {job.spec.input} -> {job.spec.output}"
                )
            handle = spawn(
                command.argv,
                log_file=log_file(live.directory),
                env=command.env,
                cwd=command.cwd,
                sandboxed=self.sandbox.enabled,
            )
        except (OSError, KeyError, StopIteration, ValidationError) as error:
            await self._finish(live, JobPhase.FAILED, f"the job could not start: {error}")
            return
        live.handle = handle
        live.stored.pid, live.stored.create_time = handle.pid, handle.create_time
        live.stored.job = job.model_copy(
            update={"phase": JobPhase.RUNNING, "start_time": job.start_time or utcnow()}
        )
        await self.store.save_job(live.stored)
        self.log.info("job %s of %s started (pid %d)", job.id, job.deployment_id, handle.pid)

    async def _finish(self, live: LiveJob, phase: JobPhase, message: str) -> None:
        live.handle = None
        live.stored.pid, live.stored.create_time = 0, 0.0
        live.stored.job = live.job.model_copy(
            update={
                "phase": phase,
                "message": message,
                "finish_time": live.job.finish_time or utcnow(),
            }
        )
        note(live.directory, f"job {phase.value.lower()}{': ' + message if message else ''}")
        await self.store.save_job(live.stored)
        self.log.info("job %s: %s %s", live.job.id, phase.value, message)

    async def _cancel(self, live: LiveJob) -> None:
        live.cancelling = True
        code = None
        if live.handle is not None:
            await live.handle.terminate(self.grace)
            code = live.handle.exit_code()
        progress = await asyncio.to_thread(read_progress, live.directory)
        live.stored.job = with_progress(live.job, progress)
        if code == EXIT_SUCCEEDED and progress and progress.get("phase") == "Succeeded":
            await self._finish(live, JobPhase.SUCCEEDED, live.job.message)  # done meanwhile
            return
        await self._finish(live, JobPhase.CANCELLED, "cancelled")

    async def tick(self) -> None:
        """One look at every live job: progress in, exits decided, runners (re)started."""
        async with self._lock:
            for live in list(self.jobs.values()):
                if live.job.phase.finished or live.cancelling:
                    continue
                if live.handle is None:
                    await self._launch(live)
                    continue
                progress = await asyncio.to_thread(read_progress, live.directory)
                code = live.handle.exit_code()
                if code is None:
                    updated = with_progress(live.job, progress)
                    if updated != live.job:
                        live.stored.job = updated
                        await self.store.save_job(live.stored)
                    continue
                await asyncio.to_thread(live.handle.kill_leftovers)
                progress = await asyncio.to_thread(read_progress, live.directory)
                await self._ended(live, code, progress)

    async def _ended(self, live: LiveJob, code: int, progress: dict[str, Any] | None) -> None:
        """What the runner's exit means for the job."""
        live.stored.job = with_progress(live.job, progress)
        reported = progress.get("phase") if progress else None
        message = (progress or {}).get("message") or ""
        if not isinstance(message, str):
            message = ""
        if code == EXIT_SUCCEEDED or (code < 0 and reported == JobPhase.SUCCEEDED.value):
            await self._finish(live, JobPhase.SUCCEEDED, message)
            return
        if code == EXIT_FAILED or (code < 0 and reported == JobPhase.FAILED.value):
            await self._finish(live, JobPhase.FAILED, message or self._last_line(live))
            return
        if code == EXIT_LOAD_FAILED:
            reason = message or self._last_line(live)
            await self._finish(live, JobPhase.FAILED, f"the model failed to load: {reason}")
            return
        if code == EXIT_USAGE:
            reason = f"the job runner refused its arguments: {self._last_line(live)}"
            await self._finish(live, JobPhase.FAILED, reason)
            return
        why = f"killed by signal {-code}" if code < -1 else f"ended (exit {code})"
        if code == -1:
            why = "ended while the server was away"
        if live.stored.restarts >= MAX_RELAUNCHES:
            await self._finish(
                live, JobPhase.FAILED, f"the job process {why}, {MAX_RELAUNCHES + 1} times"
            )
            return
        note(live.directory, f"job process {why}; starting it again")
        self.log.warning("job %s process %s; relaunching", live.job.id, why)
        live.handle = None
        live.stored.restarts += 1
        await self._launch(live)

    def _last_line(self, live: LiveJob) -> str:
        lines = [
            line
            for line in logfiles.replica_tail(live.directory, 20)
            if "[engine]" not in line and line.strip()
        ]
        return lines[-1] if lines else "see the job's logs"


class JobMethods:
    """The Engine's batch-job methods, for LocalEngine to mix in (its `_jobs` is set on start)."""

    _jobs: LocalJobs | None = None

    @property
    def job_manager(self) -> LocalJobs:
        assert self._jobs is not None, "the engine is not started"
        return self._jobs

    def _known(self, deployment_id: str) -> LocalJobs:
        manager = self.job_manager
        state = manager.deployments().get(deployment_id)
        if state is None or state.deleted:
            raise NotFound(f"deployment '{deployment_id}' not found")
        return manager

    async def create_job(self, deployment: DeploymentRecord, job: JobRecord) -> JobRecord:
        return await self._known(deployment.id).create(deployment, job)

    async def list_jobs(self, deployment_id: str) -> list[JobRecord]:
        return self._known(deployment_id).of_deployment(deployment_id)

    async def get_job(self, deployment_id: str, job_id: str) -> JobRecord:
        return self._known(deployment_id).get(deployment_id, job_id)

    async def delete_job(self, deployment_id: str, job_id: str) -> JobRecord:
        return await self._known(deployment_id).delete(deployment_id, job_id)

    async def job_logs(self, deployment_id: str, job_id: str, tail: int | None) -> list[str]:
        return await self._known(deployment_id).logs(deployment_id, job_id, tail)

    async def running_jobs(self) -> list[JobRecord]:
        return self._jobs.running() if self._jobs is not None else []
