"""Deployment files and `--set key=value` as the API's spec and merge patches."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml

from .output import CLIError

SET_SHORTCUTS = {
    "replicas": "predictors.0.replicas",
    "modelURI": "predictors.0.modelURI",
    "modelImage": "predictors.0.modelImage",
    "instanceType": "predictors.0.instanceType",
    "imagePullSecret": "predictors.0.imagePullSecret",
    "accessType": "endpoint.accessType",
    "policyGroups": "endpoint.policy.groups",
    "policyUsers": "endpoint.policy.users",
}
# Lists of names `--set` also takes comma-separated: `endpoint.policy.groups=g1,g2`.
LIST_FIELDS = frozenset({"endpoint.policy.groups", "endpoint.policy.users"})


# The CLI's name for the API fields `update --set` writes: `spec.predictors.0.replicas` is
# `--set replicas` to the person who typed it. Other fields are named in PrimeHub's words.
SET_FLAGS = {
    **{f"spec.{path}": f"--set {short}" for short, path in SET_SHORTCUTS.items()},
    "spec.updateMessage": "-m/--message",
}


def load_document(path: str) -> dict[str, Any]:
    """Read a deployment file (YAML or JSON): `{id, spec}`, a PhDeployment, or a bare spec.

    A relative local modelURI is resolved against the file's folder.
    """
    source = Path(path)
    try:
        text = sys.stdin.read() if path == "-" else source.read_text()
        data = yaml.safe_load(text)
    except OSError as error:
        raise CLIError(f"cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise CLIError(f"{path} is not valid YAML/JSON: {error}") from None
    if not isinstance(data, dict):
        raise CLIError(f"{path} must hold a mapping with a 'spec'")
    if "spec" not in data and "predictors" in data:
        data = {"spec": data}
    body: dict[str, Any] = {"spec": data.get("spec")}
    name = data.get("id") or (data.get("metadata") or {}).get("name")
    if name:
        body["id"] = name
    spec = body["spec"]
    if isinstance(spec, dict) and path != "-":
        for predictor in spec.get("predictors") or []:
            uri = predictor.get("modelURI") if isinstance(predictor, dict) else None
            if isinstance(uri, str) and uri and "://" not in uri and not os.path.isabs(uri):
                candidate = (source.parent / uri).resolve()
                if candidate.exists():
                    predictor["modelURI"] = str(candidate)
    return body


def parse_sets(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`--set a.b=1 --set predictors.0.replicas=2` as a spec merge patch."""
    patch: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise CLIError(f"--set expects key=value, got '{pair}'")
        key, raw = pair.split("=", 1)
        key = SET_SHORTCUTS.get(key, key)
        value = yaml.safe_load(raw) if raw else ""
        if key in LIST_FIELDS and not isinstance(value, list):
            value = [n.strip() for n in str(value or "").split(",") if n.strip()]
        parts = key.split(".")
        node: Any = patch
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt_is_index = not last and parts[i + 1].isdigit()
            if part.isdigit():
                index = int(part)
                while len(node) <= index:
                    node.append({})
                if last:
                    node[index] = value
                else:
                    node = node[index]
                continue
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, [] if nxt_is_index else {})
    return patch


def keep_nulls(patch: dict[str, Any], sets: dict[str, Any]) -> dict[str, Any]:
    """`patch` with the nulls of `sets` put back: merging `--set key=null` into a file's patch
    drops the key, but sent as null it removes the field on the server."""
    for key, value in sets.items():
        if value is None:
            patch[key] = None
        elif isinstance(value, dict):
            inner = patch.get(key)
            patch[key] = keep_nulls(inner if isinstance(inner, dict) else {}, value)
    return patch
