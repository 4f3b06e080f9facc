"""The PhDeployment custom resource: names, labels and the CRD with its structural schema."""

from __future__ import annotations

import copy
import functools
from typing import Any

from pydantic import BaseModel, Field

from ...core.models import IMMUTABLE_SPEC_FIELDS, DeploymentSpec, DeploymentStatus
from ...core.schemas import model_schema, structural_schema

GROUP = "primehub.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "PhDeployment"
PLURAL = "phdeployments"
SINGULAR = "phdeployment"
SHORT_NAMES = ["phd"]

# Every object the operator makes carries these labels.
LABEL_APP = "app"
APP = "primehub-deployment"
LABEL_ID = "primehub.io/phdeployment"
LABEL_GROUP = "primehub.io/group"
LABEL_PREDICTOR = "primehub.io/predictor"

# The newest history entry travels with the spec write (one atomic update), so a crash between
# the spec write and the status write loses nothing: readers and the operator merge it back.
ANNOTATION_HISTORY = "primehub.io/last-history-entry"
# Set by the Jupyter side's engine (KubernetesEngine.deploy_timeout); the operator honours it.
ANNOTATION_DEPLOY_TIMEOUT = "primehub.io/deploy-timeout"
# Hash of what the operator last wrote to a child: an unchanged hash means nothing to update.
ANNOTATION_APPLIED = "primehub.io/applied-hash"

FIELD_MANAGER = "primehub-operator"


class AdmittedUsage(BaseModel):
    """What the group quota granted a deployment (operator-owned)."""

    cpu: float | None = None
    memory: float | None = None
    gpu: int | None = None


class CustomResourceStatus(DeploymentStatus):
    """The status as the custom resource stores it: the API's, and what the operator keeps."""

    observed_generation: int | None = None
    rollout_started: str | None = Field(None, description="When the current rollout began.")
    admitted: AdmittedUsage | None = Field(
        None, description="What the group quota granted this deployment (operator-owned)."
    )


# Rules the API server checks in CEL: the model's validators, where CEL can say them.
_PREDICTOR_RULES = [
    {
        "rule": "has(self.modelImage) || has(self.modelURI)",
        "message": "a predictor needs a modelImage or a modelURI",
    }
]
_SPEC_RULES = [
    {"rule": f"self.{name} == oldSelf.{name}", "message": f"{name} is immutable"}
    for name in IMMUTABLE_SPEC_FIELDS
]


def spec_schema(*, rules: bool) -> dict[str, Any]:
    """The structural schema of `spec`, from DeploymentSpec (history snapshots: without rules)."""
    schema = structural_schema(model_schema(DeploymentSpec))
    if rules:
        schema["properties"]["predictors"]["items"]["x-kubernetes-validations"] = list(
            _PREDICTOR_RULES
        )
        schema["x-kubernetes-validations"] = list(_SPEC_RULES)
    return schema


def status_schema() -> dict[str, Any]:
    """What the operator observes and the engine records (history), from CustomResourceStatus."""
    return structural_schema(model_schema(CustomResourceStatus))


def crd_manifest() -> dict[str, Any]:
    """The CustomResourceDefinition, as installed by deploy/base/crd.yaml (a fresh copy)."""
    return copy.deepcopy(_crd_manifest())


@functools.cache
def _crd_manifest() -> dict[str, Any]:
    root: dict[str, Any] = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema(rules=True),
            "status": status_schema(),
        },
        "x-kubernetes-validations": [
            {
                "rule": "size(self.metadata.name) <= 63",
                "message": "the name (deployment id) is at most 63 characters (a DNS-1035 label)",
            }
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "primehub-deployment"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["primehub"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": root},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
                        {
                            "name": "Available",
                            "type": "integer",
                            "jsonPath": ".status.availableReplicas",
                        },
                        {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


def openapi_schema() -> dict[str, Any]:
    """The openAPIV3Schema of the served version (a copy)."""
    return copy.deepcopy(crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def crd_yaml() -> str:
    """The CRD as deploy/base/crd.yaml holds it (written by `make generate`)."""
    import yaml

    header = "# Generated from primehub_jupyter/core/models.py by `make generate`; do not edit.\n"
    return header + yaml.safe_dump(crd_manifest(), sort_keys=False)
