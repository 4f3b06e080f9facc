"""What primehub-deploy prints: consoles, tables, a deployment's card, JSON/YAML and errors."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from typing import Any

import click
import yaml

from ..kernel.display import predictor_replicas, ready_text
from ..kernel.examples import curl_example
from ..kernel.words import phase_style

# The formats every listing command accepts with -o/--output.
OUTPUTS = ("table", "json", "yaml")


def console(stderr: bool = False) -> Any:
    """A rich console on stdout (or stderr) that never wraps rows where output is read later."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output (scripts, grep) must not wrap table rows at 80 columns, nor a notebook's
    # `!primehub-deploy ...` (a pseudo-terminal of 80 columns).
    width = None if stream.isatty() and not in_notebook_shell() else 1000
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def in_notebook_shell() -> bool:
    """Run by `!` in a Jupyter kernel: a terminal for colours, but output cannot be redrawn."""
    return "JPY_PARENT_PID" in os.environ


class CLIError(click.ClickException):
    """One readable line on stderr and exit code 1, never a traceback."""

    def show(self, file: Any = None) -> None:
        console(stderr=True).print(f"[red]error:[/red] {self.message}", markup=True)


def ago(value: str | None) -> str:
    """`2m ago` for an API timestamp; the value itself when it is not one."""
    if not value:
        return "-"
    try:
        then = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return value
    seconds = int((datetime.now(timezone.utc) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"


def phase(status: dict[str, Any]) -> str:
    """A status's phase in its colour (rich markup)."""
    name = status.get("phase", "?")
    return f"[{phase_style(name)}]{name}[/]"


def emit(data: Any, output: str) -> bool:
    """Print JSON or YAML when asked; False when the caller should draw a table."""
    if output == "json":
        click.echo(json.dumps(data, indent=2))
        return True
    if output == "yaml":
        click.echo(yaml.safe_dump(data, sort_keys=False).rstrip())
        return True
    return False


def table(*columns: str, **options: Any) -> Any:
    """A borderless rich table with these column headers (folded when too wide, by default)."""
    from rich.table import Table

    found = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        found.add_column(column, **(options or {"overflow": "fold"}))
    return found


def deployments_table(items: list[dict[str, Any]]) -> None:
    """`primehub-deploy get`: one row per deployment."""
    rows = table("ID", "NAME", "GROUP", "PHASE", "READY", "ACCESS", "ENDPOINT", "UPDATED")
    for d in items:
        spec, status = d["spec"], d["status"]
        ready = (
            f"{status.get('availableReplicas', 0)}/0"
            if spec.get("stop")
            else ready_text(spec, status)
        )
        rows.add_row(
            d["id"],
            spec["displayName"],
            spec["groupName"],
            phase(status),
            ready,
            spec["endpoint"]["accessType"],
            status.get("endpoint") or "-",
            ago(status.get("lastUpdated")),
        )
    console().print(rows)


def model_text(predictor: dict[str, Any]) -> str:
    """What a predictor serves: its model URI or image."""
    return predictor.get("modelURI") or predictor.get("modelImage") or "-"


def predictor_rows(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """Model and instance type: plain for one predictor, one line per predictor otherwise."""
    predictors = spec["predictors"]
    if len(predictors) == 1:
        (one,) = predictors
        return [
            ("Model URI", one.get("modelURI") or "-"),
            ("Model image", one.get("modelImage") or "-"),
            ("Instance type", one["instanceType"]),
        ]
    rows = []
    for p in predictors:
        share = "shadow" if p.get("shadow") else f"{p.get('traffic') or 0}%"
        rows.append((f"Predictor {p['name']}", f"{share}  {model_text(p)}  ({p['instanceType']})"))
    return rows


def deployment_detail(d: dict[str, Any]) -> None:
    """One deployment as a card: its fields, then one line per replica."""
    spec, status = d["spec"], d["status"]
    predictor = spec["predictors"][0]
    out = console()
    rows = [
        ("ID", d["id"]),
        ("Name", spec["displayName"]),
        ("Group", spec["groupName"]),
        ("Status", phase(status) + (f"  {status['message']}" if status.get("message") else "")),
        ("Endpoint", status.get("endpoint") or "-"),
        ("Access", spec["endpoint"]["accessType"]),
        *predictor_rows(spec),
        *predictor_replicas(spec, status),
        ("Deployed by", spec.get("userName") or "-"),
        ("Created", status.get("creationTime") or "-"),
        ("Last updated", f"{status.get('lastUpdated') or '-'} ({ago(status.get('lastUpdated'))})"),
        ("Description", spec.get("description") or "-"),
        (
            "Metadata",
            ", ".join(f"{k}={v}" for k, v in predictor.get("metadata", {}).items()) or "-",
        ),
    ]
    if spec["endpoint"]["accessType"] == "private":
        rows.append(("Clients", ", ".join(c["name"] for c in spec["endpoint"]["clients"]) or "-"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        out.print(f"[bold]{key.ljust(width)}[/]  {value}")
    for replica in status.get("replicaStatuses", []):
        mark = "[green]ready[/]" if replica["ready"] else f"[yellow]{replica['phase']}[/]"
        extra = f" restarts={replica['restarts']}" if replica["restarts"] else ""
        note = f"  {replica['message']}" if replica.get("message") else ""
        out.print(f"  replica {replica['name']}: {mark}{extra}{note}")


def preview(changes: list[tuple[str, str, str]], before: str, after: str) -> None:
    """The fields a change will touch, in PrimeHub's words (on stderr: stdout stays data)."""
    out = console(stderr=True)
    if not changes:
        out.print("Nothing changes in the spec; the history records the roll back.")
        return
    rows = table("FIELD", before.upper(), after.upper())
    for label, was, now in changes:
        rows.add_row(label, was, now)
    out.print(rows)


def example(d: dict[str, Any]) -> str:
    """A curl command calling a deployment with its bundle's sample request (the card's)."""
    return curl_example(d)
