"""What the emulated API checks on a write: schemas (built-in and CRD) and RBAC."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema

# ---- validation ------------------------------------------------------------------------

# The CEL rules of our CRD, as Python (the emulator has no CEL interpreter).
CEL_RULES: dict[str, Callable[[Any, Any], bool]] = {
    "has(self.modelImage) || has(self.modelURI)": lambda s, o: "modelImage" in s or "modelURI" in s,
    "self.groupName == oldSelf.groupName": lambda s, o: (
        o is None or s.get("groupName") == o.get("groupName")
    ),
    "self.displayName == oldSelf.displayName": lambda s, o: (
        o is None or s.get("displayName") == o.get("displayName")
    ),
    "size(self.metadata.name) <= 63": lambda s, o: len(s["metadata"]["name"]) <= 63,
    # KEDA's and its HTTP add-on's (tests/kubernetes/schemas/).
    "has(self.portName) != has(self.port)": lambda s, o: ("portName" in s) != ("port" in s),
    "!has(self.minReplicaCount) || self.minReplicaCount <= (has(self.maxReplicaCount) ? "
    "self.maxReplicaCount : 100)": lambda s, o: (
        "minReplicaCount" not in s or s["minReplicaCount"] <= s.get("maxReplicaCount", 100)
    ),
}

SCHEMAS = Path(__file__).parent / "schemas"
# The Gateway API's many CEL rules (route-matching invariants) are not translated: the
# emulator checks HTTPRoutes against the structural schema only.
UNCHECKED_CEL = {"gateway.networking.k8s.io"}


def _without_cel(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_cel(v) for k, v in value.items() if k != "x-kubernetes-validations"}
    if isinstance(value, list):
        return [_without_cel(v) for v in value]
    return value


def vendored_crds() -> list[dict[str, Any]]:
    """The CRDs of KEDA, its HTTP add-on and the Gateway API, from their vendored schemas."""
    crds = []
    for path in sorted(SCHEMAS.glob("*.json")):
        doc = json.loads(path.read_text())
        schema = doc["openAPIV3Schema"]
        if doc["group"] in UNCHECKED_CEL:
            schema = _without_cel(schema)
        crds.append(
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{doc['plural']}.{doc['group']}"},
                "spec": {
                    "group": doc["group"],
                    "names": {"kind": doc["kind"], "plural": doc["plural"]},
                    "scope": "Namespaced",
                    "versions": [
                        {
                            "name": doc["version"],
                            "served": True,
                            "storage": True,
                            "schema": {"openAPIV3Schema": schema},
                            "subresources": {"status": {}},
                        }
                    ],
                },
            }
        )
    return crds


def crd_problems(obj: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """What an API server says about a custom object: schema errors, unknown fields, CEL."""
    pruned = prune(copy.deepcopy(obj), schema)
    pruned["metadata"] = obj.get("metadata", {})
    errors = [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(pruned)
    ]
    if pruned != obj:
        errors.append("unknown fields (pruned by the API server)")
    if obj.get("apiVersion", "").split("/")[0] in UNCHECKED_CEL:
        return errors
    return errors + check_cel(pruned, None, schema)


def prune(value: Any, schema: dict[str, Any]) -> Any:
    """What a structural schema keeps: unknown fields and non-nullable nulls are dropped."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return value
    if isinstance(value, dict) and schema.get("type") == "object":
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        result = {}
        for key, item in value.items():
            if item is None and not ((properties or {}).get(key) or {}).get("nullable"):
                continue
            if properties is not None and key in properties:
                result[key] = prune(item, properties[key])
            elif isinstance(extra, dict):
                result[key] = prune(item, extra)
            elif properties is None and extra is None:
                result[key] = item
        return result
    if isinstance(value, list) and schema.get("type") == "array":
        return [prune(v, schema.get("items") or {}) for v in value]
    return value


def check_cel(value: Any, old: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    errors = []
    for rule in schema.get("x-kubernetes-validations") or []:
        check = CEL_RULES.get(rule["rule"])
        if check is None:
            raise AssertionError(f"the emulator does not know the CEL rule {rule['rule']!r}")
        uses_old = "oldSelf" in rule["rule"]
        if uses_old and old is None:
            continue
        if not check(value, old):
            errors.append(f"{path or '<root>'}: Invalid value: {rule.get('message', rule['rule'])}")
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                old_sub = old.get(key) if isinstance(old, dict) else None
                errors += check_cel(value[key], old_sub, sub, f"{path}.{key}".lstrip("."))
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors += check_cel(item, None, schema["items"], f"{path}[{i}]")
    return errors


class BuiltinSchemas:
    """Strict JSON schemas of the Kubernetes API (kubernetes-validate's), one validator a kind."""

    def __init__(self, version: str = "1.33.0") -> None:
        import importlib_resources
        from referencing import Registry, Resource

        self._root = importlib_resources.files("kubernetes_validate").joinpath(
            f"kubernetes-json-schema/v{version}-local-strict"
        )
        definitions = json.loads(self._root.joinpath("_definitions.json").read_text())
        self._registry = Resource.from_contents(definitions) @ Registry()
        self._validators: dict[tuple[str, str], Any] = {}

    def validate(self, obj: dict[str, Any]) -> list[str]:
        from referencing import Resource

        key = (obj.get("apiVersion", ""), obj.get("kind", ""))
        validator = self._validators.get(key)
        if validator is None:
            api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", key[0])
            name = f"{key[1].lower()}-{api}.json"
            schema = json.loads(self._root.joinpath(name).read_text())
            registry = Resource.from_contents(schema) @ self._registry
            validator = jsonschema.validators.Draft202012Validator(schema, registry=registry)
            self._validators[key] = validator
        return [
            f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
            for error in validator.iter_errors(obj)
        ]


_SCHEMAS: BuiltinSchemas | None = None


def builtin_schemas() -> BuiltinSchemas:
    global _SCHEMAS
    if _SCHEMAS is None:
        _SCHEMAS = BuiltinSchemas()
    return _SCHEMAS


# ---- RBAC ------------------------------------------------------------------------------


class RBAC:
    """Role/ClusterRole rules bound to service accounts (the subset this project uses)."""

    def __init__(self, documents: list[dict[str, Any]]) -> None:
        self.documents = documents

    def _roles_for(self, user: str, namespace: str) -> list[dict[str, Any]]:
        kind_name = {
            (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
            for d in self.documents
        }
        roles = []
        for binding in self.documents:
            if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
                continue
            bound_ns = binding["metadata"].get("namespace")
            if binding["kind"] == "RoleBinding" and bound_ns != namespace:
                continue
            for subject in binding.get("subjects") or []:
                sa = f"system:serviceaccount:{subject.get('namespace', bound_ns)}:{subject['name']}"
                if subject["kind"] == "ServiceAccount" and sa == user:
                    ref = binding["roleRef"]
                    role_ns = bound_ns if ref["kind"] == "Role" else None
                    role = kind_name.get((ref["kind"], role_ns, ref["name"]))
                    if role is not None:
                        roles.append(role)
        return roles

    def allowed(
        self, user: str, verb: str, group: str, resource: str, namespace: str, name: str | None
    ) -> bool:
        for role in self._roles_for(user, namespace):
            for rule in role.get("rules") or []:
                if not ({group, "*"} & set(rule.get("apiGroups") or [])):
                    continue
                if not ({resource, "*"} & set(rule.get("resources") or [])):
                    continue
                if not ({verb, "*"} & set(rule.get("verbs") or [])):
                    continue
                names = rule.get("resourceNames")
                if names and name not in names:
                    continue
                return True
        return False
