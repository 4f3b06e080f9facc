"""The PhDeployment custom resource: names, labels and the CRD with its structural schema."""

from __future__ import annotations

import copy
from typing import Any

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

_ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
_CLIENT_NAME = r"^[a-zA-Z0-9][-_.a-zA-Z0-9]{0,62}$"


def spec_schema(*, rules: bool) -> dict[str, Any]:
    """The structural schema of `spec` (also used for history snapshots, without rules)."""
    predictor: dict[str, Any] = {
        "type": "object",
        "required": ["instanceType"],
        "properties": {
            "name": {"type": "string", "maxLength": 63},
            "replicas": {"type": "integer", "minimum": 1, "maximum": 64},
            "modelImage": {"type": "string", "description": "A container image serving the model."},
            "modelURI": {
                "type": "string",
                "description": "Where the model bundle is: pvc://<claim>/<path>, a path on a "
                "configured volume, http(s)://, s3:// or models:/<name>/<version> (MLflow).",
            },
            "instanceType": {"type": "string", "minLength": 1},
            "imagePullSecret": {"type": "string"},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    schema: dict[str, Any] = {
        "type": "object",
        "required": ["displayName", "groupName", "predictors"],
        "properties": {
            "displayName": {"type": "string", "minLength": 1, "maxLength": 255},
            "description": {"type": "string", "maxLength": 4000},
            "updateMessage": {"type": "string", "maxLength": 1000},
            "groupName": {"type": "string", "minLength": 1},
            "userName": {"type": "string"},
            "stop": {"type": "boolean"},
            "env": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "pattern": _ENV_NAME},
                        "value": {"type": "string"},
                    },
                },
            },
            "endpoint": {
                "type": "object",
                "properties": {
                    "accessType": {"type": "string", "enum": ["public", "private"]},
                    "clients": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {"name": {"type": "string", "pattern": _CLIENT_NAME}},
                        },
                    },
                },
            },
            "predictors": {"type": "array", "minItems": 1, "maxItems": 1, "items": predictor},
        },
    }
    if rules:
        predictor["x-kubernetes-validations"] = [
            {
                "rule": "has(self.modelImage) || has(self.modelURI)",
                "message": "a predictor needs a modelImage or a modelURI",
            }
        ]
        schema["x-kubernetes-validations"] = [
            {"rule": "self.groupName == oldSelf.groupName", "message": "groupName is immutable"},
            {
                "rule": "self.displayName == oldSelf.displayName",
                "message": "displayName is immutable",
            },
        ]
    return schema


def status_schema() -> dict[str, Any]:
    """What the operator observes and the engine records (history)."""
    string = {"type": "string"}
    integer = {"type": "integer"}
    return {
        "type": "object",
        "properties": {
            "phase": {
                "type": "string",
                "enum": ["Deploying", "Deployed", "Stopping", "Stopped", "Failed"],
            },
            "message": string,
            "replicas": integer,
            "availableReplicas": integer,
            "endpoint": string,
            "creationTime": string,
            "lastUpdated": string,
            "observedGeneration": integer,
            "rolloutStarted": {"type": "string", "description": "When the current rollout began."},
            "admitted": {
                "type": "object",
                "description": "What the group quota granted this deployment (operator-owned).",
                "properties": {
                    "cpu": {"type": "number"},
                    "memory": {"type": "number"},
                    "gpu": integer,
                },
            },
            "replicaStatuses": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": string,
                        "ready": {"type": "boolean"},
                        "phase": string,
                        "restarts": integer,
                        "message": string,
                        "startTime": string,
                    },
                },
            },
            "history": {
                "type": "array",
                "maxItems": 32,
                "items": {
                    "type": "object",
                    "required": ["revision", "time", "user", "spec"],
                    "properties": {
                        "revision": integer,
                        "time": string,
                        "user": string,
                        "updateMessage": string,
                        "spec": spec_schema(rules=False),
                    },
                },
            },
        },
    }


def crd_manifest() -> dict[str, Any]:
    """The CustomResourceDefinition, as installed by deploy/base/crd.yaml."""
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


def main() -> None:
    """Print the CRD as YAML: `python -m primehub_jupyter.engines.kubernetes.crd`."""
    import yaml

    print("# Generated by `python -m primehub_jupyter.engines.kubernetes.crd`; do not edit.")
    print(yaml.safe_dump(crd_manifest(), sort_keys=False), end="")


if __name__ == "__main__":
    main()
