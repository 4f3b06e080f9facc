"""Batch jobs' Kubernetes objects validate (Job, records ConfigMap); their phases are read right."""

from __future__ import annotations

from typing import Any

import pytest

from primehub_jupyter.core.jobs import JobPhase, JobRecord, JobSpec
from primehub_jupyter.engines.kubernetes import jobs, resources

from .test_manifests import CPU, CR, GPU, SETTINGS, spec, validate_k8s


def record(job_id: str = "j0123456789", **fields: Any) -> JobRecord:
    body = {
        "input": "pvc://data/in/customers.csv",
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
        revision=3,
        spec=JobSpec.model_validate(body),
        create_time="2026-11-30T05:00:00.000Z",
    )


def template(model_uri: str = "s3://bucket/iris/", instance: Any = GPU) -> dict[str, Any]:
    deployment_spec = spec(modelURI=model_uri)
    return resources.deployment_manifest(
        CR, deployment_spec, instance, SETTINGS, replicas=1, deploy_timeout=300
    )


VARIANTS = {
    "pvc-to-pvc": {},
    "http-to-s3": {"input": "https://files.example.com/in.csv", "output": "s3://out/scores.csv"},
    "s3-to-pvc": {"input": "s3://in/data/in.parquet", "output": "pvc://results/scores.parquet"},
    "pvc-to-s3-overwrite": {"output": "s3://out/s.csv", "overwrite": True},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_job_and_its_records_validate_against_the_kubernetes_schemas(variant):
    job = record(**VARIANTS[variant])
    options = jobs.JobOptions(backoff_limit=2, ttl_seconds=3600, active_deadline_seconds=7200)
    manifest = jobs.job_manifest(CR, template(), job, jobs.job_data(job), options)
    validate_k8s(manifest)
    validate_k8s({**jobs.records_manifest(CR), "data": {job.id: jobs.record_json(job)}})

    assert manifest["metadata"]["name"] == "iris-j0123456789"
    labels = manifest["metadata"]["labels"]
    assert labels == manifest["spec"]["template"]["metadata"]["labels"]
    assert labels["primehub.io/job-deployment"] == "iris" and labels["app"] == "primehub-job"
    assert "primehub.io/phdeployment" not in labels  # never taken for a replica
    (owner,) = manifest["metadata"]["ownerReferences"]
    assert owner["kind"] == "PhDeployment" and owner["uid"] == CR["metadata"]["uid"]
    assert JobRecord.model_validate_json(manifest["metadata"]["annotations"][jobs.ANNOTATION_JOB])
    job_spec = manifest["spec"]
    assert (job_spec["backoffLimit"], job_spec["ttlSecondsAfterFinished"]) == (2, 3600)
    assert job_spec["activeDeadlineSeconds"] == 7200
    pod = job_spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    # The replica's pod: its initializer fetches the bundle; its instance type's placement.
    replica = template()["spec"]["template"]["spec"]
    assert pod["initContainers"] == replica["initContainers"]
    assert pod["nodeSelector"] == {"gpu": "a100"} and pod["tolerations"] == replica["tolerations"]
    (container,) = pod["containers"]
    assert container["resources"] == resources.resources(GPU)
    assert container["image"] == SETTINGS.model_server_image
    assert container["envFrom"] == [{"secretRef": {"name": "model-storage", "optional": True}}]
    args = container["args"]
    runner = args[args.index("--") + 1 :]
    assert container["command"][-1] == "primehub_jupyter.engines.kubernetes.jobrun"
    assert runner == [
        "python",
        "-m",
        "primehub_jupyter.serving.batch",
        "/mnt/models",
        "--job-dir",
        "/var/run/primehub-job",
    ]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert "readinessProbe" not in container and "ports" not in container
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert JobRecord.model_validate_json(env["PRIMEHUB_JOB"]).id == job.id
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert {"/mnt/models", "/var/run/primehub-job", "/mnt/job-stage", "/tmp"} <= set(mounts)


def test_where_inputs_and_outputs_live_in_the_pod():
    same_claim = jobs.job_data(record())
    assert same_claim.input == "/mnt/job-data/0/in/customers.csv"
    assert same_claim.output == "/mnt/job-stage/output/scores.csv"
    # One claim, mounted once, writable (the output is delivered into it).
    assert same_claim.volumes == [
        {"name": "job-data-0", "persistentVolumeClaim": {"claimName": "data", "readOnly": False}}
    ]
    assert same_claim.args == [
        "--deliver",
        "/mnt/job-stage/output/scores.csv",
        "/mnt/job-data/0/out/scores.csv",
    ]
    fetched = jobs.job_data(
        record(input="s3://in/a/b.parquet?versionId=1", output="s3://o/x.parquet", overwrite=True)
    )
    assert fetched.input == "/mnt/job-stage/input/b.parquet" and fetched.volumes == []
    assert fetched.args == [
        "--fetch",
        "s3://in/a/b.parquet?versionId=1",
        "/mnt/job-stage/input/b.parquet",
        "--deliver",
        "/mnt/job-stage/output/x.parquet",
        "s3://o/x.parquet",
        "--overwrite",
    ]
    read_only = jobs.job_data(record(input="pvc://raw/in.csv", output="pvc://out/o.csv"))
    claims = {v["persistentVolumeClaim"]["claimName"]: v for v in read_only.volumes}
    assert claims["raw"]["persistentVolumeClaim"]["readOnly"] is True
    assert claims["out"]["persistentVolumeClaim"]["readOnly"] is False
    # A path cannot leave its claim.
    assert jobs.job_data(record(input="pvc://data/../../etc/passwd")).input == (
        "/mnt/job-data/0/etc/passwd"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"input": "/home/jovyan/in.csv"}, "input: '/home/jovyan/in.csv' cannot be read"),
        ({"output": "https://x.example.com/o.csv"}, "output: 'https://x.example.com/o.csv'"),
        ({"input": "pvc://Bad_Claim/x.csv"}, "'Bad_Claim' is not a valid PersistentVolumeClaim"),
        ({"output": "pvc://data"}, "names a claim but no file"),
    ],
)
def test_unusable_uris_say_what_to_use(fields, message):
    with pytest.raises(jobs.JobURIError, match=message.replace("(", r"\(").replace(".", r"\.")):
        jobs.job_data(record(**fields))


def test_a_predictor_with_its_own_image_has_no_bundle_for_a_job():
    image = resources.deployment_manifest(
        CR,
        spec(modelImage="registry.example.com/iris:1"),
        CPU,
        SETTINGS,
        replicas=1,
        deploy_timeout=300,
    )
    job = record()
    with pytest.raises(ValueError, match="need a predictor with a modelURI"):
        jobs.job_manifest(CR, image, job, jobs.job_data(job), jobs.JobOptions())


def test_job_names_fit_a_label_value():
    long_id = "d" * 63
    name = jobs.job_name(long_id, "j0123456789")
    assert len(name) == 63 and name.endswith("-j0123456789")
    assert jobs.job_name("iris", "j0123456789") == "iris-j0123456789"


def _job(conditions: list[dict[str, str]] | None = None, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "iris-j0123456789"},
        "status": {"startTime": "2026-11-30T05:01:02Z", "conditions": conditions or [], **status},
    }


def _pod(phase: str, **container: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "iris-j0123456789-abcde", "creationTimestamp": "2026-11-30T05:01Z"},
        "status": {"phase": phase, "containerStatuses": [{"name": "job", **container}]},
    }


def test_phases_from_the_job_and_its_pod():
    job = record()
    pending = jobs.observed(job, _job(active=1), [_pod("Pending")], {})
    assert pending.phase is JobPhase.PENDING
    unschedulable = _pod("Pending")
    unschedulable["status"]["conditions"] = [
        {"type": "PodScheduled", "status": "False", "message": "0/1 nodes: Insufficient cpu"}
    ]
    assert "Insufficient cpu" in jobs.observed(job, _job(active=1), [unschedulable], {}).message

    progress = {"rowsRead": 500, "rowsScored": 498, "rowsFailed": 2, "progress": 0.5}
    running = jobs.observed(job, _job(active=1), [_pod("Running")], progress)
    assert running.phase is JobPhase.RUNNING
    assert (running.rows_read, running.rows_failed, running.progress) == (500, 2, 0.5)
    assert running.start_time == "2026-11-30T05:01:02.000Z"

    final = '{"phase":"Succeeded","rowsRead":1000,"rowsScored":1000,"exitCode":0}'
    done = jobs.observed(
        job,
        _job([{"type": "Complete", "status": "True"}], completionTime="2026-11-30T05:02:00Z"),
        [_pod("Succeeded", state={"terminated": {"exitCode": 0, "message": final}})],
        {},
    )
    assert done.phase is JobPhase.SUCCEEDED and done.rows_scored == 1000 and done.progress == 1
    assert done.finish_time == "2026-11-30T05:02:00.000Z"

    failed_message = '{"phase":"Failed","message":"input: column sepal_length is missing"}'
    failed = jobs.observed(
        job,
        _job([{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}]),
        [_pod("Failed", state={"terminated": {"exitCode": 1, "message": failed_message}})],
        {},
    )
    assert failed.phase is JobPhase.FAILED and failed.message.startswith("input: column")

    deadline = jobs.observed(
        job,
        _job(
            [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "DeadlineExceeded",
                    "message": "Job was active longer than specified deadline",
                }
            ]
        ),
        [],
        {},
    )
    assert deadline.phase is JobPhase.FAILED and "deadline" in deadline.message


def test_progress_lines_are_found_in_a_log():
    lines = [
        "2026-11-30T05:01:03.000Z scoring chunk 1",
        '2026-11-30T05:01:04.000Z primehub-job-progress {"rowsRead":10,"progress":0.1}',
        "2026-11-30T05:01:05.000Z primehub-job-progress {broken",
        "2026-11-30T05:01:06.000Z scoring chunk 2",
    ]
    assert jobs.last_progress(lines) == {"rowsRead": 10, "progress": 0.1}
    assert jobs.last_progress(["nothing here"]) == {}
