"""What the operator reports on a PhDeployment: its status subresource and Events."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from ...core.models import MAX_HISTORY, Phase
from ...core.models import format_time as format_api_time
from . import phases, resources
from .client import EVENTS, PHDEPLOYMENTS, Kube, KubeError
from .crd import ANNOTATION_HISTORY, API_VERSION, KIND
from .settings import OperatorSettings

log = logging.getLogger("primehub.operator")


def merged_history(cr: dict[str, Any]) -> list[dict[str, Any]] | None:
    """status.history with the pending entry of the last spec write; None when unchanged."""
    status = cr.get("status") or {}
    history = list(status.get("history") or [])
    raw = (cr["metadata"].get("annotations") or {}).get(ANNOTATION_HISTORY)
    if not raw:
        return None
    try:
        entry = json.loads(raw)
        revision = int(entry["revision"])
    except (ValueError, KeyError, TypeError):
        return None
    if any(h.get("revision") == revision for h in history):
        return None
    history.append(entry)
    history.sort(key=lambda h: int(h.get("revision", 0)), reverse=True)
    return history[:MAX_HISTORY]


async def report(
    kube: Kube,
    settings: OperatorSettings,
    cr: dict[str, Any],
    outcome: phases.Outcome,
    extra: dict[str, Any],
    now: datetime,
) -> None:
    """Write the status fields that changed, and an Event when the phase changed."""
    name = cr["metadata"]["name"]
    old = cr.get("status") or {}
    new: dict[str, Any] = {
        "phase": outcome.phase.value,
        "message": outcome.message,
        "replicas": outcome.replicas,
        "availableReplicas": outcome.available,
        "replicaStatuses": outcome.replica_statuses,
        "predictors": outcome.predictors,
        "observedGeneration": cr["metadata"].get("generation", 0),
        **extra,
    }
    endpoint = resources.endpoint_url(name, settings)
    if endpoint:
        new["endpoint"] = endpoint
    if not old.get("creationTime"):
        created = phases.parse_time(cr["metadata"].get("creationTimestamp"))
        new["creationTime"] = format_api_time(created or now)
    history = merged_history(cr)
    if history is not None:
        new["history"] = history
    patch = {k: v for k, v in new.items() if old.get(k) != v and not (v is None and k not in old)}
    if not patch:
        return
    try:
        await kube.patch(PHDEPLOYMENTS, name, {"status": patch}, sub="status")
    except KubeError as error:
        if error.not_found:
            return
        raise
    if old.get("phase") != outcome.phase.value or (
        outcome.phase == Phase.FAILED and old.get("message") != outcome.message
    ):
        log.info("deployment %s: %s %s", name, outcome.phase.value, outcome.message)
        await post_event(kube, cr, outcome, now)


async def post_event(
    kube: Kube, cr: dict[str, Any], outcome: phases.Outcome, now: datetime
) -> None:
    """A Kubernetes Event on the PhDeployment saying its new phase (`kubectl describe`)."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    failed = outcome.phase == Phase.FAILED
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{cr['metadata']['name']}."},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": cr["metadata"]["name"],
            "namespace": kube.namespace,
            "uid": cr["metadata"].get("uid"),
        },
        "reason": outcome.phase.value,
        "message": (outcome.message or outcome.phase.value)[:1024],
        "type": "Warning" if failed else "Normal",
        "source": {"component": "primehub-operator"},
        "reportingComponent": "primehub-operator",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    try:
        await kube.create(EVENTS, event)
    except KubeError as error:  # events are a courtesy; never fail a reconcile for one
        log.debug("cannot post an event: %s", error)
