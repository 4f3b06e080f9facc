"""Batch jobs: a deployment's model scoring a whole file, as one JSON shape for every engine."""

from __future__ import annotations

import enum
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, WithJsonSchema

from .models import Line, ResourceName, _Model, _Observed

# Finished jobs kept per deployment (newest first); older ones are removed with their files.
MAX_JOBS_KEPT = 50
DEFAULT_CHUNK_ROWS = 10_000
MAX_CHUNK_ROWS = 1_000_000
DEFAULT_MAX_FAILED_SHARE = 0.1
JOB_FORMATS = ("csv", "parquet", "jsonl")
# File name endings that name a format when `format` is not given.
FORMAT_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl"}
# A job id: 'j' and 10 lowercase hex digits (random); short so `<deployment>-<job>` stays a
# Kubernetes object name.
JOB_ID = re.compile(r"j[0-9a-f]{10}")

# What the runner writes to progress.json (serving/batch.py): the JobRecord fields it accounts for.
PROGRESS_FIELDS = (
    "phase",
    "message",
    "rowsRead",
    "rowsScored",
    "rowsFailed",
    "rowsPerSecond",
    "totalRows",
    "progress",
    "chunksDone",
    "startTime",
    "finishTime",
)

JobFormat = Literal["csv", "parquet", "jsonl"]


def _uri(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


# A local path (relative ones are resolved by the caller, as modelURI is) or, on Kubernetes,
# a URI of a scheme the model fetcher supports (pvc://, http(s):// for input, s3://).
JobUri = Annotated[Line, Field(max_length=4096), AfterValidator(_uri)]


def job_id_problem(value: str) -> str | None:
    """Why `value` is not a job id, or None."""
    if not JOB_ID.fullmatch(value):
        return "a job id is 'j' followed by 10 lowercase hex digits"
    return None


JobId = Annotated[
    str,
    WithJsonSchema({"type": "string", "pattern": f"^{JOB_ID.pattern}$"}),
]


def format_of(uri: str) -> str | None:
    """The format a file name implies by its ending, or None."""
    lowered = uri.lower().rsplit("?", 1)[0]
    for suffix, name in FORMAT_SUFFIXES.items():
        if lowered.endswith(suffix):
            return name
    return None


class JobPhase(str, enum.Enum):
    """Where a job is in its life."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def finished(self) -> bool:
        """Whether the job will not change any more."""
        return self in (JobPhase.SUCCEEDED, JobPhase.FAILED, JobPhase.CANCELLED)


class JobSpec(_Model):
    """What a job was asked to do, with its input and output resolved.

    The REST body (`core/bodies.CreateJob`) has the same fields; the service resolves relative
    paths, the format (from `format` or the input's file ending) and the predictor (the
    deployment's primary when not named) before the engine sees it. Output format: the
    output's file ending, else the input's format.
    """

    input: JobUri
    output: JobUri
    format: JobFormat
    output_format: JobFormat
    predictor: ResourceName
    chunk_rows: int = Field(DEFAULT_CHUNK_ROWS, ge=1, le=MAX_CHUNK_ROWS, strict=True)
    output_columns: Literal["all", "predictions"] = "all"
    overwrite: bool = Field(False, strict=True)
    max_failed_share: float = Field(
        DEFAULT_MAX_FAILED_SHARE,
        ge=0.0,
        le=1.0,
        description="The job fails when more than this share of the rows read failed.",
    )

    @property
    def errors(self) -> str:
        """The errors file beside the output: `<output>.errors.jsonl`."""
        return f"{self.output}.errors.jsonl"


class JobRecord(_Observed):
    """One batch job of a deployment: what it was asked, where it is, how far it got."""

    id: JobId
    deployment_id: str
    user: str = ""
    revision: int = Field(0, description="The deployment revision whose bundle scores the rows.")
    spec: JobSpec
    phase: JobPhase = JobPhase.PENDING
    message: str = ""
    rows_read: int = 0
    rows_scored: int = 0
    rows_failed: int = 0
    rows_per_second: float = 0.0
    total_rows: int | None = Field(
        None, description="Rows in the input when known up front (Parquet metadata), else null."
    )
    progress: float | None = Field(
        None, description="Share of the input read, 0..1 (bytes for CSV/JSONL), when known."
    )
    chunks_done: int = 0
    create_time: str
    start_time: str | None = None
    finish_time: str | None = None
    errors: str = Field("", description="The errors file (one JSON line per failed row).")

    def eta_seconds(self) -> float | None:
        """Seconds left at the current rate, when the progress is known."""
        if self.progress is None or self.progress <= 0 or self.rows_per_second <= 0:
            return None
        left = self.rows_read * (1 - self.progress) / self.progress
        return left / self.rows_per_second
