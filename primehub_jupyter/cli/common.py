"""What every primehub-deploy command shares: the API client, errors, confirmation, waiting."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..kernel.client import Client, PrimeHubError
from ..kernel.words import in_words
from .output import CLIError, console, in_notebook_shell


def client_of(ctx: click.Context) -> Client:
    """The API client for the group's --url/--token (or the running Jupyter it finds)."""
    try:
        return Client(ctx.obj.get("url"), ctx.obj.get("token"))
    except PrimeHubError as error:
        raise CLIError(error.message) from None


def call(fn: Any, *args: Any, names: dict[str, str] | None = None, **kwargs: Any) -> Any:
    """Call the API; an error is one line naming fields as the user knows them (`names`)."""
    try:
        return fn(*args, **kwargs)
    except PrimeHubError as error:
        raise CLIError(in_words(error.message, error.details, names)) from None


def confirm(question: str, yes: bool, flag_hint: str) -> None:
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


def wait_for(
    client: Client, deployment_id: str, phase: str, timeout: float, *, says_phase: bool = False
) -> dict[str, Any]:
    """Wait for a phase, showing progress; `says_phase`: the caller prints the final phase
    itself (stop, start, wait), so the progress lines stop before it (never printed twice)."""
    out = console(stderr=True)
    if not out.is_terminal or in_notebook_shell():
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

        return call(client.wait, deployment_id, phase=phase, timeout=timeout, on_progress=line)
    with out.status(f"waiting for {deployment_id}...") as spinner:

        def progress(d: dict[str, Any]) -> None:
            status = d["status"]
            message = f" - {status['message']}" if status.get("message") else ""
            spinner.update(f"{deployment_id}: {status.get('phase')}{message}")

        return call(client.wait, deployment_id, phase=phase, timeout=timeout, on_progress=progress)
