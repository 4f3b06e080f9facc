"""Pure functions for batch jobs on Kubernetes: the Job manifest, where its data lives, its phase.

A job of deployment D is the batch/v1 Job `<D>-<job id>`. Its pod is the pod of D's predictor
(the operator's Deployment template: image, model initializer, volumes, resources, node
selector, tolerations, security) with the model server replaced by the `job` container, which
runs `jobrun` around the runner (see jobrun.py). Finished jobs are recorded in the ConfigMap
`<D>-jobs` (owned by the PhDeployment), so the history outlives the Job's TTL.
"""

from __future__ import annotations

import copy
import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from ...core.jobs import PROGRESS_FIELDS, JobPhase, JobRecord
from ...core.models import format_time
from .crd import LABEL_APP, LABEL_GROUP
from .phases import parse_time
from .resources import (
    INITIALIZER_CONTAINER,
    MODEL_CONTAINER,
    MODEL_DIR,
    TERMINATION_LOG,
    label_value,
    owner_reference,
)

JOB_APP = "primehub-job"
LABEL_JOB_DEPLOYMENT = "primehub.io/job-deployment"
LABEL_JOB = "primehub.io/job"
#: On the Job: the JobRecord it was created with (spec, user, revision, create time).
ANNOTATION_JOB = "primehub.io/job-record"
JOB_CONTAINER = "job"
JOB_DIR = "/var/run/primehub-job"
#: Claims of pvc:// inputs and outputs are mounted at /mnt/job-data/<n>.
DATA_DIR = "/mnt/job-data"
#: An emptyDir: inputs fetched over http(s)/s3, and the output until it is delivered.
STAGE_DIR = "/mnt/job-stage"
RUNNER = ["python", "-m", "primehub_jupyter.serving.batch", MODEL_DIR, "--job-dir", JOB_DIR]
WRAPPER = ["python", "-m", "primehub_jupyter.engines.kubernetes.jobrun"]
#: Exit codes of the runner that no retry can fix (1 failed, 2 bad usage, 3 model load).
FINAL_EXIT_CODES = [1, 2, 3]
_MAX_NAME = 63
_DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class JobURIError(ValueError):
    """An input or output the cluster cannot reach; the message says what to use instead."""


def job_name(deployment_id: str, job_id: str) -> str:
    """`<deployment>-<job id>`, at most 63 characters (a label value: the Job controller puts
    the name in its pods' labels). A long deployment id is cut; the random job id keeps it
    unique."""
    head = deployment_id[: _MAX_NAME - len(job_id) - 1].rstrip("-")
    return f"{head}-{job_id}"


def records_name(deployment_id: str) -> str:
    """The ConfigMap holding a deployment's finished job records (one key per job id)."""
    return f"{deployment_id}-jobs"


def job_labels(deployment_id: str, job_id: str, group: str) -> dict[str, str]:
    """Labels of a job's Job and pod; never the replicas' labels, so the operator, the
    replica logs and the metrics do not take the job's pod for a replica."""
    return {
        LABEL_APP: JOB_APP,
        LABEL_JOB_DEPLOYMENT: deployment_id,
        LABEL_JOB: job_id,
        LABEL_GROUP: label_value(group),
    }


def job_of(obj: dict[str, Any]) -> str | None:
    """The job id a Job or pod is labelled with."""
    return (obj["metadata"].get("labels") or {}).get(LABEL_JOB)


# ---- where the data lives ----------------------------------------------------------------


@dataclass
class JobData:
    """The job's input and output inside the pod, and what jobrun fetches and delivers."""

    input: str
    output: str
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    args: list[str] = field(default_factory=list)


def _claim(uri: str, what: str) -> tuple[str, str]:
    claim, _, path = uri[len("pvc://") :].partition("/")
    path = posixpath.normpath("/" + path).lstrip("/")
    if not _DNS1123.fullmatch(claim) or len(claim) > 253:
        raise JobURIError(f"{what}: '{claim}' is not a valid PersistentVolumeClaim name")
    if not path:
        raise JobURIError(f"{what}: {uri} names a claim but no file in it")
    return claim, path


def _file_name(uri: str) -> str:
    name = posixpath.basename(uri.split("?", 1)[0].rstrip("/"))
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "data"


def job_data(record: JobRecord) -> JobData:
    """Where the runner reads and writes, in the pod; JobURIError for a URI it cannot use.

    pvc:// inputs are read in place; http(s):// and s3:// inputs are fetched first. The
    output (and its errors file) is written to the stage directory and delivered when the
    runner succeeds (copied into the claim and renamed, or PUT to S3), so a retried pod
    starts clean and a half-written output never appears.
    """
    spec = record.spec
    claims: dict[str, int] = {}
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    args: list[str] = []
    output_claim = spec.output.startswith("pvc://")

    def mount(claim: str, writable: bool) -> str:
        if claim not in claims:
            claims[claim] = len(claims)
            name = f"job-data-{claims[claim]}"
            volumes.append(
                {
                    "name": name,
                    "persistentVolumeClaim": {"claimName": claim, "readOnly": not writable},
                }
            )
            mounts.append(
                {"name": name, "mountPath": f"{DATA_DIR}/{claims[claim]}", "readOnly": not writable}
            )
        return f"{DATA_DIR}/{claims[claim]}"

    out_claim = _claim(spec.output, "output") if output_claim else None
    if out_claim:
        mount(out_claim[0], True)
    source = spec.input
    if source.startswith("pvc://"):
        claim, path = _claim(source, "input")
        local_input = f"{mount(claim, bool(out_claim and out_claim[0] == claim))}/{path}"
    elif source.startswith(("http://", "https://", "s3://")):
        local_input = f"{STAGE_DIR}/input/{_file_name(source)}"
        args += ["--fetch", source, local_input]
    else:
        raise JobURIError(
            f"input: '{source}' cannot be read in the cluster; use pvc://<claim>/<path>, "
            "http(s):// or s3://<bucket>/<key>"
        )
    local_output = f"{STAGE_DIR}/output/{_file_name(spec.output)}"
    if out_claim:
        target = f"{mount(out_claim[0], True)}/{out_claim[1]}"
    elif spec.output.startswith("s3://"):
        target = spec.output
    else:
        raise JobURIError(
            f"output: '{spec.output}' cannot be written from the cluster; use "
            "pvc://<claim>/<path> or s3://<bucket>/<key>"
        )
    args += ["--deliver", local_output, target]
    if spec.overwrite:
        args.append("--overwrite")
    return JobData(local_input, local_output, volumes, mounts, args)


# ---- the Job -----------------------------------------------------------------------------


@dataclass
class JobOptions:
    """The engine's job settings (KubernetesEngine.job_*)."""

    backoff_limit: int = 2
    ttl_seconds: int = 86400
    active_deadline_seconds: int | None = None


def record_json(record: JobRecord) -> str:
    """A record as one compact JSON text (annotation, ConfigMap value, the pod's env)."""
    return json.dumps(record.to_json(), separators=(",", ":"), sort_keys=True)


def job_manifest(
    cr: dict[str, Any],
    template: dict[str, Any],
    record: JobRecord,
    data: JobData,
    options: JobOptions,
) -> dict[str, Any]:
    """The batch/v1 Job running `record` with the pod of the predictor's Deployment.

    `template` is that Deployment as the operator wrote it; its pod must fetch the bundle
    with the model initializer (ValueError otherwise: a predictor with its own modelImage
    has no bundle for the runner).
    """
    deployment_id = cr["metadata"]["name"]
    group = (cr.get("spec") or {}).get("groupName", "")
    pod = copy.deepcopy(template["spec"]["template"]["spec"])
    init = [c for c in pod.get("initContainers") or [] if c["name"] == INITIALIZER_CONTAINER]
    model = next((c for c in pod["containers"] if c["name"] == MODEL_CONTAINER), None)
    if not init or model is None:
        raise ValueError(
            f"predictor '{record.spec.predictor}' runs its own image (modelImage): batch jobs "
            "need a predictor with a modelURI, whose bundle the job fetches"
        )
    env = [e for e in model.get("env") or [] if e["name"] != "PRIMEHUB_REPLICA"]
    env += [
        {"name": "PRIMEHUB_JOB", "value": record_json(record)},
        {"name": "PRIMEHUB_REPLICA", "value": "$(POD_NAME)"},
    ]
    container: dict[str, Any] = {
        "name": JOB_CONTAINER,
        "image": model["image"],
        "imagePullPolicy": model.get("imagePullPolicy", "IfNotPresent"),
        "command": list(WRAPPER),
        "args": [
            "--job-dir",
            JOB_DIR,
            "--input",
            data.input,
            "--output",
            data.output,
            "--termination-log",
            TERMINATION_LOG,
            *data.args,
            "--",
            *RUNNER,
        ],
        "env": env,
        "resources": copy.deepcopy(model.get("resources") or {}),
        "volumeMounts": [
            *(model.get("volumeMounts") or []),
            {"name": "job-dir", "mountPath": JOB_DIR},
            {"name": "job-stage", "mountPath": STAGE_DIR},
            *data.mounts,
        ],
        # The final progress (jobrun writes it) is the container's termination message.
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if "securityContext" in model:
        container["securityContext"] = copy.deepcopy(model["securityContext"])
    # s3 inputs and outputs use the credentials the model initializer gets (storageSecret).
    if init[0].get("envFrom"):
        container["envFrom"] = copy.deepcopy(init[0]["envFrom"])
    pod["initContainers"] = init
    pod["containers"] = [container]
    pod["restartPolicy"] = "Never"
    pod["volumes"] = [
        *(pod.get("volumes") or []),
        {"name": "job-dir", "emptyDir": {}},
        {"name": "job-stage", "emptyDir": {}},
        *data.volumes,
    ]
    labels = job_labels(deployment_id, record.id, group)
    job_spec: dict[str, Any] = {
        "backoffLimit": options.backoff_limit,
        "ttlSecondsAfterFinished": options.ttl_seconds,
        # A runner that failed for a reason a retry cannot fix fails the Job at once; pod
        # losses (eviction, a node going away, OOM) are retried up to backoffLimit.
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": JOB_CONTAINER,
                        "operator": "In",
                        "values": FINAL_EXIT_CODES,
                    },
                },
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": INITIALIZER_CONTAINER,
                        "operator": "NotIn",
                        "values": [0],
                    },
                },
            ]
        },
        "template": {"metadata": {"labels": labels}, "spec": pod},
    }
    if options.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = options.active_deadline_seconds
    metadata: dict[str, Any] = {
        "name": job_name(deployment_id, record.id),
        "labels": labels,
        "annotations": {ANNOTATION_JOB: record_json(record)},
        "ownerReferences": [{**owner_reference(cr), "controller": False}],
    }
    if cr["metadata"].get("namespace"):
        metadata["namespace"] = cr["metadata"]["namespace"]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def records_manifest(cr: dict[str, Any]) -> dict[str, Any]:
    """The empty ConfigMap of a deployment's finished job records."""
    deployment_id = cr["metadata"]["name"]
    group = (cr.get("spec") or {}).get("groupName", "")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": records_name(deployment_id),
            "labels": {
                LABEL_APP: JOB_APP,
                LABEL_JOB_DEPLOYMENT: deployment_id,
                LABEL_GROUP: label_value(group),
            },
            "ownerReferences": [{**owner_reference(cr), "controller": False}],
        },
        "data": {},
    }


# ---- phases and progress -----------------------------------------------------------------

PROGRESS_MARK = "primehub-job-progress "


def progress_of(text: str) -> dict[str, Any]:
    """The progress fields in a termination message or a `primehub-job-progress` log line."""
    text = text.strip()
    if text.startswith(PROGRESS_MARK):
        text = text[len(PROGRESS_MARK) :]
    try:
        document = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(document, dict):
        return {}
    return {k: v for k, v in document.items() if k in PROGRESS_FIELDS}


def last_progress(lines: list[str]) -> dict[str, Any]:
    """The newest progress line of a log (lines may carry a timestamp first)."""
    for line in reversed(lines):
        at = line.find(PROGRESS_MARK)
        if at >= 0:
            found = progress_of(line[at:])
            if found:
                return found
    return {}


def _condition(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


def _terminated(pod: dict[str, Any], container: str) -> dict[str, Any] | None:
    status = pod.get("status") or {}
    for item in (status.get("containerStatuses") or []) + (
        status.get("initContainerStatuses") or []
    ):
        if item.get("name") == container:
            return (item.get("state") or {}).get("terminated") or (item.get("lastState") or {}).get(
                "terminated"
            )
    return None


def _waiting(pod: dict[str, Any]) -> str:
    """Why a pending pod is not running yet, when the cluster says."""
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return condition.get("message") or condition.get("reason") or ""
    for item in (status.get("initContainerStatuses") or []) + (
        status.get("containerStatuses") or []
    ):
        waiting = (item.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
            return f"{item['name']}: {waiting.get('reason')} {waiting.get('message', '')}".strip()
        if "running" in (item.get("state") or {}) and item["name"] == INITIALIZER_CONTAINER:
            return "fetching the model"
    return ""


def observed(
    record: JobRecord, job: dict[str, Any], pods: list[dict[str, Any]], log_progress: dict[str, Any]
) -> JobRecord:
    """The record with the phase, message and progress the Job and its newest pod show.

    The job container's termination message (the runner's final progress, written by
    jobrun) is the final word; while it runs, the newest progress line of its log.
    """
    pods = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
    pod = pods[-1] if pods else None
    status = job.get("status") or {}
    update: dict[str, Any] = {}
    progress = dict(log_progress)
    terminated = _terminated(pod, JOB_CONTAINER) if pod else None
    if terminated:
        progress.update(progress_of(terminated.get("message") or ""))
    update.update(
        {
            "rows_read": progress.get("rowsRead", record.rows_read),
            "rows_scored": progress.get("rowsScored", record.rows_scored),
            "rows_failed": progress.get("rowsFailed", record.rows_failed),
            "rows_per_second": progress.get("rowsPerSecond", record.rows_per_second),
            "total_rows": progress.get("totalRows", record.total_rows),
            "progress": progress.get("progress", record.progress),
            "chunks_done": progress.get("chunksDone", record.chunks_done),
            "start_time": progress.get("startTime") or record.start_time,
            "finish_time": progress.get("finishTime") or record.finish_time,
        }
    )
    complete, failed = _condition(job, "Complete"), _condition(job, "Failed")
    if complete:
        update["phase"] = JobPhase.SUCCEEDED
        update["message"] = progress.get("message", "")
        update["progress"] = 1.0
    elif failed:
        update["phase"] = JobPhase.FAILED
        reason = progress.get("message") or ""
        if not reason and pod is not None:
            init = _terminated(pod, INITIALIZER_CONTAINER)
            if init and init.get("exitCode"):
                reason = f"the model could not be fetched: {init.get('message', '').strip()}"
            elif terminated:
                reason = (terminated.get("message") or terminated.get("reason") or "").strip()
        update["message"] = reason or failed.get("message") or failed.get("reason", "")
    elif pod is not None and (pod.get("status") or {}).get("phase") == "Running":
        update["phase"] = JobPhase.RUNNING
        update["message"] = (
            f"retrying after {status['failed']} failed attempt(s)" if status.get("failed") else ""
        )
    else:
        update["phase"] = JobPhase.PENDING
        update["message"] = _waiting(pod) if pod is not None else ""
    if update["phase"] is not JobPhase.PENDING and not update["start_time"]:
        update["start_time"] = _time(status.get("startTime"))
    if update["phase"].finished and not update["finish_time"]:
        when = status.get("completionTime") or (complete or failed or {}).get("lastTransitionTime")
        update["finish_time"] = _time(when)
    return record.model_copy(update=update)


def _time(text: str | None) -> str | None:
    """A Kubernetes time ('...:05Z') in the API's format ('...:05.000Z')."""
    parsed = parse_time(text)
    return format_time(parsed) if parsed else None
