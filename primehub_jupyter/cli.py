"""primehub-deploy: the command line for deployments, in the spirit of odahuflowctl."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
import yaml

from .kernel.client import Client, PrimeHubError
from .kernel.words import describe_changes, in_words, phase_style, rollback_spec

SET_SHORTCUTS = {
    "replicas": "predictors.0.replicas",
    "modelURI": "predictors.0.modelURI",
    "modelImage": "predictors.0.modelImage",
    "instanceType": "predictors.0.instanceType",
    "imagePullSecret": "predictors.0.imagePullSecret",
    "accessType": "endpoint.accessType",
}


# The CLI's name for the API fields `update --set` writes: `spec.predictors.0.replicas` is
# `--set replicas` to the person who typed it. Other fields are named in PrimeHub's words.
SET_FLAGS = {
    **{f"spec.{path}": f"--set {short}" for short, path in SET_SHORTCUTS.items()},
    "spec.updateMessage": "-m/--message",
}


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output (scripts, grep) must not wrap table rows at 80 columns, nor a notebook's
    # `!primehub-deploy ...` (a pseudo-terminal of 80 columns).
    width = None if stream.isatty() and not _in_notebook_shell() else 1000
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def _in_notebook_shell() -> bool:
    """Run by `!` in a Jupyter kernel: a terminal for colours, but output cannot be redrawn."""
    return "JPY_PARENT_PID" in os.environ


class CLIError(click.ClickException):
    """One readable line on stderr and exit code 1, never a traceback."""

    def show(self, file: Any = None) -> None:
        _console(stderr=True).print(f"[red]error:[/red] {self.message}", markup=True)


def _client(ctx: click.Context) -> Client:
    try:
        return Client(ctx.obj.get("url"), ctx.obj.get("token"))
    except PrimeHubError as error:
        raise CLIError(error.message) from None


def _call(fn: Any, *args: Any, names: dict[str, str] | None = None, **kwargs: Any) -> Any:
    """Call the API; an error is one line naming fields as the user knows them (`names`)."""
    try:
        return fn(*args, **kwargs)
    except PrimeHubError as error:
        raise CLIError(in_words(error.message, error.details, names)) from None


def _confirm(question: str, yes: bool, flag_hint: str) -> None:
    """Ask before something that stops or removes a deployment, unless -y/--yes.

    With no terminal to ask on (a script, a pipe), refuse rather than guess.
    """
    if yes:
        return
    if not sys.stdin.isatty():
        raise CLIError(
            f"{question} Not confirmed: stdin is not a terminal, so nobody can answer; "
            f"pass -y/--yes to {flag_hint} without asking."
        )
    click.confirm(question, abort=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="PRIMEHUB_API_URL", help="Server URL (default: a running Jupyter).")
@click.option("--token", envvar="PRIMEHUB_API_TOKEN", help="API token of that server.")
@click.version_option(package_name="primehub-jupyter")
@click.pass_context
def cli(ctx: click.Context, url: str | None, token: str | None) -> None:
    """Deploy, update, observe and invoke ML models (PrimeHub Model Deployment)."""
    ctx.ensure_object(dict)
    ctx.obj.update(url=url, token=token)


# ---- output helpers ---------------------------------------------------------------------


def _ago(value: str | None) -> str:
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


def _phase(status: dict[str, Any]) -> str:
    phase = status.get("phase", "?")
    return f"[{phase_style(phase)}]{phase}[/]"


def _emit(data: Any, output: str) -> bool:
    """Print JSON or YAML when asked; False when the caller should draw a table."""
    if output == "json":
        click.echo(json.dumps(data, indent=2))
        return True
    if output == "yaml":
        click.echo(yaml.safe_dump(data, sort_keys=False).rstrip())
        return True
    return False


def _deployments_table(items: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "NAME", "GROUP", "PHASE", "READY", "ACCESS", "ENDPOINT", "UPDATED"):
        table.add_column(column, overflow="fold")
    for d in items:
        spec, status = d["spec"], d["status"]
        wanted = spec["predictors"][0]["replicas"] if not spec.get("stop") else 0
        table.add_row(
            d["id"],
            spec["displayName"],
            spec["groupName"],
            _phase(status),
            f"{status.get('availableReplicas', 0)}/{wanted}",
            spec["endpoint"]["accessType"],
            status.get("endpoint") or "-",
            _ago(status.get("lastUpdated")),
        )
    _console().print(table)


def _deployment_detail(d: dict[str, Any]) -> None:
    spec, status = d["spec"], d["status"]
    predictor = spec["predictors"][0]
    console = _console()
    rows = [
        ("ID", d["id"]),
        ("Name", spec["displayName"]),
        ("Group", spec["groupName"]),
        ("Status", _phase(status) + (f"  {status['message']}" if status.get("message") else "")),
        ("Endpoint", status.get("endpoint") or "-"),
        ("Access", spec["endpoint"]["accessType"]),
        ("Model URI", predictor.get("modelURI") or "-"),
        ("Model image", predictor.get("modelImage") or "-"),
        ("Instance type", predictor["instanceType"]),
        ("Replicas", f"{status.get('availableReplicas', 0)}/{predictor['replicas']} available"),
        ("Deployed by", spec.get("userName") or "-"),
        ("Created", status.get("creationTime") or "-"),
        ("Last updated", f"{status.get('lastUpdated') or '-'} ({_ago(status.get('lastUpdated'))})"),
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
        console.print(f"[bold]{key.ljust(width)}[/]  {value}")
    for replica in status.get("replicaStatuses", []):
        mark = "[green]ready[/]" if replica["ready"] else f"[yellow]{replica['phase']}[/]"
        extra = f" restarts={replica['restarts']}" if replica["restarts"] else ""
        note = f"  {replica['message']}" if replica.get("message") else ""
        console.print(f"  replica {replica['name']}: {mark}{extra}{note}")


def _preview(changes: list[tuple[str, str, str]], before: str, after: str) -> None:
    """The fields a change will touch, in PrimeHub's words (on stderr: stdout stays data)."""
    console = _console(stderr=True)
    if not changes:
        console.print("Nothing changes in the spec; the history records the roll back.")
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("FIELD", before.upper(), after.upper()):
        table.add_column(column, overflow="fold")
    for label, was, now in changes:
        table.add_row(label, was, now)
    console.print(table)


def _example(d: dict[str, Any]) -> str:
    endpoint = d["status"].get("endpoint") or "<endpoint>"
    auth = " -u <client>:<token>" if d["spec"]["endpoint"]["accessType"] == "private" else ""
    return (
        f"curl -X POST{auth} {endpoint} \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        '  -d \'{"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}}\''
    )


# ---- documents --------------------------------------------------------------------------


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


def _wait(
    client: Client, deployment_id: str, phase: str, timeout: float, *, says_phase: bool = False
) -> dict[str, Any]:
    """Wait for a phase, showing progress; `says_phase`: the caller prints the final phase
    itself (stop, start, wait), so the progress lines stop before it (never printed twice)."""
    console = _console(stderr=True)
    if not console.is_terminal or _in_notebook_shell():
        # No live spinner where output cannot be redrawn: one line per change instead.
        seen: list[str] = []

        def line(d: dict[str, Any]) -> None:
            status = d["status"]
            if says_phase and status.get("phase") == phase:
                return
            text = f"{deployment_id}: {status.get('phase')}" + (
                f" - {status['message']}" if status.get("message") else ""
            )
            if not seen or seen[-1] != text:
                seen.append(text)
                click.echo(text, err=True)

        return _call(client.wait, deployment_id, phase=phase, timeout=timeout, on_progress=line)
    with console.status(f"waiting for {deployment_id}...") as spinner:

        def progress(d: dict[str, Any]) -> None:
            status = d["status"]
            message = f" - {status['message']}" if status.get("message") else ""
            spinner.update(f"{deployment_id}: {status.get('phase')}{message}")

        return _call(client.wait, deployment_id, phase=phase, timeout=timeout, on_progress=progress)


# ---- commands ---------------------------------------------------------------------------


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--port", type=int, default=8900, show_default=True, help="API port.")
@click.option("--ip", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="State directory.")
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    help="File holding the API token to require (or set PRIMEHUB_API_TOKEN).",
)
@click.option("--token", "argv_token", hidden=True, help="Refused: a token in argv shows in ps.")
@click.option("--gateway-port", type=int, help="Port of the local gateway (default: any).")
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def serve(
    ctx: click.Context,
    port: int,
    ip: str,
    data_dir: str | None,
    token_file: str | None,
    argv_token: str | None,
    gateway_port: int | None,
    extra: tuple[str, ...],
) -> None:
    """Serve the REST API and the local engine without JupyterLab.

    The API token comes from PRIMEHUB_API_TOKEN or --token-file, never from the command line;
    without either, one is generated into <data dir>/api-token. The server exposes the
    PrimeHub API only (no kernels, files or terminals). Other Jupyter options pass through,
    e.g. --LocalEngine.deploy_timeout=600.
    """
    from .server import serve as standalone

    parent = ctx.parent
    given_to_group = parent is not None and (
        parent.get_parameter_source("token") == click.core.ParameterSource.COMMANDLINE
    )
    if argv_token is not None or given_to_group:
        raise click.UsageError(standalone.ARGV_TOKEN_REFUSED)
    try:
        standalone.start(
            port=port,
            ip=ip,
            data_dir=data_dir,
            token_file=token_file,
            gateway_port=gateway_port,
            extra=list(extra),
            say=lambda text: click.echo(text, err=True),
        )
    except standalone.ServeError as error:
        raise click.UsageError(str(error)) from None


@cli.command()
@click.option("-f", "--file", "path", required=True, help="Deployment YAML/JSON ('-': stdin).")
@click.option("--wait/--no-wait", default=False, help="Wait until Deployed.")
@click.option("--timeout", type=float, default=600, show_default=True)
@click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table")
@click.pass_context
def create(ctx: click.Context, path: str, wait: bool, timeout: float, output: str) -> None:
    """Create a deployment from a file."""
    client = _client(ctx)
    created = _call(client.create, load_document(path))
    if wait:
        created = _wait(client, created["id"], "Deployed", timeout)
    if not _emit(created, output):
        _deployment_detail(created)
        if created["status"].get("phase") == "Deployed":
            click.echo("\nTry it:\n" + _example(created))


@cli.command()
@click.argument("deployment_id", required=False)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "wide", "json", "yaml"]),
    default="table",
    help="wide: the table, then where model endpoints live (the gateway's URL).",
)
@click.option("--name", help="Only names containing this.")
@click.option("--mine", is_flag=True, help="Only deployments you created.")
@click.option("--group", help="Only this group.")
@click.pass_context
def get(
    ctx: click.Context,
    deployment_id: str | None,
    output: str,
    name: str | None,
    mine: bool,
    group: str | None,
) -> None:
    """List deployments, or show one."""
    client = _client(ctx)
    if deployment_id:
        found = _call(client.get, deployment_id)
        if not _emit(found, output):
            _deployment_detail(found)
        return
    items = _call(client.list, name=name, mine=mine, group=group)
    if not _emit(items, output):
        if items:
            _deployments_table(items)
        else:
            click.echo("No deployments yet. Create one: primehub-deploy create -f deploy.yaml")
        if output == "wide":
            base = _call(client.me).get("endpointBase")
            click.echo(f"Model endpoints: {base or '(not known yet)'}/deployment/<id>/...")


@cli.command()
@click.argument("deployment_id")
@click.option("-f", "--file", "path", help="A file with the new spec (merged).")
@click.option("--set", "sets", multiple=True, help="key=value, e.g. replicas=3 (repeatable).")
@click.option("-m", "--message", help="Update message, kept in the history.")
@click.option("--wait/--no-wait", default=False, help="Wait until Deployed.")
@click.option("--timeout", type=float, default=600, show_default=True)
@click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table")
@click.pass_context
def update(
    ctx: click.Context,
    deployment_id: str,
    path: str | None,
    sets: tuple[str, ...],
    message: str | None,
    wait: bool,
    timeout: float,
    output: str,
) -> None:
    """Update a deployment (rolling: no request is dropped)."""
    if not path and not sets:
        raise CLIError("give -f FILE or --set key=value")
    patch: dict[str, Any] = {}
    if path:
        patch = load_document(path)["spec"] or {}
    from .core.models import merge_patch

    patch = merge_patch(patch, parse_sets(sets)) if sets else patch
    client = _client(ctx)
    updated = _call(client.update, deployment_id, patch, update_message=message, names=SET_FLAGS)
    if wait:
        updated = _wait(client, deployment_id, "Deployed", timeout)
    if not _emit(updated, output):
        _deployment_detail(updated)


def _lifecycle(name: str, target: str, help_text: str) -> None:
    @cli.command(name=name, help=help_text)
    @click.argument("deployment_id")
    @click.option("-m", "--message", help="Update message, kept in the history.")
    @click.option("--wait/--no-wait", default=False, help=f"Wait until {target}.")
    @click.option("--timeout", type=float, default=600, show_default=True)
    @click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (stop).")
    @click.pass_context
    def command(
        ctx: click.Context,
        deployment_id: str,
        message: str | None,
        wait: bool,
        timeout: float,
        yes: bool,
    ) -> None:
        client = _client(ctx)
        if name == "stop":
            _confirm(
                f"Stop deployment {deployment_id}? Its endpoint answers 503 until you start it.",
                yes,
                "stop",
            )
        fn = client.stop if name == "stop" else client.start
        result = _call(fn, deployment_id, message)
        if wait:
            result = _wait(client, deployment_id, target, timeout, says_phase=True)
        _console().print(f"{deployment_id}: {_phase(result['status'])}")


_lifecycle("stop", "Stopped", "Stop a deployment: replicas go away, the spec stays.")
_lifecycle("start", "Deployed", "Start a stopped deployment.")


@cli.command()
@click.argument("deployment_id")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def delete(ctx: click.Context, deployment_id: str, yes: bool) -> None:
    """Delete a deployment and everything that runs it."""
    client = _client(ctx)
    _confirm(
        f"Delete deployment {deployment_id} with its clients and history? This cannot be undone.",
        yes,
        "delete",
    )
    _call(client.delete, deployment_id)
    click.echo(f"{deployment_id}: deleted")


@cli.command()
@click.argument("deployment_id")
@click.option("--for", "phase", default="Deployed", show_default=True, help="Phase to wait for.")
@click.option("--timeout", type=float, default=600, show_default=True)
@click.pass_context
def wait(ctx: click.Context, deployment_id: str, phase: str, timeout: float) -> None:
    """Wait until a deployment reaches a phase (exit 1 if it fails)."""
    result = _wait(_client(ctx), deployment_id, phase, timeout, says_phase=True)
    _console().print(f"{deployment_id}: {_phase(result['status'])}")
    if phase == "Deployed" and result["status"].get("endpoint"):
        click.echo(result["status"]["endpoint"])


@cli.command()
@click.argument("deployment_id")
@click.option("--replica", help="Replica name or index (default: all current replicas).")
@click.option("--tail", default="2000", show_default=True, help="Last N lines, or 'all'.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl-C stops).")
@click.option("--download", type=click.Path(dir_okay=False), help="Save the whole log here.")
@click.pass_context
def logs(
    ctx: click.Context,
    deployment_id: str,
    replica: str | None,
    tail: str,
    follow: bool,
    download: str | None,
) -> None:
    """Print a deployment's logs (UTC timestamps, newest last)."""
    client = _client(ctx)
    if download:
        target = _call(client.download_logs, deployment_id, download, replica=replica)
        click.echo(f"saved {target}")
        return
    count = None if tail == "all" else int(tail)
    if follow:
        try:
            for line in _call(client.follow_logs, deployment_id, replica=replica, tail=count or 0):
                click.echo(line)
        except KeyboardInterrupt:
            pass
        return
    click.echo(_call(client.logs, deployment_id, replica=replica, tail=count), nl=False)


@cli.command()
@click.argument("deployment_id")
@click.argument("revision", type=int, required=False)
@click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table")
@click.pass_context
def history(ctx: click.Context, deployment_id: str, revision: int | None, output: str) -> None:
    """Show a deployment's history (newest first), or one revision's spec."""
    client = _client(ctx)
    if revision is not None:
        entry = _call(client.history_entry, deployment_id, revision)
        _emit(entry, "json" if output == "json" else "yaml")
        return
    entries = _call(client.history, deployment_id)
    if _emit(entries, output):
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in (
        "REV",
        "TIME",
        "USER",
        "STOPPED",
        "MODEL",
        "REPLICAS",
        "TYPE",
        "ACCESS",
        "MESSAGE",
    ):
        table.add_column(column, overflow="fold")
    for entry in entries:
        spec = entry["spec"]
        predictor = spec["predictors"][0]
        table.add_row(
            str(entry["revision"]),
            entry["time"],
            entry["user"],
            "yes" if spec.get("stop") else "no",
            predictor.get("modelURI") or predictor.get("modelImage") or "-",
            str(predictor["replicas"]),
            predictor["instanceType"],
            spec["endpoint"]["accessType"],
            entry.get("updateMessage") or "",
        )
    _console().print(table)


@cli.command()
@click.argument("deployment_id")
@click.argument("revision", type=int)
@click.option("-m", "--message", help="Update message (default: 'rollback to revision N').")
@click.option("--wait/--no-wait", default=False, help="Wait until Deployed.")
@click.option("--timeout", type=float, default=600, show_default=True)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def rollback(
    ctx: click.Context,
    deployment_id: str,
    revision: int,
    message: str | None,
    wait: bool,
    timeout: float,
    yes: bool,
) -> None:
    """Re-apply history revision REVISION's spec as a new update (shows the changes first)."""
    client = _client(ctx)
    current = _call(client.get, deployment_id)["spec"]
    target = _call(client.history_entry, deployment_id, revision)["spec"]
    changes = describe_changes(current, rollback_spec(current, target))
    _preview(changes, "Now", f"After the roll back to revision {revision}")
    _confirm(f"Roll back {deployment_id} to revision {revision}?", yes, "roll back")
    result = _call(client.rollback, deployment_id, revision, message)
    if wait:
        result = _wait(client, deployment_id, "Deployed", timeout)
    _deployment_detail(result)


@cli.command()
@click.argument("deployment_id")
@click.option("--window", type=float, default=900, show_default=True, help="Seconds of history.")
@click.option("--step", type=float, default=60, show_default=True, help="Seconds per point.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def metrics(
    ctx: click.Context, deployment_id: str, window: float, step: float, output: str
) -> None:
    """Traffic, errors, latency and reward of a deployment over time."""
    found = _call(_client(ctx).metrics, deployment_id, window=window, step=step)
    if _emit(found, output):
        return
    from rich.table import Table

    from .core.metrics import MetricsReport

    def fmt(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
        return "-" if value is None else f"{value * scale:.{digits}f}"

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("TIME (UTC)", "REQ/S", "PREDICT/S", "SUCCESS", "4XX/S", "5XX/S", "P50 MS",
                   "P99 MS", "REWARD"):  # fmt: skip
        table.add_column(column, justify="right")
    report = MetricsReport.model_validate(found)
    s = report.series
    for i, stamp in enumerate(report.timestamps):
        when = datetime.fromtimestamp(stamp, timezone.utc).strftime("%H:%M:%S")
        table.add_row(
            when,
            fmt(s.requests_per_second[i]),
            fmt(s.predict_requests_per_second[i]),
            fmt(s.success_rate[i], 100, 1) + ("%" if s.success_rate[i] else ""),
            fmt(s.client_errors_per_second[i]),
            fmt(s.server_errors_per_second[i]),
            fmt(s.latency_p50[i], 1000, 1),
            fmt(s.latency_p99[i], 1000, 1),
            fmt(s.reward[i]),
        )
    _console().print(table)
    totals = report.totals
    click.echo(
        f"window {report.window:g} s: {totals.requests} requests "
        f"({totals.predict_requests} predictions), {totals.client_errors} 4xx, "
        f"{totals.server_errors} 5xx, {totals.feedback} feedback"
        + (f", reward {totals.reward:.2f}" if totals.reward is not None else "")
    )


@cli.group(invoke_without_command=True)
@click.argument("deployment_id")
@click.pass_context
def clients(ctx: click.Context, deployment_id: str) -> None:
    """List, add or delete the clients of a private endpoint."""
    ctx.obj["deployment_id"] = deployment_id
    if ctx.invoked_subcommand is None:
        names = _call(_client(ctx).clients, deployment_id)
        for item in names:
            click.echo(item["name"])
        if not names:
            click.echo("no clients; add one: primehub-deploy clients ID add NAME")


@clients.command("add")
@click.argument("name")
@click.pass_context
def clients_add(ctx: click.Context, name: str) -> None:
    """Add (or replace) a client; its token is shown this once."""
    created = _call(_client(ctx).add_client, ctx.obj["deployment_id"], name)
    click.echo(f"client: {created['name']}")
    click.echo(f"token:  {created['token']}")
    click.echo("Keep the token now: it is stored only as a hash and never shown again.", err=True)


@clients.command("delete")
@click.argument("name")
@click.pass_context
def clients_delete(ctx: click.Context, name: str) -> None:
    """Delete a client; its token stops working at once."""
    _call(_client(ctx).delete_client, ctx.obj["deployment_id"], name)
    click.echo(f"client {name}: deleted")


@cli.command()
@click.argument("deployment_id")
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False), help="Request JSON.")
@click.option("--data", help="Request JSON inline.")
@click.option("--path", "api_path", default="api/v1.0/predictions", show_default=True)
@click.pass_context
def invoke(
    ctx: click.Context, deployment_id: str, path: str | None, data: str | None, api_path: str
) -> None:
    """Send a request to a deployment as you (private endpoints too)."""
    if bool(path) == bool(data):
        raise CLIError("give exactly one of --file or --data")
    raw = Path(path).read_text() if path else data or ""
    try:
        payload = json.loads(raw)
    except ValueError as error:
        raise CLIError(f"the request is not valid JSON: {error}") from None
    result = _call(_client(ctx).invoke, deployment_id, payload, path=api_path)
    click.echo(json.dumps(result, indent=2) if not isinstance(result, str) else result)


@cli.group(invoke_without_command=True)
@click.pass_context
def groups(ctx: click.Context) -> None:
    """Your groups: whether model deployment is on, quota and usage (admins turn it on/off)."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("GROUP", "DEPLOYMENT", "INSTANCE TYPES"):
        table.add_column(column, overflow="fold")
    for group in _call(_client(ctx).groups):
        table.add_row(
            group["name"],
            "[green]enabled[/]" if group.get("enabledDeployment") else "[red]disabled[/]",
            ", ".join(it["name"] for it in group.get("instanceTypes", [])) or "-",
        )
    _console().print(table)


@groups.command("disable")
@click.argument("group")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def groups_disable(ctx: click.Context, group: str, yes: bool) -> None:
    """Turn model deployment off for GROUP: its running deployments stop serving (Failed)."""
    client = _client(ctx)
    running = [
        d for d in _call(client.list, group=group) if not d["spec"].get("stop")
    ]  # fmt: skip
    if running:
        console = _console(stderr=True)
        console.print(f"These deployments of group {group} will stop serving:")
        for d in running:
            console.print(f"  {d['id']}  {d['spec']['displayName']}  {_phase(d['status'])}")
        question = f"Disable model deployment for {group} and stop {len(running)} deployment(s)?"
    else:
        question = f"Disable model deployment for {group}? No deployment of it is running."
    _confirm(question, yes, "disable it")
    _call(client.set_group_enabled, group, False)
    click.echo(f"group {group}: model deployment disabled")


@groups.command("enable")
@click.argument("group")
@click.pass_context
def groups_enable(ctx: click.Context, group: str) -> None:
    """Turn model deployment on for GROUP (its deployments recover)."""
    _call(_client(ctx).set_group_enabled, group, True)
    click.echo(f"group {group}: model deployment enabled")


def _attach_package() -> None:
    from .serving.package_cli import package_group

    cli.add_command(package_group, "package")


_attach_package()


def _attach_model_server() -> None:
    try:
        from .serving.server import model_server_command
    except ImportError:  # pragma: no cover - the serving package is part of this distribution
        return
    cli.add_command(model_server_command, "model-server")


_attach_model_server()


def _attach_operator() -> None:
    try:
        from .engines.kubernetes.operator_cli import operator_command
    except ImportError:  # pragma: no cover - part of this distribution
        return
    cli.add_command(operator_command, "operator")


_attach_operator()


def main() -> None:
    """Entry point of `primehub-deploy`."""
    cli(prog_name="primehub-deploy")


if __name__ == "__main__":
    main()
