"""primehub-deploy commands on deployments: create, get, update, stop, start, delete, wait,
history, rollback and invoke."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..kernel import options as shared
from ..kernel.display import replica_range
from ..kernel.words import describe_changes, rollback_spec
from .common import call, client_of, confirm, wait_for
from .documents import SET_FLAGS, keep_nulls, load_document, parse_sets
from .output import (
    OUTPUTS,
    CLIError,
    console,
    deployment_detail,
    deployments_table,
    emit,
    example,
    model_text,
    preview,
    table,
)

# `phase` is also the name of `wait --for`'s parameter: the markup helper gets another name.
from .output import phase as phase_markup

# The API's policy fields as `create` names them (in its error messages).
POLICY_FLAGS = {
    "spec.endpoint.policy.groups": "--policy-groups",
    "spec.endpoint.policy.users": "--policy-users",
}
output_option = click.option("-o", "--output", type=click.Choice(OUTPUTS), default="table")


@click.command()
@click.option("-f", "--file", "path", required=True, help="Deployment YAML/JSON ('-': stdin).")
@shared.click_options(
    shared.POLICY_GROUPS,
    shared.POLICY_USERS,
    shared.wait_switch("Deployed", default=False),
    shared.TIMEOUT,
)
@output_option
@click.pass_context
def create(
    ctx: click.Context,
    path: str,
    policy_groups: str | None,
    policy_users: str | None,
    wait: bool,
    timeout: float,
    output: str,
) -> None:
    """Create a deployment from a file (--policy-* replace the file's access policy)."""
    client = client_of(ctx)
    body = load_document(path)
    policy = shared.policy_patch(policy_groups, policy_users)
    if policy is not None and isinstance(body["spec"], dict):
        body["spec"].setdefault("endpoint", {}).update(policy)
    created = call(client.create, body, names=POLICY_FLAGS)
    if wait:
        created = wait_for(client, created["id"], "Deployed", timeout)
    if not emit(created, output):
        deployment_detail(created)
        if created["status"].get("phase") == "Deployed":
            click.echo("\nTry it:\n" + example(created))


@click.command()
@click.argument("deployment_id", required=False)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "wide", "json", "yaml"]),
    default="table",
    help="wide: the table, then where model endpoints live (the gateway's URL).",
)
@shared.click_options(shared.NAME_FILTER, shared.MINE, shared.GROUP_FILTER)
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
    client = client_of(ctx)
    if deployment_id:
        found = call(client.get, deployment_id)
        if not emit(found, output):
            deployment_detail(found)
        return
    items = call(client.list, name=name, mine=mine, group=group)
    if not emit(items, output):
        if items:
            deployments_table(items)
        else:
            click.echo("No deployments yet. Create one: primehub-deploy create -f deploy.yaml")
        if output == "wide":
            base = call(client.me).get("endpointBase")
            click.echo(f"Model endpoints: {base or '(not known yet)'}/deployment/<id>/...")


@click.command()
@click.argument("deployment_id")
@click.option("-f", "--file", "path", help="A file with the new spec (merged).")
@click.option("--set", "sets", multiple=True, help="key=value, e.g. replicas=3 (repeatable).")
@shared.click_options(shared.MESSAGE, shared.wait_switch("Deployed", default=False), shared.TIMEOUT)
@output_option
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
    from ..core.models import merge_patch

    if sets:
        changes = parse_sets(sets)
        patch = keep_nulls(merge_patch(patch, changes), changes)
    client = client_of(ctx)
    updated = call(client.update, deployment_id, patch, update_message=message, names=SET_FLAGS)
    if wait:
        updated = wait_for(client, deployment_id, "Deployed", timeout)
    if not emit(updated, output):
        deployment_detail(updated)


def _lifecycle(name: str, target: str, help_text: str) -> click.Command:
    @click.command(name=name, help=help_text)
    @click.argument("deployment_id")
    @shared.click_options(shared.MESSAGE, shared.wait_switch(target, default=False), shared.TIMEOUT)
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
        client = client_of(ctx)
        if name == "stop":
            confirm(
                f"Stop deployment {deployment_id}? Its endpoint answers 503 until you start it.",
                yes,
                "stop",
            )
        fn = client.stop if name == "stop" else client.start
        result = call(fn, deployment_id, message)
        if wait:
            result = wait_for(client, deployment_id, target, timeout, says_phase=True)
        console().print(f"{deployment_id}: {phase_markup(result['status'])}")

    return command


stop = _lifecycle("stop", "Stopped", "Stop a deployment: replicas go away, the spec stays.")
start = _lifecycle("start", "Deployed", "Start a stopped deployment.")


@click.command()
@click.argument("deployment_id")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def delete(ctx: click.Context, deployment_id: str, yes: bool) -> None:
    """Delete a deployment and everything that runs it."""
    client = client_of(ctx)
    confirm(
        f"Delete deployment {deployment_id} with its clients and history? This cannot be undone.",
        yes,
        "delete",
    )
    call(client.delete, deployment_id)
    click.echo(f"{deployment_id}: deleted")


@click.command()
@click.argument("deployment_id")
@shared.click_options(shared.WAIT_PHASE, shared.TIMEOUT)
@click.pass_context
def wait(ctx: click.Context, deployment_id: str, phase: str, timeout: float) -> None:
    """Wait until a deployment reaches a phase (exit 1 if it fails)."""
    result = wait_for(client_of(ctx), deployment_id, phase, timeout, says_phase=True)
    console().print(f"{deployment_id}: {phase_markup(result['status'])}")
    if phase == "Deployed" and result["status"].get("endpoint"):
        click.echo(result["status"]["endpoint"])


@click.command()
@click.argument("deployment_id")
@click.argument("revision", type=int, required=False)
@output_option
@click.pass_context
def history(ctx: click.Context, deployment_id: str, revision: int | None, output: str) -> None:
    """Show a deployment's history (newest first), or one revision's spec."""
    client = client_of(ctx)
    if revision is not None:
        entry = call(client.history_entry, deployment_id, revision)
        emit(entry, "json" if output == "json" else "yaml")
        return
    entries = call(client.history, deployment_id)
    if emit(entries, output):
        return
    rows = table("REV", "TIME", "USER", "STOPPED", "MODEL", "REPLICAS", "TYPE", "ACCESS", "MESSAGE")
    for entry in entries:
        spec = entry["spec"]
        predictors = spec["predictors"]
        several = len(predictors) > 1
        rows.add_row(
            str(entry["revision"]),
            entry["time"],
            entry["user"],
            "yes" if spec.get("stop") else "no",
            ", ".join(
                (f"{p['name']}={model_text(p)}" if several else model_text(p)) for p in predictors
            ),
            ", ".join(replica_range(p) for p in predictors),
            ", ".join(sorted({p["instanceType"] for p in predictors})),
            spec["endpoint"]["accessType"],
            entry.get("updateMessage") or "",
        )
    console().print(rows)


@click.command()
@click.argument("deployment_id")
@click.argument("revision", type=int)
@shared.click_options(
    shared.MESSAGE.but(help="Update message (default: 'rollback to revision N')."),
    shared.wait_switch("Deployed", default=False),
    shared.TIMEOUT,
)
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
    client = client_of(ctx)
    current = call(client.get, deployment_id)["spec"]
    target = call(client.history_entry, deployment_id, revision)["spec"]
    changes = describe_changes(current, rollback_spec(current, target))
    preview(changes, "Now", f"After the roll back to revision {revision}")
    confirm(f"Roll back {deployment_id} to revision {revision}?", yes, "roll back")
    result = call(client.rollback, deployment_id, revision, message)
    if wait:
        result = wait_for(client, deployment_id, "Deployed", timeout)
    deployment_detail(result)


@click.command()
@click.argument("deployment_id")
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False), help="Request JSON.")
@click.option("--data", help="Request JSON inline.")
@shared.click_options(shared.API_PATH)
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
    result = call(client_of(ctx).invoke, deployment_id, payload, path=api_path)
    click.echo(json.dumps(result, indent=2) if not isinstance(result, str) else result)


COMMANDS = (create, get, update, stop, start, delete, wait, history, rollback, invoke)
