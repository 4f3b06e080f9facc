"""Group quota for the operator: what each PhDeployment holds, and whether a spec still fits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError as PydanticError

from ...core.config import PrimeHubConfig
from ...core.models import DeploymentRecord, DeploymentSpec
from ...core.quota import Usage, job_usage, quota_problem_for_usage, requested
from . import jobs
from .client import JOBS, PHDEPLOYMENTS, Kube
from .crd import LABEL_APP
from .jobstore import job_finished, record_of


def usage_json(usage: Usage | None) -> dict[str, Any] | None:
    """A usage as status.admitted holds it."""
    if usage is None:
        return None
    return {"cpu": usage.cpu, "memory": usage.memory, "gpu": usage.gpu}


def usage_from(data: Any) -> Usage | None:
    """status.admitted as a usage; None when there is none."""
    if not isinstance(data, dict):
        return None
    return Usage(
        float(data.get("cpu") or 0), float(data.get("memory") or 0), int(data.get("gpu") or 0), 1
    )


def _fits_within(want: Usage, held: Usage | None) -> bool:
    """Whether `want` needs nothing beyond what is already admitted (a scale-down does not)."""
    return held is not None and (
        want.cpu <= held.cpu + 1e-9 and want.memory <= held.memory and want.gpu <= held.gpu
    )


class QuotaAdmission:
    """The quota each PhDeployment holds; `admit` reserves, `release` frees.

    `retry` is called with each deployment that failed for quota when quota is freed, so it
    may fit now (the resync would find it too, later).
    """

    def __init__(self, kube: Kube, retry: Callable[[str], None]) -> None:
        self.kube = kube
        self.retry = retry
        self.admitted: dict[str, Usage] = {}
        self._lock = asyncio.Lock()
        self._failed_for_quota: set[str] = set()
        self._groups: dict[str, str] = {}

    def learn(self, crs: list[dict[str, Any]]) -> None:
        """Take what is admitted already from the PhDeployments' status (at start)."""
        for cr in crs:
            usage = usage_from((cr.get("status") or {}).get("admitted"))
            if usage is not None:
                self.admitted[cr["metadata"]["name"]] = usage

    def forget(self, name: str) -> bool:
        """A PhDeployment is gone: its quota is free again. True if it held some."""
        held = self.admitted.pop(name, None) is not None
        self._retry_failed()
        return held

    def fits(self, name: str) -> None:
        """`name` is running as asked: it no longer waits for quota."""
        self._failed_for_quota.discard(name)

    def _retry_failed(self) -> None:
        for name in list(self._failed_for_quota):
            self.retry(name)

    async def admit(
        self, name: str, spec: DeploymentSpec, config: PrimeHubConfig, status: dict[str, Any]
    ) -> str | None:
        """Reserve the group quota this spec needs; the reason when it does not fit.

        Beside the other admitted deployments of the group, its live batch Jobs count, each
        like one replica of its predictor's instance type (what the service checks a job
        against when it is submitted). What is admitted already stays admitted.
        """
        want = requested(config, DeploymentRecord(id=name, spec=spec))
        async with self._lock:
            held = self.admitted.get(name)
            if held is not None and _fits_within(want, held):
                if (held.cpu, held.memory, held.gpu) != (want.cpu, want.memory, want.gpu):
                    self.admitted[name] = want
                    status["admitted"] = usage_json(want)
                    self._retry_failed()
                return None
            others = Usage()
            for other, usage in self.admitted.items():
                if other != name and await self._same_group(other, spec.group_name):
                    others = others.add(usage)
            others = others.add(await self._jobs_usage(config, spec.group_name))
            problem = quota_problem_for_usage(config, spec.group_name, want, others)
            if problem:
                self._failed_for_quota.add(name)
                return problem
            self.admitted[name] = want
            status["admitted"] = usage_json(want)
            return None

    async def _same_group(self, name: str, group: str) -> bool:
        known = self._groups.get(name)
        if known is None:
            cr = await self.kube.find(PHDEPLOYMENTS, name)
            if cr is None:
                self.admitted.pop(name, None)
                return False
            known = (cr.get("spec") or {}).get("groupName", "")
            self._groups[name] = known
        return known == group

    async def _jobs_usage(self, config: PrimeHubConfig, group: str) -> Usage:
        """What the group's unfinished batch Jobs hold (the owning PhDeployment says the group)."""
        total = Usage()
        specs: dict[str, DeploymentSpec | None] = {}
        for job in await self.kube.list(JOBS, labels=f"{LABEL_APP}={jobs.JOB_APP}"):
            metadata = job["metadata"]
            if metadata.get("deletionTimestamp") or job_finished(job):
                continue
            record = record_of((metadata.get("annotations") or {}).get(jobs.ANNOTATION_JOB))
            deployment_id = (metadata.get("labels") or {}).get(jobs.LABEL_JOB_DEPLOYMENT)
            if record is None or not deployment_id:
                continue
            if deployment_id not in specs:
                specs[deployment_id] = await self._spec_of(deployment_id)
            owner = specs[deployment_id]
            if owner is not None and owner.group_name == group:
                deployment = DeploymentRecord(id=deployment_id, spec=owner)
                total = total.add(job_usage(config, deployment, record))
        return total

    async def _spec_of(self, name: str) -> DeploymentSpec | None:
        cr = await self.kube.find(PHDEPLOYMENTS, name)
        if cr is None:
            return None  # its Jobs go with it (ownerReferences)
        try:
            return DeploymentSpec.model_validate(cr.get("spec") or {})
        except PydanticError:
            return None

    async def release(self, name: str, status: dict[str, Any]) -> None:
        """`name` runs nothing (stopped, blocked, failed): its quota is free for the others."""
        async with self._lock:
            if self.admitted.pop(name, None) is not None:
                status["admitted"] = None
                self._retry_failed()
