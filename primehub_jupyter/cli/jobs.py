"""primehub-deploy for batch jobs: score a file (`batch`); list, show and cancel jobs (`jobs`)."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from ..kernel import options as shared
from ..kernel.batch_files import default_output, local_uri
from ..kernel.client import Client
from ..kernel.jobs import (
    JOB_HEADERS,
    count_text,
    duration_text,
    eta_seconds,
    job_line,
    job_row,
    rate_text,
)
from .common import call, client_of
from .output import OUTPUTS, CLIError, console, emit, in_notebook_shell, phase, table

# Where output cannot be redrawn (a pipe, a notebook's `!`): a progress line this often at most.
LINE_SECONDS = 5.0


@click.command()
@click.argument("deployment_id")
@click.argument("input", metavar="INPUT")
@shared.click_options(
    *shared.JOB_OPTIONS, shared.wait_switch("the job has finished", default=False)
)
@click.option("--timeout", type=float, default=None, help="Seconds to wait (default: no limit).")
@click.pass_context
def batch(
    ctx: click.Context,
    deployment_id: str,
    input: str,
    output: str | None,
    format: str | None,
    predictor: str | None,
    chunk_rows: int | None,
    output_columns: str,
    overwrite: bool,
    wait: bool,
    timeout: float | None,
) -> None:
    """Score the file INPUT with a deployment's model in a batch job (relative paths: this
    directory's). Prints the job id; with --wait a progress bar (rows, rows/s, ETA) and a
    non-zero exit when the job fails or is cancelled."""
    client = client_of(ctx)
    input_uri = local_uri(input)
    job = call(
        client.create_job,
        deployment_id,
        input_uri,
        local_uri(output or default_output(input_uri)),
        format=format,
        predictor=predictor,
        chunk_rows=chunk_rows,
        output_columns=output_columns,
        overwrite=overwrite,
        names={"chunkRows": "--chunk-rows", "outputColumns": "--output-columns"},
    )
    if not wait:
        click.echo(job["id"])
        click.echo(f"follow it with: primehub-deploy jobs {deployment_id} {job['id']}", err=True)
        return
    final = wait_with_progress(client, job, timeout)
    summary(final)
    if final["phase"] != "Succeeded":
        reason = f": {final['message']}" if final.get("message") else ""
        raise CLIError(f"job {final['id']} {final['phase'].lower()}{reason}")


def wait_with_progress(client: Client, job: dict[str, Any], timeout: float | None) -> dict:
    """Wait for the job with a progress bar on stderr (lines where it cannot be redrawn);
    Ctrl-C asks whether to cancel it."""
    try:
        out = console(stderr=True)
        if not out.is_terminal or in_notebook_shell():
            return _with_lines(client, job, timeout)
        return _with_bar(client, job, timeout, out)
    except KeyboardInterrupt:
        if sys.stdin.isatty() and click.confirm(f"\ncancel job {job['id']}?", default=True):
            return call(client.cancel_job, job["deploymentId"], job["id"]) or job
        raise CLIError(
            f"job {job['id']} keeps running; cancel it with: primehub-deploy jobs "
            f"{job['deploymentId']} --cancel {job['id']}"
        ) from None


def _with_lines(client: Client, job: dict[str, Any], timeout: float | None) -> dict:
    last_at = [0.0]
    last_phase = [""]

    def line(record: dict[str, Any]) -> None:
        now = time.monotonic()
        if record["phase"] != last_phase[0] or now - last_at[0] >= LINE_SECONDS:
            last_at[0], last_phase[0] = now, record["phase"]
            click.echo(job_line(record), err=True)

    return call(client.wait_job, job["deploymentId"], job["id"], timeout=timeout, on_progress=line)


def _with_bar(client: Client, job: dict[str, Any], timeout: float | None, out: Any) -> dict:
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rows]} rows"),
        TextColumn("{task.fields[rate]}"),
        TextColumn("ETA {task.fields[eta]}"),
    )
    with Progress(*columns, console=out) as bar:
        task = bar.add_task(f"{job['id']} {job['phase']}", total=None, rows="0", rate="-", eta="-")

        def show(record: dict[str, Any]) -> None:
            known = record.get("progress")
            done = record["phase"] == "Succeeded"
            bar.update(
                task,
                description=f"{record['id']} {record['phase']}",
                total=1.0 if known is not None or done else None,
                completed=1.0 if done else (known or 0.0),
                rows=count_text(record.get("rowsScored") or 0)
                + (f" ({count_text(record['rowsFailed'])} failed)" if record.get("rowsFailed")
                   else ""),
                rate=rate_text(record.get("rowsPerSecond")),
                eta=duration_text(eta_seconds(record)),
            )  # fmt: skip

        return call(
            client.wait_job, job["deploymentId"], job["id"], timeout=timeout, on_progress=show
        )


def summary(job: dict[str, Any]) -> None:
    """A finished job in a few lines: phase, counts, rate, how long, where the files are."""
    out = console()
    out.print(f"{job['id']}: {phase(job)}  {job.get('message') or ''}".rstrip())
    out.print(
        f"rows read {count_text(job.get('rowsRead') or 0)}, scored "
        f"{count_text(job.get('rowsScored') or 0)}, failed {count_text(job.get('rowsFailed') or 0)}"
        f" ({rate_text(job.get('rowsPerSecond'))})",
        markup=False,
    )
    out.print(f"output: {job['spec']['output']}", markup=False)
    if job.get("rowsFailed"):
        out.print(f"errors: {job.get('errors')}", markup=False)


@click.command()
@click.argument("deployment_id")
@click.argument("job_id", required=False, metavar="[JOB]")
@click.option(
    "--cancel", "cancel", metavar="JOB", help="Cancel this running job (or remove a finished one)."
)
@click.option("--logs", "logs", metavar="JOB", help="Print this job's log.")
@click.option(
    "--tail", default="2000", show_default=True, help="With --logs: last N lines, or 'all'."
)
@click.option("-o", "--output", type=click.Choice(OUTPUTS), default="table")
@click.pass_context
def jobs(
    ctx: click.Context,
    deployment_id: str,
    job_id: str | None,
    cancel: str | None,
    logs: str | None,
    tail: str,
    output: str,
) -> None:
    """A deployment's batch jobs, newest first; JOB: that one; --cancel JOB, --logs JOB."""
    client = client_of(ctx)
    if cancel:
        answer = call(client.cancel_job, deployment_id, cancel)
        click.echo(f"{cancel}: " + ("removed" if answer is None else answer["phase"]))
        return
    if logs:
        count = None if tail == "all" else int(tail)
        click.echo(call(client.job_logs, deployment_id, logs, tail=count), nl=False)
        return
    if job_id:
        record = call(client.get_job, deployment_id, job_id)
        if not emit(record, output):
            summary(record)
        return
    found = call(client.list_jobs, deployment_id)
    if emit(found, output):
        return
    rows = table(*(h.upper() for h in JOB_HEADERS))
    for record in found:
        cells = job_row(record)
        cells[1] = phase(record)
        rows.add_row(*cells)
    console().print(rows)


COMMANDS = (batch, jobs)
