"""primehub-deploy commands that close the A/B loop: compare the predictors, promote one."""

from __future__ import annotations

import click

from ..kernel import options as shared
from .common import call, client_of, confirm, wait_for
from .output import console, deployment_detail, emit, table


@click.command()
@click.argument("deployment_id")
@click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table")
@click.option("--json", "as_json", is_flag=True, help="The report as JSON (same as -o json).")
@click.pass_context
def compare(ctx: click.Context, deployment_id: str, output: str, as_json: bool) -> None:
    """Compare a deployment's predictors: traffic, errors, latency, feedback, and a
    significance test of each challenger's success share against the primary's."""
    # Here, not at the top: it brings the chart models, which `primehub-deploy get` never needs.
    from ..kernel.compare import HEADERS, comparison_rows, footnote

    report = call(client_of(ctx).compare, deployment_id)
    if emit(report, "json" if as_json else output):
        return
    rows = table(*(h.upper() for h in HEADERS))
    for row in comparison_rows(report):
        rows.add_row(*row)
    out = console()
    out.print(rows)
    for row in report["predictors"]:
        if row.get("test"):
            out.print(f"{row['name']}: {row['test']['summary']}", markup=False)
    out.print(footnote(report), markup=False)


@click.command()
@click.argument("deployment_id")
@click.argument("predictor")
@shared.click_options(
    shared.MESSAGE.but(help="Update message (default: 'promote PREDICTOR')."),
    shared.wait_switch("Deployed", default=False),
    shared.TIMEOUT,
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def promote(
    ctx: click.Context,
    deployment_id: str,
    predictor: str,
    message: str | None,
    wait: bool,
    timeout: float,
    yes: bool,
) -> None:
    """Send every request to PREDICTOR and remove the other predictors (an update: the
    history keeps the split, and `rollback` to the revision before brings it back)."""
    client = client_of(ctx)
    current = call(client.get, deployment_id)
    others = [p["name"] for p in current["spec"]["predictors"] if p["name"] != predictor]
    removed = f" and remove {', '.join(others)}" if others else ""
    confirm(f"Send 100% of {deployment_id}'s requests to {predictor}{removed}?", yes, "promote")
    result = call(client.promote, deployment_id, predictor, message)
    if wait:
        result = wait_for(client, deployment_id, "Deployed", timeout)
    deployment_detail(result)


COMMANDS = (compare, promote)
