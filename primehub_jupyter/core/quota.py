"""Group quota: what running deployments and batch jobs hold, and whether one more fits."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .config import PrimeHubConfig, format_memory
from .jobs import JobRecord
from .models import DeploymentRecord


@dataclass
class Usage:
    """Resources held by deployments."""

    cpu: float = 0.0
    memory: float = 0.0
    gpu: int = 0
    deployments: int = 0

    def add(self, other: Usage) -> Usage:
        return Usage(
            self.cpu + other.cpu,
            self.memory + other.memory,
            self.gpu + other.gpu,
            self.deployments + other.deployments,
        )

    def to_json(self) -> dict:
        return {
            "cpu": round(self.cpu, 3),
            "memory": format_memory(self.memory),
            "gpu": self.gpu,
            "deployments": self.deployments,
        }


def requested(config: PrimeHubConfig, deployment: DeploymentRecord) -> Usage:
    """What a running deployment may hold: per predictor, its most replicas x its instance type."""
    total = Usage(deployments=1)
    for predictor in deployment.spec.predictors:
        instance = config.instance_type(predictor.instance_type)
        if instance is None:
            continue
        n = predictor.highest
        total = total.add(Usage(instance.cpu * n, instance.memory * n, instance.gpu * n, 0))
    return total


def group_usage(config: PrimeHubConfig, deployments: Iterable[DeploymentRecord]) -> Usage:
    """Sum of what the given (running) deployments hold."""
    total = Usage()
    for deployment in deployments:
        total = total.add(requested(config, deployment))
    return total


def job_usage(config: PrimeHubConfig, deployment: DeploymentRecord, job: JobRecord) -> Usage:
    """What a running job holds: one replica of its predictor's instance type (no deployment)."""
    predictor = next(
        (p for p in deployment.spec.predictors if p.name == job.spec.predictor),
        deployment.spec.predictor,
    )
    instance = config.instance_type(predictor.instance_type)
    if instance is None:
        return Usage()
    return Usage(instance.cpu, instance.memory, instance.gpu, 0)


def jobs_usage(
    config: PrimeHubConfig,
    deployments: Iterable[DeploymentRecord],
    jobs: Iterable[JobRecord],
    group_name: str,
) -> Usage:
    """Sum of what the given (running) jobs of a group's deployments hold."""
    by_id = {d.id: d for d in deployments if d.spec.group_name == group_name}
    total = Usage()
    for job in jobs:
        deployment = by_id.get(job.deployment_id)
        if deployment is not None:
            total = total.add(job_usage(config, deployment, job))
    return total


def quota_problem_for_usage(
    config: PrimeHubConfig, group_name: str, want: Usage, used: Usage
) -> str | None:
    """'group resource not enough: ...' when `want` does not fit beside `used`, else None.

    `want.deployments` says whether it is one more deployment (1) or a job (0), which the
    group's maxDeployments does not count.
    """
    group = config.group(group_name)
    if group is None:
        return None
    quota = group.quota
    problems = []
    if quota.cpu is not None and used.cpu + want.cpu > quota.cpu + 1e-9:
        problems.append(
            f"cpu {want.cpu:g} requested, {max(quota.cpu - used.cpu, 0):g} of {quota.cpu:g} free"
        )
    if quota.memory is not None and used.memory + want.memory > quota.memory:
        problems.append(
            f"memory {format_memory(want.memory)} requested, "
            f"{format_memory(max(quota.memory - used.memory, 0))} of "
            f"{format_memory(quota.memory)} free"
        )
    if quota.gpu is not None and used.gpu + want.gpu > quota.gpu:
        problems.append(f"gpu {want.gpu} requested, {max(quota.gpu - used.gpu, 0)} free")
    if (
        quota.max_deployments is not None
        and want.deployments
        and used.deployments + want.deployments > quota.max_deployments
    ):
        problems.append(f"at most {quota.max_deployments} running deployments allowed")
    if not problems:
        return None
    return f"group resource not enough: {'; '.join(problems)} (group '{group.name}')"
