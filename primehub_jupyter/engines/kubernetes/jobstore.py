"""Batch jobs on the API server: Jobs while they live, the `<deployment>-jobs` ConfigMap after.

A live job is its Job (the record it was created with in an annotation; phase and progress
from the Job's status, its pod and the pod's log). When the engine sees a Job finished, or
cancels one, it writes the final record into the deployment's ConfigMap; that history outlives
the Job, which the cluster removes `ttlSecondsAfterFinished` later.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError as PydanticError

from ...core.errors import Conflict, NotFound, ServiceError, ValidationError
from ...core.jobs import MAX_JOBS_KEPT, JobPhase, JobRecord, job_id_problem
from ...core.models import utcnow
from . import jobs, resources
from .client import CONFIGMAPS, DEPLOYMENTS, JOBS, PHDEPLOYMENTS, PODS, Kube, KubeError
from .crd import LABEL_APP
from .logs import log_line

log = logging.getLogger("primehub.jobs")
# Log lines read for the newest progress of a running job.
PROGRESS_TAIL = 200


def record_of(text: str | None) -> JobRecord | None:
    """The JobRecord a Job annotation or ConfigMap entry holds; None when unreadable."""
    if not text:
        return None
    try:
        return JobRecord.model_validate(json.loads(text))
    except (ValueError, PydanticError) as error:
        log.warning("an unreadable job record is skipped: %s", error)
        return None


def job_finished(job: dict[str, Any]) -> bool:
    """Whether a Job has its Complete or Failed condition."""
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


class KubeJobs:
    """The KubernetesEngine's job methods; `error` turns API errors into the engine's."""

    def __init__(
        self,
        kube: Kube,
        error: Callable[[KubeError], ServiceError],
        options: jobs.JobOptions,
    ) -> None:
        self.kube = kube
        self.error = error
        self.options = options

    # ---- reads ------------------------------------------------------------------------

    async def _records(self, deployment_id: str) -> dict[str, JobRecord]:
        found = await self.kube.find(CONFIGMAPS, jobs.records_name(deployment_id))
        records = {}
        for key, text in ((found or {}).get("data") or {}).items():
            record = record_of(text)
            if record is not None and record.id == key:
                records[key] = record
        return records

    async def _live(self, selector: str) -> list[tuple[JobRecord, dict[str, Any]]]:
        found = []
        for job in await self.kube.list(JOBS, labels=selector):
            annotations = job["metadata"].get("annotations") or {}
            record = record_of(annotations.get(jobs.ANNOTATION_JOB))
            if record is not None:
                found.append((record, job))
        return found

    async def _log_progress(self, pods: list[dict[str, Any]]) -> dict[str, Any]:
        newest = max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
        try:
            text = await self.kube.pod_log(
                newest["metadata"]["name"], jobs.JOB_CONTAINER, tail=PROGRESS_TAIL
            )
        except KubeError:  # not started yet, or gone: no progress to read
            return {}
        return jobs.last_progress(text.splitlines())

    async def _observe(
        self, record: JobRecord, job: dict[str, Any], pods: list[dict[str, Any]]
    ) -> JobRecord:
        mine = [p for p in pods if jobs.job_of(p) == record.id]
        running = any((p.get("status") or {}).get("phase") == "Running" for p in mine)
        progress = await self._log_progress(mine) if running else {}
        return jobs.observed(record, job, mine, progress)

    async def _collect(self, deployment_id: str, job_id: str | None = None) -> list[JobRecord]:
        """The deployment's jobs (one when `job_id`), finished ones settled on the way."""
        selector = f"{jobs.LABEL_JOB_DEPLOYMENT}={deployment_id}"
        if job_id:
            selector += f",{jobs.LABEL_JOB}={job_id}"
        try:
            records = await self._records(deployment_id)
            live = await self._live(selector)
            pods = await self.kube.list(PODS, labels=selector) if live else []
        except KubeError as error:
            raise self.error(error) from None
        result = {k: v for k, v in records.items() if job_id in (None, k)}
        for record, job in live:
            if record.id in result:  # settled (finished or cancelled): the record is final
                continue
            current = await self._observe(record, job, pods)
            if current.phase.finished:
                await self._settle(deployment_id, current)
            result[current.id] = current
        ordered = sorted(result.values(), key=lambda r: (r.create_time, r.id), reverse=True)
        return ordered[:MAX_JOBS_KEPT]

    async def all(self, deployment_id: str) -> list[JobRecord]:
        """Newest first, at most MAX_JOBS_KEPT."""
        return await self._collect(deployment_id)

    async def get(self, deployment_id: str, job_id: str) -> JobRecord:
        # Only a valid id goes into a label selector.
        found = [] if job_id_problem(job_id) else await self._collect(deployment_id, job_id)
        if not found:
            raise NotFound(f"job '{job_id}' of deployment '{deployment_id}' not found")
        return found[0]

    async def running(self) -> list[JobRecord]:
        """Pending and Running jobs of every deployment (each holds quota like a replica)."""
        try:
            live = await self._live(f"{LABEL_APP}={jobs.JOB_APP}")
            pods = await self.kube.list(PODS, labels=f"{LABEL_APP}={jobs.JOB_APP}") if live else []
        except KubeError as error:
            raise self.error(error) from None
        result = []
        for record, job in live:
            if job["metadata"].get("deletionTimestamp") or job_finished(job):
                continue
            mine = [p for p in pods if jobs.job_of(p) == record.id]
            result.append(jobs.observed(record, job, mine, {}))
        return result

    async def sweep(self) -> None:
        """Settle every finished Job, so its outcome is kept after the TTL removes it."""
        try:
            live = await self._live(f"{LABEL_APP}={jobs.JOB_APP}")
        except KubeError as error:
            log.warning("jobs not swept: %s", error.message)
            return
        for deployment_id in sorted({r.deployment_id for r, job in live if job_finished(job)}):
            try:
                await self._collect(deployment_id)
            except ServiceError as error:
                log.warning("jobs of %s not swept: %s", deployment_id, error.message)

    # ---- writes -----------------------------------------------------------------------

    async def _settle(self, deployment_id: str, record: JobRecord) -> None:
        """Write the final record into the ConfigMap (made on first use) and keep the newest."""
        name = jobs.records_name(deployment_id)
        patch = {"data": {record.id: jobs.record_json(record)}}
        try:
            try:
                stored = await self.kube.patch(CONFIGMAPS, name, patch)
            except KubeError as error:
                if not error.not_found:
                    raise
                cr = await self.kube.find(PHDEPLOYMENTS, deployment_id)
                if cr is None:  # the deployment is going: its jobs go with it
                    return
                manifest = jobs.records_manifest(cr)
                manifest["data"] = patch["data"]
                try:
                    stored = await self.kube.create(CONFIGMAPS, manifest)
                except KubeError as again:
                    if not again.conflict:
                        raise
                    stored = await self.kube.patch(CONFIGMAPS, name, patch)
            await self._prune(deployment_id, stored)
        except KubeError as error:
            raise self.error(error) from None

    async def _prune(self, deployment_id: str, stored: dict[str, Any]) -> None:
        """Drop the oldest finished records (and their Jobs) beyond MAX_JOBS_KEPT."""
        records = [r for r in (record_of(t) for t in (stored.get("data") or {}).values()) if r]
        if len(records) <= MAX_JOBS_KEPT:
            return
        records.sort(key=lambda r: (r.create_time, r.id), reverse=True)
        old = records[MAX_JOBS_KEPT:]
        await self.kube.patch(
            CONFIGMAPS,
            jobs.records_name(deployment_id),
            {"data": {r.id: None for r in old}},
        )
        for record in old:
            await self._delete_job(deployment_id, record.id)

    async def _delete_job(self, deployment_id: str, job_id: str) -> None:
        try:
            await self.kube.delete(JOBS, jobs.job_name(deployment_id, job_id), "Background")
        except KubeError as error:
            if not error.not_found:
                raise

    async def create(self, cr: dict[str, Any], record: JobRecord) -> JobRecord:
        """Create the Job of `record` from the pod of its predictor's Deployment."""
        deployment_id = cr["metadata"]["name"]
        predictor = record.spec.predictor
        try:
            template = await self.kube.find(
                DEPLOYMENTS, resources.child_name(deployment_id, predictor)
            )
        except KubeError as error:
            raise self.error(error) from None
        if template is None:
            raise Conflict(
                f"predictor '{predictor}' of deployment '{deployment_id}' has no pods defined "
                "yet (the operator has not applied it); try again once it is Deployed or Stopped"
            )
        # Where the user finds the failed rows (jobrun delivers the file there), as locally.
        record = record.model_copy(update={"errors": record.spec.errors})
        try:
            data = jobs.job_data(record)
            manifest = jobs.job_manifest(cr, template, record, data, self.options)
        except ValueError as error:
            raise ValidationError(str(error)) from None
        try:
            await self.kube.create(JOBS, manifest)
        except KubeError as error:
            if error.conflict:
                raise Conflict(f"job '{record.id}' exists already") from None
            if error.status == 422:
                raise ValidationError(f"the cluster rejected the job: {error.message}") from None
            raise self.error(error) from None
        return record.model_copy(update={"phase": JobPhase.PENDING})

    async def delete(self, deployment_id: str, job_id: str) -> JobRecord:
        """Cancel a live job (recorded Cancelled, its Job deleted), or forget a finished one."""
        current = await self.get(deployment_id, job_id)
        try:
            if current.phase.finished:
                await self._delete_job(deployment_id, job_id)
                await self.kube.patch(
                    CONFIGMAPS, jobs.records_name(deployment_id), {"data": {job_id: None}}
                )
                return current
        except KubeError as error:
            if not error.not_found:
                raise self.error(error) from None
            return current
        cancelled = current.model_copy(
            update={
                "phase": JobPhase.CANCELLED,
                "message": "cancelled",
                "finish_time": utcnow(),
            }
        )
        # Recorded first: the deletion then removes the only other trace of the job.
        await self._settle(deployment_id, cancelled)
        try:
            await self._delete_job(deployment_id, job_id)
        except KubeError as error:
            raise self.error(error) from None
        return cancelled

    # ---- logs -------------------------------------------------------------------------

    async def logs(self, deployment_id: str, job_id: str, tail: int | None) -> list[str]:
        """The job container's log of the newest pod (the model initializer's before it)."""
        await self.get(deployment_id, job_id)
        selector = f"{jobs.LABEL_JOB_DEPLOYMENT}={deployment_id},{jobs.LABEL_JOB}={job_id}"
        try:
            pods = await self.kube.list(PODS, labels=selector)
        except KubeError as error:
            raise self.error(error) from None
        if not pods:
            return [
                f"{utcnow()} the job's pod is gone (the cluster removes a finished job "
                f"{self.options.ttl_seconds} s after it ends); its log went with it"
            ]
        newest = max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
        name = newest["metadata"]["name"]
        text = ""
        for container in (jobs.JOB_CONTAINER, resources.INITIALIZER_CONTAINER):
            try:
                text = await self.kube.pod_log(name, container, tail=None)
                break
            except KubeError as error:
                if error.status != 400:  # 400: this container has not started
                    raise self.error(error) from None
                text = f"{utcnow()} {error.message}"
        lines = [
            log_line(line)
            for line in text.splitlines()
            if jobs.PROGRESS_MARK not in line  # the engine's channel, not the user's log
        ]
        return lines if tail is None else lines[-tail:] if tail else []


async def sweep_forever(job_store: Callable[[], KubeJobs], interval: float) -> None:
    """Settle finished Jobs every `interval` seconds (so TTL removal loses no outcome)."""
    while True:
        await asyncio.sleep(interval)
        try:
            await job_store().sweep()
        except Exception:  # the sweeper must outlive any one failure; the next round retries
            log.exception("sweeping finished jobs failed")
