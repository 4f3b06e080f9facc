"""primehub-deploy serve: the REST API and the local engine without JupyterLab."""

from __future__ import annotations

import click


@click.command(context_settings={"ignore_unknown_options": True})
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
    from ..server import serve as standalone

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
