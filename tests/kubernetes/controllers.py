"""The simulated control plane: the Deployment and ReplicaSet controllers and the scheduler."""

from __future__ import annotations

import copy
import hashlib
import json
import random
import string
from typing import Any

from primehub_jupyter.core.config import parse_cpu, parse_memory

from .store import now_text

REVISION = "deployment.kubernetes.io/revision"


def _condition(kind: str, status: bool, reason: str = "", message: str = "") -> dict[str, Any]:
    condition = {
        "type": kind,
        "status": "True" if status else "False",
        "lastTransitionTime": now_text(),
    }
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def _requests(pod_spec: dict[str, Any]) -> dict[str, float]:
    total = {"cpu": 0.0, "memory": 0.0, "limits.cpu": 0.0, "limits.memory": 0.0}
    for container in pod_spec.get("containers", []):
        res = container.get("resources") or {}
        for src, prefix in ((res.get("requests") or {}, ""), (res.get("limits") or {}, "limits.")):
            if "cpu" in src:
                total[prefix + "cpu"] += parse_cpu(src["cpu"])
            if "memory" in src:
                total[prefix + "memory"] += parse_memory(src["memory"])
    return total


class Controllers:
    """Mixed into Cluster: what kube-controller-manager and kube-scheduler do."""

    # ---- the Deployment controller -------------------------------------------------

    def _deployments(self) -> None:
        replicasets = self._list("apps/replicasets")
        for deployment in self._list("apps/deployments"):
            spec = deployment["spec"]
            template = spec["template"]
            digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
            owned = [rs for rs in replicasets if self._owned(rs, deployment)]
            revisions = [
                int((rs["metadata"].get("annotations") or {}).get(REVISION, "0")) for rs in owned
            ]
            current = next(
                (rs for rs in owned if rs["metadata"]["labels"].get("pod-template-hash") == digest),
                None,
            )
            if current is None:
                labels = {**(template["metadata"].get("labels") or {}), "pod-template-hash": digest}
                current = self.store.create(
                    self._type("apps/replicasets"),
                    self.namespace,
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "metadata": {
                            "name": f"{deployment['metadata']['name']}-{digest}",
                            "labels": labels,
                            "annotations": {REVISION: str(max(revisions, default=0) + 1)},
                            "ownerReferences": [self._ref(deployment)],
                        },
                        "spec": {
                            "replicas": 0,
                            "selector": {
                                "matchLabels": {
                                    **spec["selector"]["matchLabels"],
                                    "pod-template-hash": digest,
                                }
                            },
                            "template": {
                                **template,
                                "metadata": {**template["metadata"], "labels": labels},
                            },
                        },
                        "status": {"replicas": 0},
                    },
                )
                owned.append(current)
            elif int(current["metadata"]["annotations"].get(REVISION, "0")) < max(
                revisions, default=0
            ):
                bumped = copy.deepcopy(current)
                bumped["metadata"]["annotations"][REVISION] = str(max(revisions) + 1)
                current = self._update("apps/replicasets", bumped)
            desired = int(spec.get("replicas", 1))
            available_new = int((current.get("status") or {}).get("availableReplicas", 0))
            for rs in owned:
                want = (
                    desired
                    if rs is current
                    else (0 if desired == 0 or available_new >= desired else rs["spec"]["replicas"])
                )
                if rs["spec"]["replicas"] != want:
                    changed = copy.deepcopy(rs)
                    changed["spec"]["replicas"] = want
                    self._update("apps/replicasets", changed)
            owned = [rs for rs in self._list("apps/replicasets") if self._owned(rs, deployment)]
            current = next(
                rs for rs in owned if rs["metadata"]["labels"].get("pod-template-hash") == digest
            )
            status = lambda rs, k: int((rs.get("status") or {}).get(k, 0))  # noqa: E731
            total = sum(status(rs, "replicas") for rs in owned)
            available = sum(status(rs, "availableReplicas") for rs in owned)
            conditions = [_condition("Available", available >= desired, "MinimumReplicasAvailable")]
            complete = status(current, "availableReplicas") >= desired and total == status(
                current, "replicas"
            )
            conditions.append(
                _condition(
                    "Progressing",
                    True,
                    "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                )
            )
            failure = next(
                (
                    c
                    for c in (current.get("status") or {}).get("conditions") or []
                    if c["type"] == "ReplicaFailure"
                ),
                None,
            )
            if failure:
                conditions.append(failure)
            new_status = {
                "observedGeneration": deployment["metadata"]["generation"],
                "replicas": total,
                "updatedReplicas": status(current, "replicas"),
                "readyReplicas": sum(status(rs, "readyReplicas") for rs in owned),
                "availableReplicas": available,
                "unavailableReplicas": max(desired - available, 0),
                "conditions": conditions,
            }
            revision = current["metadata"]["annotations"][REVISION]
            old_status = deployment.get("status") or {}
            same = {k: v for k, v in old_status.items() if k != "conditions"} == {
                k: v for k, v in new_status.items() if k != "conditions"
            } and [
                (c["type"], c["status"], c.get("reason"), c.get("message"))
                for c in old_status.get("conditions", [])
            ] == [(c["type"], c["status"], c.get("reason"), c.get("message")) for c in conditions]
            annotations = deployment["metadata"].get("annotations") or {}
            if not same or annotations.get(REVISION) != revision:
                changed = copy.deepcopy(deployment)
                changed["status"] = new_status
                changed["metadata"].setdefault("annotations", {})[REVISION] = revision
                self._update("apps/deployments", changed)

    # ---- the ReplicaSet controller --------------------------------------------------

    def _quota_refusal(self, pod_spec: dict[str, Any], name: str) -> str | None:
        wanted = _requests(pod_spec)
        used = {"cpu": 0.0, "memory": 0.0, "limits.cpu": 0.0, "limits.memory": 0.0, "pods": 0.0}
        for pod in self._list("/pods"):
            for k, v in _requests(pod["spec"]).items():
                used[k] += v
            used["pods"] += 1
        for quota in self._list("/resourcequotas"):
            hard = (quota.get("spec") or {}).get("hard") or {}
            for key, limit in hard.items():
                resource = key.removeprefix("requests.")
                if resource not in used:
                    continue
                amount = 1.0 if resource == "pods" else wanted[resource]
                parse = (
                    parse_cpu
                    if "cpu" in resource
                    else (parse_memory if "memory" in resource else float)
                )
                if used[resource] + amount > parse(limit) + 1e-9:
                    return (
                        f'pods "{name}" is forbidden: exceeded quota: {quota["metadata"]["name"]}, '
                        f"requested: {key}={_fmt(resource, amount)}, "
                        f"used: {key}={_fmt(resource, used[resource])}, limited: {key}={limit}"
                    )
        return None

    def _replicasets(self) -> None:
        pods = self._list("/pods")
        for rs in self._list("apps/replicasets"):
            mine = [p for p in pods if self._owned(p, rs)]
            alive = [p for p in mine if not p["metadata"].get("deletionTimestamp")]
            want = int(rs["spec"].get("replicas", 0))
            failure = None
            for _ in range(want - len(alive)):
                name = f"{rs['metadata']['name']}-" + "".join(
                    random.choices(string.ascii_lowercase + string.digits, k=5)
                )
                # Named like generateName in the message, so a repeated refusal reads the same.
                failure = self._quota_refusal(
                    rs["spec"]["template"]["spec"], f"{rs['metadata']['name']}-"
                )
                if failure:
                    self.event(rs, "FailedCreate", f"Error creating: {failure}")
                    break
                template = rs["spec"]["template"]
                alive.append(
                    self.store.create(
                        self._type("/pods"),
                        self.namespace,
                        {
                            "apiVersion": "v1",
                            "kind": "Pod",
                            "metadata": {
                                "name": name,
                                "labels": dict(template["metadata"].get("labels") or {}),
                                "annotations": dict(template["metadata"].get("annotations") or {}),
                                "ownerReferences": [self._ref(rs)],
                            },
                            "spec": copy.deepcopy(template["spec"]),
                            "status": {"phase": "Pending", "conditions": []},
                        },
                    )
                )
            surplus = len(alive) - want
            if surplus > 0:
                for pod in sorted(
                    alive, key=lambda p: (self._ready(p), p["metadata"]["creationTimestamp"])
                )[:surplus]:
                    self._terminate(pod)
            alive = [
                p
                for p in self._list("/pods")
                if self._owned(p, rs) and not p["metadata"].get("deletionTimestamp")
            ]
            ready = sum(1 for p in alive if self._ready(p))
            conditions = (
                [_condition("ReplicaFailure", True, "FailedCreate", failure)] if failure else []
            )
            status = {
                "replicas": len(alive),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "observedGeneration": rs["metadata"]["generation"],
                "conditions": conditions,
            }
            old = rs.get("status") or {}
            if {k: v for k, v in old.items() if k != "conditions"} != {
                k: v for k, v in status.items() if k != "conditions"
            } or [c.get("message") for c in old.get("conditions") or []] != [
                c.get("message") for c in conditions
            ]:
                changed = copy.deepcopy(rs)
                changed["status"] = status
                self._update("apps/replicasets", changed)

    @staticmethod
    def _ready(pod: dict[str, Any]) -> bool:
        return any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (pod.get("status") or {}).get("conditions") or []
        )

    def _terminate(self, pod: dict[str, Any]) -> None:
        if pod["metadata"].get("deletionTimestamp"):
            return
        changed = copy.deepcopy(pod)
        changed["metadata"]["deletionTimestamp"] = now_text()
        changed["metadata"]["deletionGracePeriodSeconds"] = 1
        self._update("/pods", changed)

    # ---- the scheduler --------------------------------------------------------------

    def _schedule(self) -> None:
        pods = self._list("/pods")
        used = {"cpu": 0.0, "memory": 0.0}
        for pod in pods:
            if pod["spec"].get("nodeName"):
                req = _requests(pod["spec"])
                used["cpu"] += req["cpu"]
                used["memory"] += req["memory"]
        for pod in pods:
            if pod["spec"].get("nodeName") or pod["metadata"].get("deletionTimestamp"):
                continue
            reason = self._unschedulable(pod, used)
            if reason:
                self._set_condition(pod, _condition("PodScheduled", False, "Unschedulable", reason))
                self.event(pod, "FailedScheduling", reason)
                continue
            req = _requests(pod["spec"])
            used["cpu"] += req["cpu"]
            used["memory"] += req["memory"]
            changed = copy.deepcopy(pod)
            changed["spec"]["nodeName"] = "node-1"
            changed["status"]["conditions"] = [_condition("PodScheduled", True)]
            self._update("/pods", changed)

    def _unschedulable(self, pod: dict[str, Any], used: dict[str, float]) -> str | None:
        spec = pod["spec"]
        for volume in spec.get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim and claim not in self.pvcs:
                return f'persistentvolumeclaim "{claim}" not found'
        selector = spec.get("nodeSelector") or {}
        if any(self.node_labels.get(k) != v for k, v in selector.items()):
            return "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
        for taint in self.taints:
            tolerated = any(
                t.get("key") == taint["key"]
                and (t.get("operator") == "Exists" or t.get("value") == taint.get("value"))
                and t.get("effect", taint["effect"]) == taint["effect"]
                for t in spec.get("tolerations") or []
            )
            if not tolerated:
                return (
                    f"0/1 nodes are available: 1 node(s) had untolerated taint "
                    f"{{{taint['key']}: {taint.get('value', '')}}}."
                )
        req = _requests(spec)
        short = []
        if used["cpu"] + req["cpu"] > self.node_cpu + 1e-9:
            short.append("Insufficient cpu")
        if used["memory"] + req["memory"] > self.node_memory:
            short.append("Insufficient memory")
        if short:
            return f"0/1 nodes are available: {', '.join('1 ' + s for s in short)}."
        return None

    def _set_condition(self, pod: dict[str, Any], condition: dict[str, Any]) -> None:
        conditions = [
            c for c in pod["status"].get("conditions") or [] if c["type"] != condition["type"]
        ]
        old = next(
            (c for c in pod["status"].get("conditions") or [] if c["type"] == condition["type"]),
            None,
        )
        if old and (old["status"], old.get("reason"), old.get("message")) == (
            condition["status"],
            condition.get("reason"),
            condition.get("message"),
        ):
            return
        changed = copy.deepcopy(pod)
        changed["status"]["conditions"] = [*conditions, condition]
        self._update("/pods", changed)


def _fmt(resource: str, amount: float) -> str:
    if "memory" in resource:
        return f"{int(amount / 1024**2)}Mi"
    return f"{amount:g}"
