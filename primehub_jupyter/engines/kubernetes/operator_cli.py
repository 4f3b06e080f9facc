"""`primehub-deploy operator`: run the PhDeployment operator (in the cluster, or beside it)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click


@click.command("operator")
@click.option(
    "--namespace",
    envvar="PRIMEHUB_NAMESPACE",
    default="",
    help="Namespace of the PhDeployments (default: the pod's own, or the kubeconfig context's).",
)
@click.option(
    "--config",
    "config_file",
    envvar="PRIMEHUB_CONFIG",
    default="/etc/primehub/config.yaml",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Groups, instance types and quota (config.yaml of the primehub-config ConfigMap).",
)
@click.option(
    "--settings",
    "settings_file",
    envvar="PRIMEHUB_OPERATOR_SETTINGS",
    default="",
    type=click.Path(dir_okay=False),
    help="Operator settings (operator.yaml of the ConfigMap): images, ingress, volumes.",
)
@click.option(
    "--kubeconfig", default="", help="kubeconfig file (default: in-cluster, $KUBECONFIG)."
)
@click.option("--context", default="", help="kubeconfig context.")
@click.option("--model-server-image", default="", help="Overrides modelServerImage.")
@click.option(
    "--jwt-issuer",
    envvar="PRIMEHUB_JWT_ISSUER",
    default="",
    help="Overrides jwt.issuer: bearer JWTs of this issuer on private endpoints.",
)
@click.option("--jwt-audience", envvar="PRIMEHUB_JWT_AUDIENCE", default="", help="jwt.audience.")
@click.option("--jwt-jwks", envvar="PRIMEHUB_JWT_JWKS", default="", help="jwt.jwks (an https URL).")
@click.option(
    "--jwt-user-claim", envvar="PRIMEHUB_JWT_USER_CLAIM", default="", help="jwt.userClaim."
)
@click.option(
    "--jwt-groups-claim", envvar="PRIMEHUB_JWT_GROUPS_CLAIM", default="", help="jwt.groupsClaim."
)
@click.option(
    "--liveness",
    default="http://0.0.0.0:8080/healthz",
    show_default=True,
    help="Liveness endpoint for the kubelet's probe ('' to disable).",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def operator_command(
    namespace: str,
    config_file: str,
    settings_file: str,
    kubeconfig: str,
    context: str,
    model_server_image: str,
    jwt_issuer: str,
    jwt_audience: str,
    jwt_jwks: str,
    jwt_user_claim: str,
    jwt_groups_claim: str,
    liveness: str,
    verbose: bool,
) -> None:
    """Reconcile PhDeployments into Deployments, Services, Ingresses and Secrets."""
    from ...core.config import ConfigStore
    from .settings import OperatorSettings

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not Path(config_file).exists():
        raise click.ClickException(
            f"{config_file} not found: mount the primehub-config ConfigMap there or pass --config"
        )
    store = ConfigStore(config_file)
    try:
        store.get()
        settings = OperatorSettings.load(
            settings_file or None,
            model_server_image=model_server_image,
            jwt_issuer=jwt_issuer,
            jwt_audience=jwt_audience,
            jwt_jwks=jwt_jwks,
            jwt_user_claim=jwt_user_claim,
            jwt_groups_claim=jwt_groups_claim,
        )
    except Exception as error:  # a configuration mistake, in one line
        raise click.ClickException(getattr(error, "message", str(error))) from None
    from .operator import OperatorFailed

    try:
        asyncio.run(_run(settings, store, namespace, kubeconfig, context, liveness or None))
    except OperatorFailed as error:
        raise click.ClickException(str(error)) from None


async def _run(
    settings: object,
    store: object,
    namespace: str,
    kubeconfig: str,
    context: str,
    liveness: str | None,
) -> None:
    from .client import load_configuration
    from .operator import Operator
    from .settings import OperatorSettings

    assert isinstance(settings, OperatorSettings)
    configuration, default_namespace = await load_configuration(kubeconfig, context)
    settings.namespace = namespace or settings.namespace or default_namespace
    operator = Operator(settings, store, configuration)  # type: ignore[arg-type]
    # kopf stops gracefully on SIGTERM (the kubelet) and SIGINT by itself, in the main thread.
    await operator.run(liveness_endpoint=liveness)
