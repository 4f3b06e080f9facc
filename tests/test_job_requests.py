"""A CreateJob body made into a JobRecord, and a job's share of the group quota (no processes)."""

from __future__ import annotations

import pytest

from primehub_jupyter.core.bodies import CreateJob
from primehub_jupyter.core.config import ConfigStore
from primehub_jupyter.core.errors import ValidationError
from primehub_jupyter.core.jobrequests import job_quota_problem, job_record
from primehub_jupyter.core.models import DeploymentRecord, DeploymentSpec, HistoryEntry
from primehub_jupyter.core.quota import Usage, job_usage

from .conftest import GROUPS


def deployment(group: str = "small", **first: str) -> DeploymentRecord:
    spec = DeploymentSpec.model_validate(
        {
            "displayName": "Iris",
            "groupName": group,
            "predictors": [
                {"name": "a", "instanceType": "cpu-1", "modelURI": "/b/a", "traffic": 100, **first},
                {"name": "b", "instanceType": "cpu-0.5", "modelURI": "/b/b", "traffic": 0},
            ],
        }
    )
    record = DeploymentRecord(id="iris-abcde", spec=spec)
    for revision in (1, 2):
        record.status.history.insert(
            0, HistoryEntry(revision=revision, time="t", user="u", spec=spec)
        )
    return record


def test_defaults_come_from_the_deployment_and_the_file_names():
    job = job_record(deployment(), CreateJob.parse({"input": "in.CSV", "output": "o.parquet"}), "u")
    assert job.id[0] == "j" and len(job.id) == 11
    assert (job.spec.format, job.spec.output_format) == ("csv", "parquet")
    assert (job.spec.predictor, job.revision, job.user) == ("a", 2, "u")
    assert job.spec.input == "in.CSV" and job.errors == "o.parquet.errors.jsonl"
    named = job_record(
        deployment(),
        CreateJob.parse({"input": "x", "output": "y", "format": "jsonl", "predictor": "b"}),
        "u",
    )
    assert (named.spec.format, named.spec.output_format, named.spec.predictor) == (
        "jsonl",
        "jsonl",
        "b",
    )


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"input": "in.txt", "output": "o.csv"}, "unknown format"),
        ({"input": "in.csv", "output": "o.csv", "predictor": "zed"}, "predictor 'zed' not found"),
    ],
)
def test_refusals_name_the_problem(body, words):
    with pytest.raises(ValidationError) as error:
        job_record(deployment(), CreateJob.parse(body), "u")
    assert words in error.value.message


def test_a_predictor_without_a_bundle_cannot_run_jobs():
    image = deployment(modelURI="", modelImage="registry.example.com/iris:1")
    with pytest.raises(ValidationError, match="bundle"):
        job_record(image, CreateJob.parse({"input": "i.csv", "output": "o.csv"}), "u")


def test_a_job_holds_one_replica_of_its_predictor_and_no_deployment_slot():
    config = ConfigStore.parse(GROUPS)
    record = deployment()
    job = job_record(record, CreateJob.parse({"input": "i.csv", "output": "o.csv"}), "u")
    assert job_usage(config, record, job) == Usage(1.0, 1024**3, 0, 0)
    # 'small' has 1 CPU: the first job fits, a second beside it does not.
    assert job_quota_problem(config, record, job, [], [], [record]) is None
    problem = job_quota_problem(config, record, job, [], [job], [record])
    assert problem is not None and problem.startswith("group resource not enough: cpu 1")
    # The 0.5-CPU predictor's job fits beside nothing but not beside a 1-CPU job.
    half = job_record(
        record, CreateJob.parse({"input": "i.csv", "output": "o.csv", "predictor": "b"}), "u"
    )
    assert job_quota_problem(config, record, half, [], [], [record]) is None
    assert job_quota_problem(config, record, half, [], [job], [record]) is not None
