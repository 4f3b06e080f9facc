"""A batch job's runner process: its files, sandboxed command, check run, marks and progress."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from ...core.errors import ValidationError
from ...core.jobs import PROGRESS_FIELDS, JobRecord, JobSpec
from .adoption import DEPLOYMENT_ENV, ENGINE_ID_ENV
from .files import write_private
from .logs import LOG_NAME
from .processes import CHILD_UMASK
from .sandbox import Mounts, Sandbox

# The mark a job process carries besides the engine's and the deployment's (adoption.py).
JOB_ENV = "PRIMEHUB_JOB_ID"
RUNNER_MODULE = "primehub_jupyter.serving.batch"
JOB_FILE = "job.json"
PROGRESS_FILE = "progress.json"
# Seconds a submission's --check may take (it reads the input's first rows, not the model).
CHECK_TIMEOUT = 120.0
# The runner's exit codes (serving/batch.py): what each says about the job.
EXIT_SUCCEEDED, EXIT_FAILED, EXIT_USAGE, EXIT_LOAD_FAILED = 0, 1, 2, 3
# progress.json keys the engine copies into the JobRecord (the runner's own accounting; the
# engine decides the phase itself).
PROGRESS_KEYS = tuple(k for k in PROGRESS_FIELDS if k != "phase")


def job_dir(data_dir: Path, deployment_id: str, job_id: str) -> Path:
    """Where a job's job.json, progress.json, resume state and log live."""
    return data_dir / "deployments" / deployment_id / "jobs" / job_id


def log_file(directory: Path) -> Path:
    """The job's log (the replicas' file name and line format, so logs.py reads it)."""
    return directory / LOG_NAME


def write_job_file(directory: Path, job: JobRecord) -> None:
    """DIR/job.json: `{"job": <JobRecord>}`, what the runner reads."""
    write_private(directory / JOB_FILE, json.dumps({"job": job.to_json()}))


def read_progress(directory: Path) -> dict[str, Any] | None:
    """The runner's last progress.json, or None when there is none (yet) or it is unreadable."""
    try:
        data = json.loads((directory / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def with_progress(job: JobRecord, progress: dict[str, Any] | None) -> JobRecord:
    """`job` with the runner's counters; fields that do not validate are left as they were."""
    if not progress:
        return job
    merged = job.to_json()
    merged.update({k: progress[k] for k in PROGRESS_KEYS if k in progress})
    try:
        return JobRecord.model_validate(merged)
    except ValueError:
        return job


def resolve_path(uri: str, root_dir: str | None, field: str, what: str = "") -> Path:
    """A local absolute path for a plain path or file:// URI (relative to `root_dir`), or a
    validation error naming `field` (`what` names it in the message; default: `field`)."""
    if "://" in uri:
        scheme = uri.split("://", 1)[0]
        if scheme != "file":
            raise ValidationError(
                f"'{scheme}://' is not supported by the local engine for {what or field}; use "
                "a local path or a file:// URI",
                details=[{"field": field, "message": "unsupported scheme"}],
            )
        uri = uri[len("file://") :]
    path = Path(uri).expanduser()
    if not path.is_absolute():
        path = Path(root_dir or os.getcwd()) / path
    return Path(os.path.abspath(path))


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError(message, details=[{"field": field, "message": message}])


def _inside(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def resolved_spec(spec: JobSpec, root_dir: str, secrets: list[Path]) -> JobSpec:
    """The spec with absolute input and output paths, after the checks a path alone allows.

    The input must be a file, the output's directory must exist, and the output be free
    (unless overwrite); neither may lie in what the sandbox hides (the engine's state).
    """
    source = resolve_path(spec.input, root_dir, "input")
    target = resolve_path(spec.output, root_dir, "output")
    real_secrets = [Path(os.path.realpath(s)) for s in secrets]
    for field, path in (("input", source), ("output", target)):
        real = Path(os.path.realpath(path))
        if any(_inside(real, s) for s in real_secrets):
            raise _invalid(field, f"{field} '{path}' is inside the server's private files")
    if not source.is_file():
        what = "is a directory, not a file" if source.is_dir() else "does not exist"
        raise _invalid("input", f"input file '{source}' {what}")
    if not target.parent.is_dir():
        raise _invalid("output", f"the output's directory '{target.parent}' does not exist")
    if target.is_dir():
        raise _invalid("output", f"output '{target}' is a directory")
    if os.path.realpath(source) == os.path.realpath(target):
        raise _invalid("output", "the output must not be the input file")
    if target.exists() and not spec.overwrite:
        raise _invalid(
            "output", f"output '{target}' exists; set overwrite to replace it, or choose another"
        )
    return spec.model_copy(update={"input": str(source), "output": str(target)})


@dataclass
class JobCommand:
    """How one job's runner is started: argv (sandboxed), environment, working directory."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path


def job_command(
    *,
    python: str,
    sandbox: Sandbox,
    engine_id: str,
    bundle: Path,
    job: JobRecord,
    directory: Path,
    env: dict[str, str],
    secrets: list[Path],
    others: list[Path],
    check: bool = False,
) -> JobCommand:
    """The runner's command line in the replicas' sandbox: the bundle and input read-only,
    the job's directory and the output's directory writable, the server's files hidden."""
    argv = [python, "-m", RUNNER_MODULE, str(bundle), "--job-dir", str(directory)]
    argv += ["--check"] if check else ["--log-file", str(log_file(directory))]
    source, target = Path(job.spec.input), Path(job.spec.output)
    mounts = sandbox.mounts_for(
        bundle=bundle, writable=[directory, target.parent], secrets=secrets, others=others
    )
    if sandbox.enabled:
        real_input = Path(os.path.realpath(source))
        if not any(_inside(real_input, w) for w in mounts.writable):
            mounts = Mounts(
                read_only=[*mounts.read_only, real_input],
                writable=mounts.writable,
                hidden=mounts.hidden,
            )
    marks = {
        ENGINE_ID_ENV: engine_id,
        DEPLOYMENT_ENV: job.deployment_id,
        JOB_ENV: job.id,
    }
    return JobCommand(
        argv=sandbox.wrap(argv, mounts, chdir=directory),
        env=sandbox.environment({**env, **marks}),
        cwd=directory,
    )


async def run_check(command: JobCommand, timeout: float = CHECK_TIMEOUT) -> str | None:
    """Run the runner's --check; None when the job can run, else the runner's reason."""
    process = await asyncio.create_subprocess_exec(
        *command.argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=command.env,
        cwd=command.cwd,
        start_new_session=True,
        umask=CHILD_UMASK,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        return f"the job's input could not be checked within {timeout:g} s"
    finally:
        if process.returncode is None:  # cancelled: leave nothing behind
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
    if process.returncode == EXIT_SUCCEEDED:
        return None
    lines = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
    lines = lines or [line for line in out.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"the job check failed (exit {process.returncode})"


@dataclass(frozen=True)
class MarkedJob:
    """A live job process this engine started (the top one: a sandbox's launcher)."""

    pid: int
    create_time: float
    deployment_id: str
    job_id: str


def scan_jobs(engine: str, deployment_id: str | None = None) -> list[MarkedJob]:
    """Every live job process marked by `engine` (optionally of one deployment).

    Blocking (reads /proc): call it off the event loop.
    """
    needle = f"{JOB_ENV}=".encode()
    mine = f"{ENGINE_ID_ENV}={engine}".encode()
    found: dict[int, tuple[MarkedJob, int]] = {}
    for pid in psutil.pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        if needle not in raw or mine not in raw:
            continue
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            env = proc.environ()
            created, parent = proc.create_time(), proc.ppid()
        except (psutil.Error, OSError):
            continue
        if env.get(ENGINE_ID_ENV) != engine or not env.get(JOB_ENV):
            continue
        marked = MarkedJob(pid, created, env.get(DEPLOYMENT_ENV, ""), env[JOB_ENV])
        if deployment_id is None or marked.deployment_id == deployment_id:
            found[pid] = (marked, parent)
    return [
        marked
        for marked, parent in found.values()
        if not (parent in found and found[parent][0].job_id == marked.job_id)
    ]
