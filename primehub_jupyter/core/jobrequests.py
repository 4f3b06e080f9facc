"""A CreateJob body made into a JobRecord for a deployment: predictor, format, quota."""

from __future__ import annotations

import secrets
from typing import cast

from .bodies import CreateJob
from .config import PrimeHubConfig
from .errors import ValidationError
from .jobs import DEFAULT_CHUNK_ROWS, JOB_FORMATS, JobFormat, JobRecord, JobSpec, format_of
from .models import DeploymentRecord, utcnow
from .quota import Usage, group_usage, job_usage, jobs_usage, quota_problem_for_usage


def new_job_id() -> str:
    """A fresh job id: 'j' and 10 random lowercase hex digits."""
    return "j" + secrets.token_hex(5)


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError(message, details=[{"field": field, "message": message}])


def job_record(deployment: DeploymentRecord, request: CreateJob, user: str) -> JobRecord:
    """The job `request` asks of `deployment`, its spec resolved but for relative paths.

    The predictor defaults to the primary and must exist and serve a bundle (modelURI); the
    format comes from `format` or the input's file ending, the output format from the
    output's ending, else the input's. Paths stay as given: each engine resolves them.
    """
    spec = deployment.spec
    name = request.predictor or spec.predictor.name
    predictor = next((p for p in spec.predictors if p.name == name), None)
    if predictor is None:
        names = ", ".join(p.name for p in spec.predictors)
        raise _invalid(
            "predictor",
            f"predictor '{name}' not found in deployment '{deployment.id}'; predictors: {names}",
        )
    if not predictor.model_uri:
        raise _invalid(
            "predictor",
            f"predictor '{name}' serves an image, not a model bundle (modelURI): batch jobs "
            "score with a bundle",
        )
    fmt = request.format or format_of(request.input)
    if fmt is None:
        raise _invalid(
            "format",
            f"unknown format: the input '{request.input}' does not end in .csv, .parquet or "
            f".jsonl; name one with format ({', '.join(JOB_FORMATS)})",
        )
    revision = max((h.revision for h in deployment.status.history), default=0)
    job_spec = JobSpec(
        input=request.input,
        output=request.output,
        format=cast(JobFormat, fmt),
        output_format=cast(JobFormat, format_of(request.output) or fmt),
        predictor=name,
        chunk_rows=request.chunk_rows or DEFAULT_CHUNK_ROWS,
        output_columns=request.output_columns,
        overwrite=request.overwrite,
        max_failed_share=request.max_failed_share,
    )
    return JobRecord(
        id=new_job_id(),
        deployment_id=deployment.id,
        user=user,
        revision=revision,
        spec=job_spec,
        total_rows=None,
        progress=None,
        errors=job_spec.errors,
        create_time=utcnow(),
    )


def job_quota_problem(
    config: PrimeHubConfig,
    deployment: DeploymentRecord,
    job: JobRecord,
    holding: list[DeploymentRecord],
    running: list[JobRecord],
    every: list[DeploymentRecord],
) -> str | None:
    """Why the job does not fit in its group's quota beside what runs, or None.

    `holding` are the deployments that hold quota now, `running` the live jobs, `every`
    all deployments (a running job's deployment may be stopped: it still counts).
    """
    group = deployment.spec.group_name
    used = group_usage(config, [d for d in holding if d.spec.group_name == group])
    used = used.add(jobs_usage(config, every, running, group))
    want = job_usage(config, deployment, job)
    if want == Usage():
        return None
    return quota_problem_for_usage(config, group, want, used)
