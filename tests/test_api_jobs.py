"""Batch jobs over the REST API on the local engine: real runner processes, real files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .conftest import API, spec, wait_until
from .job_helpers import (
    FEATURES,
    assert_predictions,
    iris_rows,
    job_processes,
    read_table,
    runner_process,
    write_table,
)

pytest.importorskip("pyarrow", reason="the batch extra (pandas, pyarrow)")


async def stopped_deployment(api: API, bundle: Path, **overrides: Any) -> str:
    """A stopped deployment: no replica runs, the bundle is there for jobs."""
    body = spec(bundle, **overrides)
    body["stop"] = True
    created = await api.ok("POST", "deployments", {"spec": body})
    return created["id"]


async def finished(api: API, deployment_id: str, job_id: str, limit: float = 120) -> dict:
    """Poll the job until it has finished; the limit only bounds a hang."""

    async def done() -> dict | None:
        job = await api.ok("GET", f"deployments/{deployment_id}/jobs/{job_id}")
        return job if job["phase"] in ("Succeeded", "Failed", "Cancelled") else None

    return await wait_until(done, limit, what=f"job {job_id} to finish")


async def running(api: API, deployment_id: str, job_id: str) -> dict:
    """Wait until the job has finished a chunk and is still running."""

    async def mid_job() -> dict | None:
        job = await api.ok("GET", f"deployments/{deployment_id}/jobs/{job_id}")
        assert job["phase"] in ("Pending", "Running"), job
        return job if job["chunksDone"] >= 1 else None

    return await wait_until(mid_job, what=f"job {job_id} mid-way")


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
async def test_job_scores_a_file_like_the_model(
    api: API, bundles, models, iris, tmp_path: Path, fmt: str
):
    deployment_id = await stopped_deployment(api, bundles["v1"])
    rows = iris_rows(iris[0], 2500)
    source = write_table(tmp_path / f"in.{fmt}", rows)
    output = tmp_path / f"out.{fmt}"
    code, job = await api.call(
        "POST",
        f"deployments/{deployment_id}/jobs",
        {"input": str(source), "output": str(output), "chunkRows": 700},
    )
    assert code == 201, job
    assert job["id"].startswith("j") and job["spec"]["format"] == fmt
    assert job["spec"]["predictor"] == "predictor1" and job["user"] == "alice"
    assert job["revision"] == 1
    done = await finished(api, deployment_id, job["id"])
    assert done["phase"] == "Succeeded", done
    assert (done["rowsRead"], done["rowsScored"], done["rowsFailed"]) == (2500, 2500, 0)
    assert done["chunksDone"] == 4 and done["startTime"] and done["finishTime"]
    assert_predictions(read_table(output, fmt), rows, models["v1"])
    listed = await api.ok("GET", f"deployments/{deployment_id}/jobs")
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]
    logs = await api.ok("GET", f"deployments/{deployment_id}/jobs/{job['id']}/logs")
    assert logs["replicas"] == [job["id"]] and any("[engine]" in line for line in logs["lines"])
    assert job_processes(job["id"]) == []
    # A finished job is removed by DELETE (204); its output stays.
    code, _ = await api.call("DELETE", f"deployments/{deployment_id}/jobs/{job['id']}")
    assert code == 204 and output.exists()
    code, _ = await api.call("GET", f"deployments/{deployment_id}/jobs/{job['id']}")
    assert code == 404


async def test_relative_paths_resolve_against_the_root_dir_and_newest_comes_first(
    api: API, bundles, iris, jp_root_dir: Path
):
    deployment_id = await stopped_deployment(api, bundles["v1"])
    write_table(jp_root_dir / "small.csv", iris[0][:20])
    ids = []
    for name in ("first.csv", "second.jsonl"):
        job = await api.ok(
            "POST", f"deployments/{deployment_id}/jobs", {"input": "small.csv", "output": name}
        )
        assert job["spec"]["input"] == str(jp_root_dir / "small.csv")
        ids.append(job["id"])
        assert (await finished(api, deployment_id, job["id"]))["phase"] == "Succeeded"
    assert read_table(jp_root_dir / "second.jsonl", "jsonl").shape[0] == 20
    listed = await api.ok("GET", f"deployments/{deployment_id}/jobs")
    assert [j["id"] for j in listed["jobs"]] == ids[::-1]


async def test_malformed_rows_go_to_the_errors_file(api: API, bundles, iris, tmp_path: Path):
    deployment_id = await stopped_deployment(api, bundles["v1"])
    lines = [",".join(FEATURES)] + [",".join(map(str, r)) for r in iris[0][:30]]
    lines[5] = "5.1,oops,1.4,0.2"  # data line 5
    lines[12] = "6.0,3.0,,1.8"  # data line 12: a missing value
    source = tmp_path / "bad.csv"
    source.write_text("\n".join(lines) + "\n")
    output = tmp_path / "scored.csv"
    job = await api.ok(
        "POST", f"deployments/{deployment_id}/jobs", {"input": str(source), "output": str(output)}
    )
    done = await finished(api, deployment_id, job["id"])
    assert done["phase"] == "Succeeded", done
    assert (done["rowsRead"], done["rowsScored"], done["rowsFailed"]) == (30, 28, 2)
    assert done["errors"] == f"{output}.errors.jsonl"
    errors = [json.loads(line) for line in Path(done["errors"]).read_text().splitlines()]
    assert len(errors) == 2 and all(e.get("reason") for e in errors), errors
    assert len(read_table(output, "csv")) == 28


async def test_each_bad_input_is_a_4xx_with_the_reason(api: API, bundles, iris, tmp_path: Path):
    deployment_id = await stopped_deployment(api, bundles["v1"])
    jobs = f"deployments/{deployment_id}/jobs"
    good = write_table(tmp_path / "in.csv", iris[0][:10])
    taken = write_table(tmp_path / "taken.csv", iris[0][:3])
    (tmp_path / "notes.txt").write_text("a,b\n1,2\n")
    narrow = tmp_path / "narrow.csv"
    narrow.write_text("a,b,c\n1,2,3\n")
    out = str(tmp_path / "out.csv")
    cases = [
        ({"input": str(tmp_path / "nope.csv"), "output": out}, 422, "does not exist"),
        ({"input": str(tmp_path / "notes.txt"), "output": out}, 422, "unknown format"),
        ({"input": str(narrow), "output": out}, 422, "column"),
        ({"input": str(good), "output": str(taken)}, 422, "exists"),
        ({"input": str(good), "output": out, "predictor": "nobody"}, 422, "'nobody' not found"),
        ({"input": str(good), "output": str(tmp_path / "no" / "out.csv")}, 422, "directory"),
        ({"input": "s3://bucket/in.csv", "output": out}, 422, "not supported"),
        (
            {
                "input": str(tmp_path / "primehub-data" / "state.sqlite3"),
                "output": out,
                "format": "csv",
            },
            422,
            "private files",
        ),
        ({"input": str(good), "output": str(tmp_path / "primehub-data" / "x.csv")}, 422, "private"),
        ({"input": str(good), "output": out, "chunkRows": 0}, 422, "chunkRows"),
        ({"input": str(good), "output": out, "format": "xlsx"}, 422, "format"),
        ({"input": str(good), "output": out, "colour": "red"}, 422, "unknown fields"),
        ([1, 2], 400, "body"),
    ]
    for body, status, words in cases:
        code, answer = await api.call("POST", jobs, body)
        assert code == status, (body, answer)
        assert words in answer["message"], (body, answer)
    code, answer = await api.call("POST", jobs, raw=b"{not json")
    assert code == 400 and "JSON" in answer["message"]
    # The taken output is replaced when asked; nothing of the refused jobs was kept.
    job = await api.ok("POST", jobs, {"input": str(good), "output": str(taken), "overwrite": True})
    assert (await finished(api, deployment_id, job["id"]))["phase"] == "Succeeded"
    assert len(read_table(taken, "csv")) == 10
    assert [j["id"] for j in (await api.ok("GET", jobs))["jobs"]] == [job["id"]]
    for bad in ("j123", "J0123456789", "j0123456789x", "..", "j0123456789"):
        for suffix in ("", "/logs"):
            code, answer = await api.call("GET", f"{jobs}/{bad}{suffix}")
            assert code == 404 and "no job" in answer["message"], (bad, answer)
    code, _ = await api.call("DELETE", f"{jobs}/j0123456789")
    assert code == 404
    code, answer = await api.call("GET", f"{jobs}/{job['id']}/logs", tail="x")
    assert code == 400


async def test_only_the_groups_members_see_or_start_jobs(api: API, bundles, iris, tmp_path: Path):
    deployment_id = await stopped_deployment(api, bundles["v1"])
    source = write_table(tmp_path / "in.csv", iris[0][:5])
    body = {"input": str(source), "output": str(tmp_path / "o.csv")}
    job = await api.ok("POST", f"deployments/{deployment_id}/jobs", body)
    carol = api.as_user("carol")
    for method, path, sent in (
        ("GET", f"deployments/{deployment_id}/jobs", None),
        ("POST", f"deployments/{deployment_id}/jobs", {**body, "output": str(tmp_path / "c.csv")}),
        ("GET", f"deployments/{deployment_id}/jobs/{job['id']}", None),
        ("GET", f"deployments/{deployment_id}/jobs/{job['id']}/logs", None),
        ("DELETE", f"deployments/{deployment_id}/jobs/{job['id']}", None),
    ):
        code, answer = await carol.call(method, path, sent)
        assert code == 404 and deployment_id in answer["message"], (method, path, answer)
    assert not (tmp_path / "c.csv").exists()
    bob = api.as_user("bob")  # a member of the group sees it
    assert (await bob.ok("GET", f"deployments/{deployment_id}/jobs"))["jobs"][0]["id"] == job["id"]
    await finished(api, deployment_id, job["id"])


async def test_cancel_stops_the_runner(api: API, bundles, iris, tmp_path: Path):
    deployment_id = await stopped_deployment(api, bundles["v1"])
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    source = write_table(tmp_path / "in" / "big.csv", iris_rows(iris[0], 300_000))
    output = tmp_path / "out" / "out.csv"
    body = {"input": str(source), "output": str(output), "chunkRows": 500}
    job = await api.ok("POST", f"deployments/{deployment_id}/jobs", body)
    await running(api, deployment_id, job["id"])
    runner = runner_process(job["id"])
    assert runner is not None
    # The runner has no server secret in its environment, and in the sandbox (bubblewrap is
    # installed here) sees the input read-only, the output's directory writable, the data
    # dir masked.
    environment = runner.environ()
    assert environment["PRIMEHUB_JOB_ID"] == job["id"]
    assert not [k for k in environment if "TOKEN" in k or k.startswith("JUPYTER")]
    launcher = [p for p in job_processes(job["id"]) if p.info["cmdline"][0].endswith("bwrap")]
    if launcher:
        argv = launcher[0].info["cmdline"]
        assert ["--ro-bind", str(source), str(source)] == argv[argv.index(str(source)) - 1 :][:3]
        assert any(
            argv[i : i + 3] == ["--bind", str(output.parent), str(output.parent)]
            for i in range(len(argv))
        )
        # Of the data dir only the job's own directory is mounted; nothing above it.
        data_dir = tmp_path / "primehub-data"
        bound = [
            Path(argv[i + 1]) for i in range(len(argv) - 1) if argv[i] in ("--bind", "--ro-bind")
        ]
        assert [p for p in bound if p == data_dir or data_dir in p.parents] == [
            data_dir / "deployments" / deployment_id / "jobs" / job["id"]
        ]
        assert tmp_path not in bound
    code, cancelled = await api.call("DELETE", f"deployments/{deployment_id}/jobs/{job['id']}")
    assert code == 200 and cancelled["phase"] == "Cancelled", cancelled
    assert cancelled["finishTime"] and cancelled["rowsRead"] < 300_000
    assert job_processes(job["id"]) == []
    again = await api.ok("GET", f"deployments/{deployment_id}/jobs/{job['id']}")
    assert again["phase"] == "Cancelled"


async def test_a_running_job_holds_quota(api: API, bundles, iris, tmp_path: Path):
    # Group 'small' has 1 CPU: a job of a cpu-1 predictor takes all of it while it runs.
    deployment_id = await stopped_deployment(
        api, bundles["v1"], groupName="small", instanceType="cpu-1"
    )
    source = write_table(tmp_path / "big.csv", iris_rows(iris[0], 300_000))
    jobs = f"deployments/{deployment_id}/jobs"
    first = await api.ok(
        "POST", jobs, {"input": str(source), "output": str(tmp_path / "a.csv"), "chunkRows": 500}
    )
    await running(api, deployment_id, first["id"])
    groups = {g["name"]: g for g in (await api.ok("GET", "groups"))["groups"]}
    assert groups["small"]["usage"]["cpu"] == 1
    code, answer = await api.call(
        "POST", jobs, {"input": str(source), "output": str(tmp_path / "b.csv")}
    )
    assert code == 422 and "group resource not enough" in answer["message"], answer
    assert not (tmp_path / "b.csv").exists()
    # Starting the deployment needs the CPU the job holds: refused while it runs.
    await api.ok("POST", f"deployments/{deployment_id}/start", {})
    failed = await api.wait_phase(deployment_id, "Failed")
    assert "group resource not enough" in failed["status"]["message"]
    await api.ok("POST", f"deployments/{deployment_id}/stop", {})
    cancelled = await api.ok("DELETE", f"{jobs}/{first['id']}")
    assert cancelled["phase"] == "Cancelled"
    # The quota is free again: a job fits.
    small = write_table(tmp_path / "small.csv", iris[0][:10])
    second = await api.ok("POST", jobs, {"input": str(small), "output": str(tmp_path / "b.csv")})
    assert (await finished(api, deployment_id, second["id"]))["phase"] == "Succeeded"


async def test_deleting_the_deployment_ends_its_jobs(api: API, bundles, iris, tmp_path: Path):
    deployment_id = await stopped_deployment(api, bundles["v1"])
    source = write_table(tmp_path / "big.csv", iris_rows(iris[0], 300_000))
    body = {"input": str(source), "output": str(tmp_path / "out.csv"), "chunkRows": 500}
    job = await api.ok("POST", f"deployments/{deployment_id}/jobs", body)
    await running(api, deployment_id, job["id"])
    await api.ok("DELETE", f"deployments/{deployment_id}")
    assert job_processes(job["id"]) == []
    code, _ = await api.call("GET", f"deployments/{deployment_id}/jobs")
    assert code == 404


async def test_openapi_lists_the_job_routes(api: API):
    document = await api.ok("GET", "openapi.json")
    paths = document["paths"]
    assert set(paths["/deployments/{id}/jobs"]) >= {"get", "post"}
    assert set(paths["/deployments/{id}/jobs/{job_id}"]) >= {"get", "delete"}
    assert "get" in paths["/deployments/{id}/jobs/{job_id}/logs"]
    assert {"JobRecord", "JobList", "CreateJob"} <= set(document["components"]["schemas"])


def test_rows_helper_repeats_iris_in_order(iris):
    rows = iris_rows(iris[0], 400)
    np.testing.assert_array_equal(rows[150:300], iris[0])
