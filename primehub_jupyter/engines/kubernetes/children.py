"""A PhDeployment's children on the API server: Deployment, Service, Ingress and clients Secret.

The manifests are built in `resources`; here they are created, replaced when what the
operator asks for changed (by hash), scaled to zero, and pruned.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ...core.models import DeploymentSpec
from . import resources
from .client import DEPLOYMENTS, PHDEPLOYMENTS, SECRETS, SERVICES, Kind, Kube, KubeError
from .crd import ANNOTATION_APPLIED

log = logging.getLogger("primehub.operator")

# Annotation prefixes the operator owns on its children.
_OWN_PREFIXES = ("nginx.ingress.kubernetes.io/", "primehub.io/", "prometheus.io/")
# Fields the API server assigns to a Service; a replace must carry them over.
_SERVICE_ASSIGNED = ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy")


async def apply(kube: Kube, kind: Kind, desired: dict[str, Any]) -> dict[str, Any]:
    """Create the object, or replace it when what we asked for changed (by hash)."""
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
    log.info("updating %s %s", kind.kind, name)
    return await kube.replace(kind, name, body)


async def scale_to_zero(kube: Kube, name: str) -> None:
    """No replica of deployment `name` runs; its Deployment, Service and Ingress stay."""
    live = await kube.find(DEPLOYMENTS, name)
    if live is not None and int((live.get("spec") or {}).get("replicas") or 0) != 0:
        log.info("scaling %s to zero", name)
        # The hash is cleared so that starting again re-applies the whole manifest.
        await kube.patch(
            DEPLOYMENTS,
            name,
            {"metadata": {"annotations": {ANNOTATION_APPLIED: None}}, "spec": {"replicas": 0}},
        )


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
