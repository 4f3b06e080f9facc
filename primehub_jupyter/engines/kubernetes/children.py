"""A PhDeployment's children on the API server: per predictor a Deployment, Service and
autoscaler; Ingresses or an HTTPRoute; the clients Secret.

The manifests are built in `resources`, `routing` and `autoscaling`; here they are created,
replaced when what the operator asks for changed (by hash), scaled to zero, and pruned.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ...core.models import DeploymentSpec
from . import resources
from .client import (
    DEPLOYMENTS,
    HPAS,
    HTTPROUTES,
    HTTPSCALEDOBJECTS,
    INGRESSES,
    PHDEPLOYMENTS,
    SCALEDOBJECTS,
    SECRETS,
    SERVICES,
    Kind,
    Kube,
    KubeError,
)
from .crd import ANNOTATION_APPLIED, LABEL_ID

log = logging.getLogger("primehub.operator")

# Annotation prefixes the operator owns on its children.
_OWN_PREFIXES = ("nginx.ingress.kubernetes.io/", "primehub.io/", "prometheus.io/")
# Fields the API server assigns to a Service; a replace must carry them over.
_SERVICE_ASSIGNED = ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy")
#: Every kind of child, by its manifest's kind.
_ALL = (DEPLOYMENTS, SERVICES, INGRESSES, HPAS, SCALEDOBJECTS, HTTPSCALEDOBJECTS, HTTPROUTES)
KINDS = {kind.kind: kind for kind in _ALL}
AUTOSCALERS = (HPAS, SCALEDOBJECTS, HTTPSCALEDOBJECTS)


async def apply(
    kube: Kube, kind: Kind, desired: dict[str, Any], *, keep_replicas: bool = False
) -> dict[str, Any]:
    """Create the object, or replace it when what we asked for changed (by hash).

    `keep_replicas`: an autoscaler owns the Deployment's replica count; a replace keeps it.
    """
    name = desired["metadata"]["name"]
    live = await kube.find(kind, name)
    if live is None:
        try:
            return await kube.create(kind, desired)
        except KubeError as error:
            if error.status != 409:
                raise
            live = await kube.get(kind, name)
    want = desired["metadata"]["annotations"][ANNOTATION_APPLIED]
    annotations = live["metadata"].get("annotations") or {}
    if annotations.get(ANNOTATION_APPLIED) == want:
        return live
    body = json.loads(json.dumps(desired))
    meta = body["metadata"]
    meta["resourceVersion"] = live["metadata"]["resourceVersion"]
    # Keep what others added (the deployment controller's revision annotation, labels of
    # other tools), but not keys of ours that we no longer set (auth annotations of an
    # endpoint that became public).
    theirs = {k: v for k, v in annotations.items() if not k.startswith(_OWN_PREFIXES)}
    meta["annotations"] = {**theirs, **meta.get("annotations", {})}
    meta["labels"] = {**(live["metadata"].get("labels") or {}), **meta.get("labels", {})}
    if kind is SERVICES:
        for key in _SERVICE_ASSIGNED:
            if key in (live.get("spec") or {}):
                body["spec"][key] = live["spec"][key]
    if keep_replicas and "replicas" in (live.get("spec") or {}):
        body["spec"]["replicas"] = live["spec"]["replicas"]
    log.info("updating %s %s", kind.kind, name)
    return await kube.replace(kind, name, body)


async def owned(kube: Kube, kind: Kind, name: str) -> list[dict[str, Any]]:
    """The children of kind `kind` labelled for PhDeployment `name` ([] if the kind is absent)."""
    try:
        return await kube.list(kind, labels=f"{LABEL_ID}={name}")
    except KubeError as error:
        if error.not_found:  # KEDA or the Gateway API is not installed: nothing of it is ours
            return []
        raise


async def scale_to_zero(kube: Kube, name: str) -> None:
    """No replica of deployment `name` runs: autoscalers go, Deployments scale to 0.

    Deployments, Services and routes stay, so starting again is a scale-up.
    """
    for kind in AUTOSCALERS:
        for child in await owned(kube, kind, name):
            await _delete(kube, kind, child["metadata"]["name"])
    for live in await owned(kube, DEPLOYMENTS, name):
        if int((live.get("spec") or {}).get("replicas") or 0) != 0:
            log.info("scaling %s to zero", live["metadata"]["name"])
            # The hash is cleared so that starting again re-applies the whole manifest.
            await kube.patch(
                DEPLOYMENTS,
                live["metadata"]["name"],
                {"metadata": {"annotations": {ANNOTATION_APPLIED: None}}, "spec": {"replicas": 0}},
            )


async def _delete(kube: Kube, kind: Kind, name: str) -> None:
    try:
        await kube.delete(kind, name)
    except KubeError as error:
        if not error.not_found:
            raise


async def prune(kube: Kube, name: str, desired: list[dict[str, Any]]) -> list[str]:
    """Delete the children of `name` no longer desired (a removed predictor's, an old layout's).

    Owner references would only collect them with the PhDeployment itself; a predictor
    removed from the spec (promote) must go at once. Returns what was deleted, as Kind/name.
    """
    wanted = {(d["kind"], d["metadata"]["name"]) for d in desired}
    deleted = []
    # Routes first, then what they pointed at: no request is sent to a Service that is gone.
    order = (INGRESSES, HTTPROUTES, *AUTOSCALERS, SERVICES, DEPLOYMENTS)
    for kind in order:
        for child in await owned(kube, kind, name):
            key = (kind.kind, child["metadata"]["name"])
            if key not in wanted:
                log.info("deleting %s %s (no longer in the spec of %s)", *key, name)
                await _delete(kube, kind, key[1])
                deleted.append(f"{key[0]}/{key[1]}")
    return deleted


async def ensure_clients_secret(kube: Kube, cr: dict[str, Any], spec: DeploymentSpec) -> None:
    """nginx needs the Secret to exist before it accepts a private Ingress."""
    name = resources.clients_secret_name(cr["metadata"]["name"])
    if await kube.find(SECRETS, name) is None:
        try:
            await kube.create(SECRETS, resources.clients_secret_manifest(cr, spec.group_name))
        except KubeError as error:
            if error.status != 409:
                raise


async def prune_clients(kube: Kube, cr: dict[str, Any]) -> bool:
    """Drop hashes of clients no longer in the spec (the engine does it too, at once).

    The Secret is read before the PhDeployment and written with the Secret's
    resourceVersion: a client the engine is adding right now is either already in the spec
    we read, or its hash write makes our patch fail; it is never pruned by mistake.
    False when that patch lost the race: reconcile again.
    """
    secret_name = resources.clients_secret_name(cr["metadata"]["name"])
    secret = await kube.find(SECRETS, secret_name)
    if secret is None or not secret.get("data"):
        return True
    fresh = await kube.find(PHDEPLOYMENTS, cr["metadata"]["name"])
    if fresh is None:
        return True
    clients = ((fresh.get("spec") or {}).get("endpoint") or {}).get("clients") or []
    names = {c.get("name") for c in clients}
    stale = [key for key in secret["data"] if key not in names]
    if not stale:
        return True
    patch = {
        "metadata": {"resourceVersion": secret["metadata"]["resourceVersion"]},
        "data": dict.fromkeys(stale),
    }
    try:
        await kube.patch(SECRETS, secret_name, patch)
        log.info("removed stale client hashes %s of %s", stale, cr["metadata"]["name"])
    except KubeError as error:
        if error.status != 409:
            raise
        return False
    return True
