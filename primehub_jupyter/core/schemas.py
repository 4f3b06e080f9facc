"""JSON schemas generated from the contract models: API components, and structural CRD schemas."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .bodies import REQUESTS, RESPONSES
from .compare import ComparisonReport
from .metrics import MetricsCharts, MetricsReport

# A field marked with this key (bodies.SpecPatch) holds a merge patch of the named model.
MERGE_PATCH_KEY = "x-merge-patch-of"


def api_models() -> list[type[BaseModel]]:
    """Every request and response body of the REST API; add new contracts here."""
    return [*REQUESTS, *RESPONSES, MetricsReport, MetricsCharts, ComparisonReport]


def component_schemas(
    models: Iterable[type[BaseModel]], ref_template: str = "#/$defs/{model}"
) -> dict[str, Any]:
    """One named schema per model (and per model it uses), requests as validated, answers as sent.

    A field marked as a merge patch of a model points at `<Model>Patch`: that model's schemas
    with nothing required, generated here too.
    """
    requests = set(REQUESTS)
    pairs = [(m, "validation" if m in requests else "serialization") for m in models]
    _, top = models_json_schema(pairs, by_alias=True, ref_template=ref_template)  # type: ignore[arg-type]
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    for name in list(schemas):
        # Same shape both ways: one name. pydantic only splits a model whose shapes differ.
        for suffix in ("-Input", "-Output"):
            if name.endswith(suffix):
                raise ValueError(f"{name}: a model's request and answer shapes differ")
    patched = _patch_targets(schemas)
    if patched:
        schemas.update(_patch_schemas(schemas, patched, ref_template))
    return _repoint_patches(schemas, ref_template)


def _patch_targets(schemas: dict[str, Any]) -> set[str]:
    """The models some field is a merge patch of, and every model they use."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get(MERGE_PATCH_KEY), str):
                found.add(node[MERGE_PATCH_KEY])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(schemas)
    closure: set[str] = set()
    todo = list(found)
    while todo:
        name = todo.pop()
        if name in closure:
            continue
        closure.add(name)
        todo.extend(_refs(schemas[name]))
    return closure


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        names = {node["$ref"].rsplit("/", 1)[-1]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            names |= _refs(value)
        return names
    if isinstance(node, list):
        return set().union(*(_refs(item) for item in node)) if node else set()
    return set()


def _patch_schemas(schemas: dict[str, Any], names: set[str], ref_template: str) -> dict[str, Any]:
    """`<Model>Patch` copies with nothing required, pointing at each other."""
    prefix = ref_template.split("{model}")[0]

    def repoint(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.removeprefix(prefix) in names:
                return {**node, "$ref": ref + "Patch"}
            return {key: repoint(value) for key, value in node.items()}
        if isinstance(node, list):
            return [repoint(item) for item in node]
        return node

    patches = {}
    for name in sorted(names):
        patch = copy.deepcopy(schemas[name])
        patch.pop("required", None)
        patch["title"] = f"{name}Patch"
        patches[f"{name}Patch"] = repoint(patch)
    return patches


def _repoint_patches(node: Any, ref_template: str) -> Any:
    """A marked field becomes a reference to its `<Model>Patch`, keeping its description."""
    if isinstance(node, dict):
        target = node.get(MERGE_PATCH_KEY)
        if isinstance(target, str):
            ref = {"$ref": ref_template.format(model=f"{target}Patch")}
            return {
                **ref,
                **({"description": node["description"]} if "description" in node else {}),
            }
        return {key: _repoint_patches(value, ref_template) for key, value in node.items()}
    if isinstance(node, list):
        return [_repoint_patches(item, ref_template) for item in node]
    return node


def typescript_schema(models: Iterable[type[BaseModel]]) -> dict[str, Any]:
    """One JSON schema whose `$defs` are the API's bodies, for json-schema-to-typescript."""
    defs = component_schemas(models)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ApiContracts",
        "description": "Generated from primehub_jupyter/core by `make generate`; do not edit.",
        # Every body as a property, so each is reachable and becomes a named type.
        "type": "object",
        "properties": {name: {"$ref": f"#/$defs/{name}"} for name in defs},
        "additionalProperties": False,
        "$defs": {name: _untitled_fields(schema) for name, schema in defs.items()},
    }


def _untitled_fields(node: Any, top: bool = True) -> Any:
    # A field's title, or a sibling of a `$ref`, would make a TypeScript type of its own
    # (`Name1`, `Phase1`...): the models keep their titles, fields and references lose theirs.
    if isinstance(node, dict) and isinstance(node.get("$ref"), str):
        return {"$ref": node["$ref"]}
    if isinstance(node, dict):
        return {
            key: _untitled_fields(value, False)
            for key, value in node.items()
            if top or key != "title" or not isinstance(value, str)
        }
    if isinstance(node, list):
        return [_untitled_fields(item, False) for item in node]
    return node


# ---- Kubernetes structural schemas -------------------------------------------------------

# Keywords a structural schema may not have, or that would change what the API server stores
# (a `default` is applied to every object it reads).
_DROPPED = frozenset({"title", "default", "propertyNames", "examples", "$defs"})


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's schema as validated (what is accepted), in the camelCase of the API."""
    return model.model_json_schema(by_alias=True, mode="validation")


def structural_schema(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Kubernetes structural schema of a pydantic JSON schema.

    References are inlined, `X | None` becomes `X` (nulls are pruned by the API server anyway),
    `additionalProperties: false` goes (pruning drops unknown fields), a dict keyed by a pattern
    becomes `additionalProperties`, and a value of any shape keeps its unknown fields.
    """
    defs = schema.get("$defs", {}) if defs is None else defs
    node = dict(schema)
    ref = node.pop("$ref", None)
    if ref is not None:
        node = {**defs[ref.rsplit("/", 1)[-1]], **node}
    variants = node.pop("anyOf", None)
    if variants is not None:
        kept = [v for v in variants if v.get("type") != "null"]
        if len(kept) != 1:
            raise ValueError(f"a structural schema cannot say 'one of {len(kept)} shapes': {kept}")
        node = {**kept[0], **node}
        return structural_schema(node, defs)
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "properties":
            result[key] = {name: structural_schema(sub, defs) for name, sub in value.items()}
        elif key == "items":
            result[key] = structural_schema(value, defs)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                result[key] = structural_schema(value, defs)
        elif key == "patternProperties":
            (values,) = value.values()
            result["additionalProperties"] = structural_schema(values, defs)
        else:
            result[key] = value
    if (
        result.get("type") == "object"
        and not result.get("properties")
        and ("additionalProperties" not in result)
    ):
        # A document of any shape (e.g. a sample request): keep it as it is.
        result.pop("properties", None)
        result["x-kubernetes-preserve-unknown-fields"] = True
    if "type" not in result and not result.get("x-kubernetes-preserve-unknown-fields"):
        result["x-kubernetes-preserve-unknown-fields"] = True
    # The type first, as people write a CRD: the generated YAML reads like the hand-made one.
    return {**{key: result[key] for key in ("type", "description") if key in result}, **result}
