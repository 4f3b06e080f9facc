"""primehub-deploy groups: whether model deployment is on per group; admins turn it on or off."""

from __future__ import annotations

import click

from .common import call, client_of, confirm
from .output import console, phase, table


@click.group(invoke_without_command=True)
@click.pass_context
def groups(ctx: click.Context) -> None:
    """Your groups: whether model deployment is on, quota and usage (admins turn it on/off)."""
    if ctx.invoked_subcommand is not None:
        return
    rows = table("GROUP", "DEPLOYMENT", "INSTANCE TYPES")
    for group in call(client_of(ctx).groups):
        rows.add_row(
            group["name"],
            "[green]enabled[/]" if group.get("enabledDeployment") else "[red]disabled[/]",
            ", ".join(it["name"] for it in group.get("instanceTypes", [])) or "-",
        )
    console().print(rows)


@groups.command("disable")
@click.argument("group")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def groups_disable(ctx: click.Context, group: str, yes: bool) -> None:
    """Turn model deployment off for GROUP: its running deployments stop serving (Failed)."""
    client = client_of(ctx)
    running = [
        d for d in call(client.list, group=group) if not d["spec"].get("stop")
    ]  # fmt: skip
    if running:
        err = console(stderr=True)
        err.print(f"These deployments of group {group} will stop serving:")
        for d in running:
            err.print(f"  {d['id']}  {d['spec']['displayName']}  {phase(d['status'])}")
        question = f"Disable model deployment for {group} and stop {len(running)} deployment(s)?"
    else:
        question = f"Disable model deployment for {group}? No deployment of it is running."
    confirm(question, yes, "disable it")
    call(client.set_group_enabled, group, False)
    click.echo(f"group {group}: model deployment disabled")


@groups.command("enable")
@click.argument("group")
@click.pass_context
def groups_enable(ctx: click.Context, group: str) -> None:
    """Turn model deployment on for GROUP (its deployments recover)."""
    call(client_of(ctx).set_group_enabled, group, True)
    click.echo(f"group {group}: model deployment enabled")
