"""primehub-deploy clients: list, add or delete the clients of a private endpoint."""

from __future__ import annotations

import click

from .common import call, client_of


@click.group(invoke_without_command=True)
@click.argument("deployment_id")
@click.pass_context
def clients(ctx: click.Context, deployment_id: str) -> None:
    """List, add or delete the clients of a private endpoint."""
    ctx.obj["deployment_id"] = deployment_id
    if ctx.invoked_subcommand is None:
        names = call(client_of(ctx).clients, deployment_id)
        for item in names:
            click.echo(item["name"])
        if not names:
            click.echo("no clients; add one: primehub-deploy clients ID add NAME")


@clients.command("add")
@click.argument("name")
@click.pass_context
def clients_add(ctx: click.Context, name: str) -> None:
    """Add (or replace) a client; its token is shown this once."""
    created = call(client_of(ctx).add_client, ctx.obj["deployment_id"], name)
    click.echo(f"client: {created['name']}")
    click.echo(f"token:  {created['token']}")
    click.echo("Keep the token now: it is stored only as a hash and never shown again.", err=True)


@clients.command("delete")
@click.argument("name")
@click.pass_context
def clients_delete(ctx: click.Context, name: str) -> None:
    """Delete a client; its token stops working at once."""
    call(client_of(ctx).delete_client, ctx.obj["deployment_id"], name)
    click.echo(f"client {name}: deleted")
