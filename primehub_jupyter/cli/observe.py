"""primehub-deploy commands that watch a deployment run: logs and metrics."""

from __future__ import annotations

from datetime import datetime, timezone

import click

from ..kernel import options as shared
from .common import call, client_of
from .output import console, emit, table


@click.command()
@click.argument("deployment_id")
@shared.click_options(shared.REPLICA, shared.TAIL, shared.FOLLOW)
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
    client = client_of(ctx)
    if download:
        target = call(client.download_logs, deployment_id, download, replica=replica)
        click.echo(f"saved {target}")
        return
    count = None if tail == "all" else int(tail)
    if follow:
        try:
            for line in call(client.follow_logs, deployment_id, replica=replica, tail=count or 0):
                click.echo(line)
        except KeyboardInterrupt:
            pass
        return
    click.echo(call(client.logs, deployment_id, replica=replica, tail=count), nl=False)


@click.command()
@click.argument("deployment_id")
@shared.click_options(shared.WINDOW, shared.STEP)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def metrics(
    ctx: click.Context, deployment_id: str, window: float, step: float, output: str
) -> None:
    """Traffic, errors, latency and reward of a deployment over time."""
    found = call(client_of(ctx).metrics, deployment_id, window=window, step=step)
    if emit(found, output):
        return

    def fmt(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
        return "-" if value is None else f"{value * scale:.{digits}f}"

    rows = table("TIME (UTC)", "REQ/S", "PREDICT/S", "SUCCESS", "4XX/S", "5XX/S", "P50 MS",
                 "P99 MS", "REWARD", justify="right")  # fmt: skip
    from ..core.metrics import MetricsReport

    report = MetricsReport.model_validate(found)
    s = report.series
    for i, stamp in enumerate(report.timestamps):
        when = datetime.fromtimestamp(stamp, timezone.utc).strftime("%H:%M:%S")
        rows.add_row(
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
    console().print(rows)
    totals = report.totals
    click.echo(
        f"window {report.window:g} s: {totals.requests} requests "
        f"({totals.predict_requests} predictions), {totals.client_errors} 4xx, "
        f"{totals.server_errors} 5xx, {totals.feedback} feedback"
        + (f", reward {totals.reward:.2f}" if totals.reward is not None else "")
    )


COMMANDS = (logs, metrics)
