"""Batch jobs on the KubernetesEngine, through their phases on the emulated API and cluster.

The Job's pod runs for real in the simulated kubelet: the model initializer fetches the
bundle (a real sklearn one), jobrun fetches the input, runs a stand-in runner
(tests/kubernetes/jobrunner.py, whose gates hold a job in a phase) or the real one, and
delivers the output. The engine acts with the Jupyter account's RBAC (deploy/base/rbac.yaml).
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from primehub_jupyter.core.errors import NotFound, ValidationError
from primehub_jupyter.core.jobs import JobPhase, JobRecord, JobSpec
from primehub_jupyter.core.models import utcnow
from primehub_jupyter.engines.kubernetes.engine import KubernetesEngine

from ..conftest import wait_until
from .conftest import phdeployment
from .harness import NAMESPACE, FakeCluster
from .storage import S3_ACCESS_KEY, S3_SECRET_KEY
from .test_engine import make_engine

RUNNER = str(Path(__file__).with_name("jobrunner.py"))
ROWS = ["sepal_length,sepal_width", "5.1,3.5", "bad", "6.3,2.9", "4.9,3.0", "7.7,2.6"]
IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture
def bundle_dir(bundles: dict[str, Path], tmp_path: Path) -> Path:
    """The iris v1 bundle (a fitted LogisticRegression, tests/conftest.py) on the models claim."""
    return Path(shutil.copytree(bundles["v1"], tmp_path / "bundle"))


@pytest.fixture
def operator_overrides() -> dict[str, Any]:
    return {"storageSecret": "model-storage"}


@pytest.fixture
def engine(
    cluster: FakeCluster, operator, groups_file, tmp_path, bundle_dir, jp_asyncio_loop
) -> Iterator[KubernetesEngine]:
    cluster.sim.module_overrides["primehub_jupyter.serving.batch"] = RUNNER
    cluster.sim.pvcs["models"] = bundle_dir.parent
    data = tmp_path / "data"
    data.mkdir()
    cluster.sim.pvcs["data"] = data
    secret = {
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "AWS_ENDPOINT_URL": f"{cluster.network}/s3",
    }
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "model-storage"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in secret.items()},
        }
    )
    cluster.apply(phdeployment("iris", modelURI=f"pvc://models/{bundle_dir.name}"))
    cluster.wait_phase("iris", "Deployed")
    built = make_engine(cluster, groups_file, tmp_path, job_sweep_seconds=0.2)
    jp_asyncio_loop.run_until_complete(built.start())
    try:
        yield built
    finally:
        jp_asyncio_loop.run_until_complete(built.shutdown())


def job(job_id: str, **fields: Any) -> JobRecord:
    spec = {
        "input": "pvc://data/in.csv",
        "output": "pvc://data/out/scores.csv",
        "format": "csv",
        "outputFormat": "csv",
        "predictor": "predictor1",
        **fields,
    }
    return JobRecord(
        id=job_id,
        deployment_id="iris",
        user="alice",
        revision=1,
        spec=JobSpec.model_validate(spec),
        create_time=utcnow(),
    )


async def reach(engine: KubernetesEngine, job_id: str, phase: JobPhase, **more: Any) -> JobRecord:
    async def reached() -> JobRecord | None:
        current = await engine.get_job("iris", job_id)
        if current.phase is phase and all(getattr(current, k) == v for k, v in more.items()):
            return current
        return None

    return await wait_until(reached, what=f"job {job_id} {phase.value} {more}")


async def test_a_job_runs_through_its_phases_and_outlives_its_job(engine, cluster, tmp_path):
    data = tmp_path / "data"
    (data / "in.csv").write_text("\n".join(ROWS) + "\n")
    (data / "in.csv.hold").touch()  # the runner waits after its first chunk
    deployment = await engine.get("iris")
    created = await engine.create_job(deployment, job("j00000000a1"))
    assert created.phase is JobPhase.PENDING
    (live,) = cluster.objects("jobs")
    assert live["metadata"]["name"] == "iris-j00000000a1"
    assert live["spec"]["backoffLimit"] == 2 and live["spec"]["ttlSecondsAfterFinished"] == 86400

    running = await reach(engine, "j00000000a1", JobPhase.RUNNING, rows_read=2)
    assert (running.rows_scored, running.rows_failed, running.chunks_done) == (1, 1, 1)
    assert running.start_time and not running.finish_time
    assert [j.id for j in await engine.running_jobs()] == ["j00000000a1"]
    # A job pod is never taken for a replica.
    assert all("j00000000a1" not in name for name in await engine.replica_names("iris"))

    (data / "in.csv.hold").unlink()
    done = await reach(engine, "j00000000a1", JobPhase.SUCCEEDED)
    assert (done.rows_read, done.rows_scored, done.rows_failed) == (5, 4, 1)
    assert done.progress == 1 and done.finish_time and done.message == ""
    assert await engine.running_jobs() == []
    output = (data / "out" / "scores.csv").read_text().splitlines()
    assert output[0] == "sepal_length,sepal_width,prediction,request_id" and len(output) == 5
    errors = [
        json.loads(x) for x in (data / "out/scores.csv.errors.jsonl").read_text().splitlines()
    ]
    assert errors == [{"line": 3, "reason": "not a number"}]
    logs = await engine.job_logs("iris", "j00000000a1", None)
    assert any("scoring /" in line for line in logs) and any("delivering" in x for x in logs)
    assert not any("primehub-job-progress" in line for line in logs)
    assert len(await engine.job_logs("iris", "j00000000a1", 2)) == 2

    # The finished run was recorded; the TTL controller then removes the Job and its pod.
    records = cluster.find("configmaps", "iris-jobs")
    assert JobRecord.model_validate_json(records["data"]["j00000000a1"]).phase == "Succeeded"
    cluster.patch("jobs", "iris-j00000000a1", {"spec": {"ttlSecondsAfterFinished": 0}})
    cluster.wait(lambda: not cluster.objects("jobs"), "the TTL controller")
    kept = await engine.get_job("iris", "j00000000a1")
    assert kept.phase is JobPhase.SUCCEEDED and kept.rows_scored == 4
    assert "pod is gone" in (await engine.job_logs("iris", "j00000000a1", None))[0]

    # A second run on the same output is refused by the job itself (no overwrite).
    (data / "in.csv").write_text("\n".join(ROWS[:2]) + "\n")
    await engine.create_job(deployment, job("j00000000a2"))
    refused = await reach(engine, "j00000000a2", JobPhase.FAILED)
    assert "exists; ask for overwrite" in refused.message
    assert [j.id for j in await engine.list_jobs("iris")] == ["j00000000a2", "j00000000a1"]


async def test_the_real_runner_scores_a_pvc_csv_with_the_bundles_model(
    engine, cluster, tmp_path, iris, models
):
    # No stand-in: the pod runs `python -m primehub_jupyter.serving.batch /mnt/models ...`.
    del cluster.sim.module_overrides["primehub_jupyter.serving.batch"]
    pd = pytest.importorskip("pandas")
    features = iris[0][::3]  # 50 rows, every class
    lines = pd.DataFrame(features, columns=IRIS_COLUMNS).to_csv(index=False).splitlines()
    lines.insert(5, "abc,3.0,1.4,0.2")  # line 6 (the header is line 1): not a number
    data = tmp_path / "data"
    (data / "in.csv").write_text("\n".join(lines) + "\n")
    record = job("j000000a0a1", chunkRows=8, maxFailedShare=0.2)
    created = await engine.create_job(await engine.get("iris"), record)
    assert created.phase is JobPhase.PENDING

    seen: list[JobPhase] = [created.phase]

    async def finished() -> JobRecord | None:
        current = await engine.get_job("iris", "j000000a0a1")
        if current.phase is not seen[-1]:
            seen.append(current.phase)
        return current if current.phase.finished else None

    done = await wait_until(finished, what="the real runner's job to finish")
    assert seen == [JobPhase.PENDING, JobPhase.RUNNING, JobPhase.SUCCEEDED], done.message
    assert (done.rows_read, done.rows_scored, done.rows_failed) == (51, 50, 1)
    assert done.chunks_done == 7 and done.progress == 1
    assert done.message == "50 rows scored, 1 failed"
    assert done.errors == "pvc://data/out/scores.csv.errors.jsonl"
    assert done.start_time and done.finish_time and done.start_time <= done.finish_time

    written = pd.read_csv(data / "out" / "scores.csv")
    assert list(written.columns) == [*IRIS_COLUMNS, "0", "1", "2", "request_id"]
    assert len(written) == 50
    np.testing.assert_allclose(
        written[["0", "1", "2"]].to_numpy(float),
        models["v1"].predict_proba(features),
        rtol=0,
        atol=1e-12,
    )
    rows = [i for i in range(51) if i != 4]  # row 4 (line 6) failed
    assert written["request_id"].tolist() == [f"j000000a0a1-{i}" for i in rows]
    errors = [
        json.loads(x) for x in (data / "out/scores.csv.errors.jsonl").read_text().splitlines()
    ]
    assert [(e["line"], e["row"]) for e in errors] == [(6, 4)]
    assert "sepal_length" in errors[0]["reason"]
    logs = await engine.job_logs("iris", "j000000a0a1", None)
    assert any("delivering" in line for line in logs)

    # Too many failed rows fail the job; its errors file is delivered, the output is not,
    # and the message names the errors file as the user knows it.
    strict = job("j000000a0a2", output="pvc://data/out/strict.csv", maxFailedShare=0.0)
    await engine.create_job(await engine.get("iris"), strict)
    failed = await reach(engine, "j000000a0a2", JobPhase.FAILED)
    assert failed.message.endswith("see pvc://data/out/strict.csv.errors.jsonl"), failed.message
    assert not (data / "out" / "strict.csv").exists()
    delivered = (data / "out" / "strict.csv.errors.jsonl").read_text().splitlines()
    assert [json.loads(x)["line"] for x in delivered] == [6]


async def test_a_failing_runner_fails_the_job_without_retries(engine, cluster, tmp_path):
    (tmp_path / "data" / "in.csv").write_text("a,b\n1,2\nfail\n")
    await engine.create_job(await engine.get("iris"), job("j00000000b1"))
    failed = await reach(engine, "j00000000b1", JobPhase.FAILED)
    assert failed.message == "line 3: the model failed" and failed.rows_read == 2
    # podFailurePolicy: exit code 1 cannot be fixed by a retry.
    assert len(cluster.objects("pods", "primehub.io/job=j00000000b1")) == 1


async def test_cancel_records_cancelled_and_removes_the_job(engine, cluster, tmp_path):
    data = tmp_path / "data"
    (data / "in.csv").write_text("\n".join(ROWS) + "\n")
    (data / "in.csv.hold").touch()
    await engine.create_job(await engine.get("iris"), job("j00000000c1"))
    await reach(engine, "j00000000c1", JobPhase.RUNNING, rows_read=2)
    cancelled = await engine.delete_job("iris", "j00000000c1")
    assert cancelled.phase is JobPhase.CANCELLED and cancelled.finish_time
    assert cancelled.rows_read == 2
    cluster.wait(lambda: not cluster.objects("pods", "primehub.io/job=j00000000c1"), "pod gone")
    assert cluster.objects("jobs") == []
    assert not (data / "out" / "scores.csv").exists()  # never delivered
    listed = await engine.list_jobs("iris")
    assert [(j.id, j.phase) for j in listed] == [("j00000000c1", JobPhase.CANCELLED)]
    assert await engine.running_jobs() == []
    # Deleting a finished job removes it.
    removed = await engine.delete_job("iris", "j00000000c1")
    assert removed.phase is JobPhase.CANCELLED
    with pytest.raises(NotFound):
        await engine.get_job("iris", "j00000000c1")
    assert await engine.list_jobs("iris") == []


async def test_s3_input_and_output_use_the_storage_secret(engine, cluster):
    bucket = cluster.storage.root / "tables"
    bucket.mkdir(parents=True)
    (bucket / "in.csv").write_text("\n".join(ROWS) + "\n")
    record = job("j00000000d1", input="s3://tables/in.csv", output="s3://results/iris/out.csv")
    await engine.create_job(await engine.get("iris"), record)
    done = await reach(engine, "j00000000d1", JobPhase.SUCCEEDED)
    assert done.rows_scored == 4
    results = cluster.storage.root / "results" / "iris"
    assert len((results / "out.csv").read_text().splitlines()) == 5
    assert (results / "out.csv.errors.jsonl").exists()
    assert "PUT /s3/results/iris/out.csv" in cluster.storage.s3_requests


async def test_http_input_is_fetched_and_a_missing_one_fails_the_job(engine, cluster, tmp_path):
    (cluster.storage.root / "in.csv").write_text("\n".join(ROWS) + "\n")
    url = f"{cluster.network}/files/in.csv"
    await engine.create_job(await engine.get("iris"), job("j00000000fa", input=url))
    done = await reach(engine, "j00000000fa", JobPhase.SUCCEEDED)
    assert done.rows_read == 5 and (tmp_path / "data" / "out" / "scores.csv").exists()

    missing = job("j00000000fb", input=f"{cluster.network}/files/nothing.csv", overwrite=True)
    await engine.create_job(await engine.get("iris"), missing)
    failed = await reach(engine, "j00000000fb", JobPhase.FAILED)
    assert failed.message.startswith("the job could not start: ") and "404" in failed.message
    assert len(cluster.objects("pods", "primehub.io/job=j00000000fb")) == 1


async def test_the_newest_50_records_are_kept(engine, cluster, tmp_path):
    old = {}
    for i in range(50):
        record = job(f"j{i:010x}").model_copy(
            update={"phase": JobPhase.SUCCEEDED, "create_time": f"2026-01-01T00:00:{i:02d}.000Z"}
        )
        old[record.id] = record.model_dump_json(by_alias=True)
    cluster.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "iris-jobs"}, "data": old}
    )
    (tmp_path / "data" / "in.csv").write_text("a,b\nfail\n")
    await engine.create_job(await engine.get("iris"), job("j00000000ff"))
    await reach(engine, "j00000000ff", JobPhase.FAILED)
    listed = [j.id for j in await engine.list_jobs("iris")]
    assert len(listed) == 50 and listed[0] == "j00000000ff"
    assert "j0000000000" not in listed and "j0000000001" in listed  # the oldest went
    assert len(cluster.find("configmaps", "iris-jobs")["data"]) == 50


async def test_deleting_the_deployment_deletes_its_jobs(engine, cluster, tmp_path):
    (tmp_path / "data" / "in.csv").write_text("a,b\n1,2\n")
    (tmp_path / "data" / "in.csv.hold").touch()
    await engine.create_job(await engine.get("iris"), job("j00000000e1"))
    await reach(engine, "j00000000e1", JobPhase.RUNNING)
    await engine.delete("iris")
    cluster.wait(
        lambda: not cluster.objects("jobs") and not cluster.objects("configmaps"), "GC of jobs"
    )
    assert cluster.objects("pods", "app=primehub-job") == []


async def test_jobs_that_cannot_run_are_refused(engine, cluster):
    deployment = await engine.get("iris")
    with pytest.raises(ValidationError, match=r"input: '/home/jovyan/x\.csv' cannot be read"):
        await engine.create_job(deployment, job("j00000000f1", input="/home/jovyan/x.csv"))
    cluster.sim.images["registry.example.com/iris:1"] = "ok"
    cluster.apply(phdeployment("image", modelImage="registry.example.com/iris:1"))
    cluster.wait_phase("image", "Deployed")
    with pytest.raises(ValidationError, match="need a predictor with a modelURI"):
        await engine.create_job(await engine.get("image"), job("j00000000f2"))
    assert cluster.objects("jobs") == [] and cluster.api.invalid == []
    with pytest.raises(NotFound):
        await engine.get_job("iris", "j00000000f3")
    with pytest.raises(NotFound):
        await engine.get_job("iris", "j0,app=x")
    assert engine.kube.namespace == NAMESPACE
