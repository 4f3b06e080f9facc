"""Local engine batch jobs through crashes: the runner or the server killed mid-job, and the
jobs table's order and cap."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from primehub_jupyter.core.jobs import MAX_JOBS_KEPT, JobPhase, JobRecord, JobSpec
from primehub_jupyter.core.models import utcnow
from primehub_jupyter.engines.local.store import Store

from .job_helpers import (
    assert_predictions,
    iris_rows,
    job_processes,
    read_table,
    runner_process,
    write_table,
)
from .serve_helpers import Serve, deployment_spec, wait_for

pytest.importorskip("pyarrow", reason="the batch extra (pandas, pyarrow)")

ROWS = 300_000
FINISHED = ("Succeeded", "Failed", "Cancelled")


@pytest.fixture
def serve(tmp_path: Path):
    server = Serve(tmp_path / "data", tmp_path / "serve.log")
    server.start()
    yield server
    server.cleanup()


def stopped_deployment(serve: Serve, bundle: Path) -> str:
    body = deployment_spec(bundle)
    body["spec"]["stop"] = True
    return serve.ok("POST", "deployments", body)["id"]


def job_of(serve: Serve, deployment_id: str, job_id: str) -> dict:
    return serve.ok("GET", f"deployments/{deployment_id}/jobs/{job_id}")


def mid_job(serve: Serve, deployment_id: str, job_id: str, after: int = 1) -> dict:
    """Wait until the job has finished `after` chunks and still runs."""

    def check() -> dict | None:
        job = job_of(serve, deployment_id, job_id)
        assert job["phase"] not in FINISHED, job
        return job if job["chunksDone"] >= after else None

    return wait_for(check, what=f"job {job_id} mid-way", limit=120)


def finished(serve: Serve, deployment_id: str, job_id: str) -> dict:
    return wait_for(
        lambda: (j := job_of(serve, deployment_id, job_id))["phase"] in FINISHED and j,
        what=f"job {job_id} to finish",
        limit=300,
    )


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_runner_killed_mid_job_resumes_without_lost_or_doubled_rows(
    serve: Serve, bundles, models, iris, tmp_path: Path, fmt: str
):
    deployment_id = stopped_deployment(serve, bundles["v1"])
    rows = iris_rows(iris[0], ROWS)
    source = write_table(tmp_path / f"in.{fmt}", rows)
    output = tmp_path / f"out.{fmt}"
    body = {"input": str(source), "output": str(output), "chunkRows": 1000}
    job = serve.ok("POST", f"deployments/{deployment_id}/jobs", body)
    before = mid_job(serve, deployment_id, job["id"], after=2)
    runner = runner_process(job["id"])
    assert runner is not None
    runner.send_signal(signal.SIGKILL)
    done = finished(serve, deployment_id, job["id"])
    assert done["phase"] == "Succeeded", done
    assert done["chunksDone"] == ROWS // 1000 > before["chunksDone"]
    assert (done["rowsRead"], done["rowsScored"], done["rowsFailed"]) == (ROWS, ROWS, 0)
    assert_predictions(read_table(output, fmt), rows, models["v1"])
    logs = serve.ok("GET", f"deployments/{deployment_id}/jobs/{job['id']}/logs?tail=all")
    assert any("killed by signal 9" in line for line in logs["lines"]), logs["lines"][-20:]
    assert job_processes(job["id"]) == []


@pytest.mark.parametrize("how", ["crash", "clean"])
def test_server_stopped_mid_job_then_the_job_completes(
    serve: Serve, bundles, models, iris, tmp_path: Path, how: str
):
    deployment_id = stopped_deployment(serve, bundles["v1"])
    rows = iris_rows(iris[0], ROWS)
    source = write_table(tmp_path / "in.csv", rows)
    output = tmp_path / "out.jsonl"
    body = {"input": str(source), "output": str(output), "chunkRows": 1000}
    job = serve.ok("POST", f"deployments/{deployment_id}/jobs", body)
    mid_job(serve, deployment_id, job["id"], after=2)
    runner = runner_process(job["id"])
    assert runner is not None
    if how == "crash":
        # Frozen, so it is certainly still running when the server comes back (not a timing).
        runner.send_signal(signal.SIGSTOP)
        serve.kill()
    else:
        serve.stop()  # a clean stop ends the runner between chunks
        assert job_processes(job["id"]) == []
    serve.start()
    if how == "crash":
        assert f"adopted job {job['id']}" in serve.log.read_text()
        assert runner.is_running()
        runner.send_signal(signal.SIGCONT)
    # One runner at most at any time: adopted after a crash, launched again after a stop.

    def one_runner_until_finished() -> dict | None:
        runners = [
            p for p in job_processes(job["id"]) if not p.info["cmdline"][0].endswith("bwrap")
        ]
        assert len(runners) <= 1, [p.info["cmdline"] for p in runners]
        state = job_of(serve, deployment_id, job["id"])
        return state if state["phase"] in FINISHED else None

    state = wait_for(one_runner_until_finished, what="the job to finish", limit=300)
    assert state["phase"] == "Succeeded", state
    assert (state["rowsRead"], state["rowsScored"]) == (ROWS, ROWS)
    assert_predictions(read_table(output, "jsonl"), rows, models["v1"])
    listed = serve.ok("GET", f"deployments/{deployment_id}/jobs")["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    assert job_processes(job["id"]) == []


def _job(deployment_id: str, index: int, phase: JobPhase) -> JobRecord:
    return JobRecord(
        id=f"j{index:010x}",
        deployment_id=deployment_id,
        spec=JobSpec(
            input="/in.csv",
            output=f"/out{index}.csv",
            format="csv",
            output_format="csv",
            predictor="predictor1",
        ),
        phase=phase,
        create_time=utcnow(),
        total_rows=None,
        progress=None,
        errors="",
    )


def test_the_store_keeps_the_newest_finished_jobs_and_every_live_one(tmp_path: Path):
    async def scenario() -> None:
        store = Store(tmp_path / "state.sqlite3")
        await store.open()
        live = _job("iris", 0, JobPhase.RUNNING)
        await store.insert_job(live)
        removed_all: list[str] = []
        for index in range(1, MAX_JOBS_KEPT + 5):
            _, removed = await store.insert_job(_job("iris", index, JobPhase.SUCCEEDED))
            removed_all += removed
            await store.insert_job(_job("other", 1000 + index, JobPhase.SUCCEEDED))
        kept = [s.job.id for s in await store.jobs() if s.job.deployment_id == "iris"]
        # The running one stays however old; of the finished, the newest 50.
        last = MAX_JOBS_KEPT + 4
        assert kept == [live.id] + [f"j{i:010x}" for i in range(last - MAX_JOBS_KEPT + 1, last + 1)]
        assert removed_all == [f"j{i:010x}" for i in range(1, last - MAX_JOBS_KEPT + 1)]
        others = [s for s in await store.jobs() if s.job.deployment_id == "other"]
        assert len(others) == MAX_JOBS_KEPT
        await store.delete_job(live.id)
        await store.close()
        # Reopened (an older database gains the table the same way): the rows are there.
        again = Store(tmp_path / "state.sqlite3")
        await again.open()
        assert live.id not in [s.job.id for s in await again.jobs()]
        await again.close()

    asyncio.run(scenario())


def test_the_jobs_table_is_added_to_an_older_database(tmp_path: Path):
    import sqlite3

    path = tmp_path / "state.sqlite3"
    with sqlite3.connect(path) as db:  # what a version without jobs left behind
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    os.chmod(path, 0o600)

    async def scenario() -> list[str]:
        store = Store(path)
        await store.open()
        await store.insert_job(_job("iris", 1, JobPhase.PENDING))
        ids = [s.job.id for s in await store.jobs()]
        await store.close()
        return ids

    assert asyncio.run(scenario()) == ["j0000000001"]
