"""primehub-deploy: the command line for deployments, in the spirit of odahuflowctl."""

from __future__ import annotations

import click

from . import compare, deployments, jobs, observe
from .clients import clients
from .documents import SET_FLAGS, SET_SHORTCUTS, load_document, parse_sets
from .groups import groups
from .output import CLIError
from .serve import serve

__all__ = [
    "SET_FLAGS",
    "SET_SHORTCUTS",
    "CLIError",
    "cli",
    "load_document",
    "main",
    "parse_sets",
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="PRIMEHUB_API_URL", help="Server URL (default: a running Jupyter).")
@click.option("--token", envvar="PRIMEHUB_API_TOKEN", help="API token of that server.")
@click.version_option(package_name="primehub-jupyter")
@click.pass_context
def cli(ctx: click.Context, url: str | None, token: str | None) -> None:
    """Deploy, update, observe and invoke ML models (PrimeHub Model Deployment)."""
    ctx.ensure_object(dict)
    ctx.obj.update(url=url, token=token)


for command in (
    *deployments.COMMANDS,
    *observe.COMMANDS,
    *compare.COMMANDS,
    *jobs.COMMANDS,
    clients,
    groups,
    serve,
):
    cli.add_command(command)


def _attach_others() -> None:
    """The commands other parts of the package bring: package, model-server, operator.

    `serve` imports the Jupyter server only when it runs; these import no server either.
    """
    from ..engines.kubernetes.operator_cli import operator_command
    from ..serving.package_cli import package_group
    from ..serving.server import model_server_command

    cli.add_command(package_group, "package")
    cli.add_command(model_server_command, "model-server")
    cli.add_command(operator_command, "operator")


_attach_others()


def main() -> None:
    """Entry point of `primehub-deploy`."""
    cli(prog_name="primehub-deploy")
