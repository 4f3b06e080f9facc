"""The simulated Job controller: a pod per attempt, backoffLimit, podFailurePolicy, TTL."""

from __future__ import annotations

import copy
import random
import string
import time
from typing import Any

from .controllers import _condition
from .store import now_text


def _failure_policy_hit(job: dict[str, Any], pod: dict[str, Any]) -> bool:
    """Whether a failed pod matches a FailJob rule of the Job's podFailurePolicy."""
    rules = ((job["spec"].get("podFailurePolicy") or {}).get("rules")) or []
    status = pod.get("status") or {}
    states = (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
    for rule in rules:
        codes = rule.get("onExitCodes")
        if rule.get("action") != "FailJob" or not codes:
            continue
        for state in states:
            terminated = (state.get("state") or {}).get("terminated")
            if not terminated or codes.get("containerName") not in (None, state["name"]):
                continue
            inside = terminated["exitCode"] in codes["values"]
            if inside == (codes["operator"] == "In"):
                return True
    return False


class JobController:
    """Mixed into Cluster: what kube-controller-manager's Job and TTL controllers do."""

    def _jobs(self) -> None:
        finished_at: dict[str, float] = self.__dict__.setdefault("_jobs_finished", {})
        pods = self._list("/pods")
        now = time.monotonic()
        for job in self._list("batch/jobs"):
            uid = job["metadata"]["uid"]
            if job["metadata"].get("deletionTimestamp"):
                continue
            spec, status = job["spec"], copy.deepcopy(job.get("status") or {})
            conditions = status.get("conditions") or []
            if any(c["type"] in ("Complete", "Failed") for c in conditions):
                ttl = spec.get("ttlSecondsAfterFinished")
                if ttl is None:
                    continue
                if uid not in finished_at:
                    finished_at[uid] = now
                    self._wake_later(ttl)
                if now - finished_at[uid] >= ttl:
                    finished_at.pop(uid)
                    self.store.delete(
                        self._type("batch/jobs"), self.namespace, job["metadata"]["name"]
                    )
                continue
            mine = [p for p in pods if self._owned(p, job)]
            phase = lambda p: (p.get("status") or {}).get("phase")  # noqa: E731
            succeeded = [p for p in mine if phase(p) == "Succeeded"]
            failed = [p for p in mine if phase(p) == "Failed"]
            active = [
                p
                for p in mine
                if phase(p) not in ("Succeeded", "Failed")
                and not p["metadata"].get("deletionTimestamp")
            ]
            status.setdefault("startTime", now_text())
            verdict = None
            if succeeded:
                verdict = _condition("Complete", True)
                status["completionTime"] = now_text()
            elif any(_failure_policy_hit(job, p) for p in failed):
                verdict = _condition(
                    "Failed", True, "PodFailurePolicy", "Container failed with a FailJob exit code"
                )
            elif len(failed) > int(spec.get("backoffLimit", 6)):
                verdict = _condition(
                    "Failed", True, "BackoffLimitExceeded", "Job has reached the backoff limit"
                )
            elif not active:
                active.append(self._job_pod(job))
            if verdict is not None:
                conditions = [*conditions, verdict]
                for pod in active:
                    self._terminate(pod)
                active = []
            status.update(
                active=len(active),
                succeeded=len(succeeded),
                failed=len(failed),
                conditions=conditions,
            )
            if status != (job.get("status") or {}):
                changed = copy.deepcopy(job)
                changed["status"] = status
                self._update("batch/jobs", changed)

    def _job_pod(self, job: dict[str, Any]) -> dict[str, Any]:
        name = job["metadata"]["name"]
        template = job["spec"]["template"]
        labels = {
            **(template["metadata"].get("labels") or {}),
            "batch.kubernetes.io/job-name": name,
            "job-name": name,
            "batch.kubernetes.io/controller-uid": job["metadata"]["uid"],
        }
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        return self.store.create(
            self._type("/pods"),
            self.namespace,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{name}-{suffix}",
                    "labels": labels,
                    "ownerReferences": [self._ref(job)],
                },
                "spec": copy.deepcopy(template["spec"]),
                "status": {"phase": "Pending", "conditions": []},
            },
        )
