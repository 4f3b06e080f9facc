"""PrimeHub's words for spec fields, phases and times (twin of labextension/src/labels.ts)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

# Spec paths (as `flatten_spec` writes them, `predictors.N.` cut off) -> PrimeHub's label.
FIELD_LABELS = {
    "displayName": "Deployment Name",
    "groupName": "Group",
    "description": "Description",
    "updateMessage": "Update Message",
    "userName": "Deployed By",
    "stop": "Deployment Stopped",
    "env": "Environment Variables",
    "endpoint": "Endpoint",
    "endpoint.accessType": "Access Type",
    "endpoint.clients": "Clients",
    "endpoint.policy": "Access Policy",
    "endpoint.policy.groups": "Policy Groups",
    "endpoint.policy.users": "Policy Users",
    "predictors": "Predictors",
    "name": "Predictor Name",
    "replicas": "Replicas",
    "minReplicas": "Min Replicas",
    "maxReplicas": "Max Replicas",
    "targetConcurrency": "Target Concurrency",
    "scaleToZeroAfterSeconds": "Scale to Zero After (s)",
    "traffic": "Traffic (%)",
    "shadow": "Shadow",
    "routing": "Routing",
    "routing.stickyHeader": "Sticky Header",
    "modelImage": "Model Image",
    "modelURI": "Model URI",
    "imagePullSecret": "Image Pull Secret",
    "instanceType": "Instance Type",
    "metadata": "Metadata",
}

# Fields that say who and why, not what: left out of comparisons.
IGNORED_FIELDS = frozenset({"updateMessage", "userName"})

# The one table of phase colours: (HTML colour, text colour on it, rich style). Deploying and
# Stopping move by themselves (yellow); the sidebar's CSS uses the same tones
# (PHASE_TONES in labextension/src/format.ts).
PHASES = {
    "Deployed": ("#2e7d32", "#fff", "green"),
    "Failed": ("#c62828", "#fff", "red"),
    "Deploying": ("#f9a825", "#000", "yellow"),
    "Stopping": ("#f9a825", "#000", "yellow"),
    "Stopped": ("#757575", "#fff", "bright_black"),
    # A batch job's phases (core/jobs.py JobPhase); Failed is shared.
    "Pending": ("#f9a825", "#000", "yellow"),
    "Running": ("#f9a825", "#000", "yellow"),
    "Succeeded": ("#2e7d32", "#fff", "green"),
    "Cancelled": ("#757575", "#fff", "bright_black"),
}
UNKNOWN_PHASE = ("#757575", "#fff", "white")

_PREDICTOR = re.compile(r"predictors\.(\d+)(?:\.(.+))?")
_ENV_ROW = re.compile(r"env\.(\d+)(?:\.(name|value))?")


def phase_color(phase: str) -> str:
    """The HTML colour of a phase."""
    return PHASES.get(phase, UNKNOWN_PHASE)[0]


def phase_text_color(phase: str) -> str:
    """The colour of text on a phase's colour (a badge)."""
    return PHASES.get(phase, UNKNOWN_PHASE)[1]


def phase_style(phase: str) -> str:
    """The rich (terminal) style of a phase."""
    return PHASES.get(phase, UNKNOWN_PHASE)[2]


def field_label(path: str) -> str:
    """`predictors.0.replicas` -> `Replicas`; `predictors.0.metadata.team` -> `Metadata: team`."""
    rest, suffix = path, ""
    match = _PREDICTOR.fullmatch(path)
    if match:
        rest = match.group(2) or "predictors"
        if match.group(1) != "0":
            suffix = f" (predictor {int(match.group(1)) + 1})"
    if rest in FIELD_LABELS:
        return FIELD_LABELS[rest] + suffix
    for parent in ("metadata", "env"):
        if rest.startswith(parent + "."):
            return f"{FIELD_LABELS[parent]}: {rest[len(parent) + 1 :]}{suffix}"
    return path


def api_field_label(field: str) -> str:
    """The label of an API error's field (`spec.predictors.0.replicas` -> `Replicas`)."""
    if field == "id":
        return "Deployment ID"
    if field == "spec":
        return "Deployment"
    path = field.removeprefix("spec.")
    env = _ENV_ROW.fullmatch(path)
    if env:
        part = f" {env.group(2).capitalize()}" if env.group(2) else ""
        return f"{FIELD_LABELS['env']} (row {int(env.group(1)) + 1}){part}"
    return field_label(path)


def display_value(path: str, value: str | None) -> str:
    """A flattened value as a person reads it: Yes/No, Public/Private, (none) for blank."""
    if value is None or value == "":
        return "(none)"
    if path == "stop" or path == "shadow" or path.endswith(".shadow"):
        return {"true": "Yes", "false": "No"}.get(value, value)
    if path == "endpoint.accessType":
        return {"private": "Private", "public": "Public"}.get(value, value)
    return value


def _leaf(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def flatten_spec(spec: Any, ignore: frozenset[str] = IGNORED_FIELDS) -> dict[str, str]:
    """A spec as dotted paths and printable values, the way the sidebar flattens it.

    `{name, value}` lists (environment variables) become `env.NAME`; `{name}` lists (clients)
    and lists of plain values become one comma-separated value.
    """
    out: dict[str, str] = {}

    def is_obj(item: Any) -> bool:
        return isinstance(item, dict)

    def walk(value: Any, at: str) -> None:
        if isinstance(value, list):
            if not value:
                out[at] = ""
            elif all(is_obj(i) and set(i) == {"name", "value"} for i in value):
                for item in value:
                    out[f"{at}.{_leaf(item['name'])}"] = _leaf(item["value"])
            elif all(is_obj(i) and set(i) == {"name"} for i in value):
                out[at] = ", ".join(_leaf(i["name"]) for i in value)
            elif all(not isinstance(i, dict | list) for i in value):
                out[at] = ", ".join(_leaf(i) for i in value)
            else:
                for index, item in enumerate(value):
                    walk(item, f"{at}.{index}")
            return
        if isinstance(value, dict):
            if not value and at:
                out[at] = ""
            for key, item in value.items():
                if not at and key in ignore:
                    continue
                walk(item, f"{at}.{key}" if at else key)
            return
        out[at] = _leaf(value)

    walk(spec, "")
    return out


def diff_specs(
    before: Any, after: Any, ignore: frozenset[str] = IGNORED_FIELDS
) -> list[tuple[str, str | None, str | None]]:
    """Fields that differ, as (path, before, after); a blank and a missing value are the same.

    Who and why (`ignore`: the update message and the user) are left out unless asked for.
    """
    a, b = flatten_spec(before, ignore), flatten_spec(after, ignore)
    changes = []
    for field in dict.fromkeys([*b, *a]):
        was, now = a.get(field), b.get(field)
        if was == now or (not was and not now):
            continue
        changes.append((field, was, now))
    return changes


def describe_changes(
    before: Any, after: Any, ignore: frozenset[str] = IGNORED_FIELDS
) -> list[tuple[str, str, str]]:
    """`diff_specs` in PrimeHub's words: (label, before, after)."""
    return [
        (field_label(path), display_value(path, was), display_value(path, now))
        for path, was, now in diff_specs(before, after, ignore)
    ]


def rollback_spec(current: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """The spec a roll back to `target` applies, as the server builds it (for a preview):
    the target's spec with the current stop, user and clients."""
    endpoint = dict(target.get("endpoint") or {"accessType": "public"})
    endpoint["clients"] = (current.get("endpoint") or {}).get("clients", [])
    return {
        **target,
        "stop": current.get("stop"),
        "userName": current.get("userName"),
        "endpoint": endpoint,
    }


def _parse(iso: str) -> datetime | None:
    try:
        then = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    return then if then.tzinfo else None


def local_time(iso: str | None) -> str:
    """A time in the local zone with its abbreviation (`2026-11-29 21:25:59 CET`), as the
    sidebar shows it; `utc_time` is its tooltip."""
    if not iso:
        return "-"
    then = _parse(iso)
    return then.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z") if then else iso


def utc_time(iso: str | None) -> str:
    """The ISO 8601 UTC form of a time (`2026-11-29T20:25:59Z`)."""
    if not iso:
        return ""
    then = _parse(iso)
    return then.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if then else iso


def log_file_name(deployment_id: str, replica: str | None = None) -> str:
    """`<replica>.log` (a replica's name starts with the id), else `<id>.log`."""
    if not replica:
        return f"{deployment_id}.log"
    return (
        f"{replica}.log" if replica.startswith(deployment_id) else f"{deployment_id}-{replica}.log"
    )


def name_in(names: dict[str, str], field: str) -> str | None:
    """The name a surface gives an API field, trying its parents too
    (`spec.predictors.0.metadata.team` falls back to `spec.predictors.0.metadata`)."""
    probe = field
    while probe:
        if probe in names:
            return names[probe]
        probe = probe.rpartition(".")[0]
    return None


def in_words(
    message: str, details: list[dict[str, Any]] | None, names: dict[str, str] | None = None
) -> str:
    """An API message with each `details[].field` path heading a clause
    (`spec.predictors.0.replicas: ...`) replaced by the surface's name for it (`names`: a flag
    such as `--replicas`), else by its label (`Replicas: ...`)."""
    fields = sorted(
        {d["field"] for d in details or [] if isinstance(d, dict) and d.get("field")},
        key=len,
        reverse=True,
    )
    for field in fields:
        name = name_in(names or {}, field) or api_field_label(field)
        message = message.replace(f"{field}:", f"{name}:")
    return message
