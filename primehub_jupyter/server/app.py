"""PrimeHubApp: the Jupyter server extension, its configuration and the engine's lifecycle."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.serverapp import ServerApp
from traitlets import Enum, Integer, Unicode, default
from traitlets.config import Config

from .._version import __version__
from ..core.access import DEFAULT_GROUPS_CLAIM, JwtSettings
from ..core.config import ConfigStore, default_user
from ..core.errors import ServiceError
from ..core.service import DeploymentService
from ..engines.base import Engine, EngineClass


class EngineUnavailable(ServiceError):
    """The engine could not start; every request says why."""

    status = 503
    reason = "EngineUnavailable"


class PrimeHubApp(ExtensionApp):
    """Model deployments in Jupyter: REST API under <base_url>/primehub/api/."""

    name = "primehub_jupyter"
    description = "Package, deploy, monitor and invoke ML models from Jupyter"
    version = __version__
    extension_url = "/primehub/api/me"
    load_other_extensions = True

    # An import string: the app imports no engine but the one it builds.
    engine_class = EngineClass(
        default_value="primehub_jupyter.engines.local.engine.LocalEngine",
        klass=Engine,
        config=True,
        help="Where deployments run, by import string: the embedded "
        "primehub_jupyter.engines.local.engine.LocalEngine or "
        "primehub_jupyter.engines.kubernetes.KubernetesEngine.",
    )
    data_dir = Unicode(
        "",
        config=True,
        help="State directory (default: <Jupyter data dir>/primehub); the engine's default too.",
    )
    groups_file = Unicode(
        "",
        config=True,
        help="YAML file of groups, instance types, quota and admins "
        "(default: <data_dir>/config.yaml), written with a sensible default on first run.",
    )
    owner = Unicode(
        config=True,
        help="The user of a single-user server (default: $JUPYTERHUB_USER or the OS user).",
    )
    user_source = Enum(
        ["auto", "owner", "identity"],
        default_value="auto",
        config=True,
        help="Who a request is from: 'owner' (single-user server), 'identity' (the identity "
        "provider's user name, e.g. JupyterHub) or 'auto' (owner for Jupyter's own token/password "
        "login, identity otherwise).",
    )
    bcrypt_rounds = Integer(12, config=True, help="bcrypt cost of client token hashes.")
    jwt_issuer = Unicode(
        "",
        config=True,
        help="Issuer (`iss`) of the bearer JWTs private endpoints accept, e.g. "
        "https://keycloak.example.com/realms/primehub; empty: HTTP Basic clients only.",
    )
    jwt_audience = Unicode("", config=True, help="Required `aud` of bearer JWTs.")
    jwt_jwks = Unicode(
        "",
        config=True,
        help="The issuer's JSON Web Key Set: an https URL or a local file path; keys are "
        "cached and fetched again when a token names an unknown `kid`.",
    )
    jwt_jwks_ca = Unicode(
        "",
        config=True,
        help="PEM file of CA certificates trusted when fetching an https jwt_jwks (a private "
        "CA, or a test's self-signed certificate); empty: the system's trust store.",
    )
    jwt_user_claim = Unicode(
        "", config=True, help="Claim naming the caller (default: preferred_username, then sub)."
    )
    jwt_groups_claim = Unicode(
        DEFAULT_GROUPS_CLAIM,
        config=True,
        help="Claim listing the caller's groups (names or Keycloak '/group' paths).",
    )

    engine: Engine | None = None
    service: DeploymentService | None = None

    @default("owner")
    def _default_owner(self) -> str:
        return default_user()

    @default("data_dir")
    def _default_data_dir(self) -> str:
        from jupyter_core.paths import jupyter_data_dir

        return os.path.join(jupyter_data_dir(), "primehub")

    def initialize_settings(self) -> None:
        data_dir = os.path.expanduser(self.data_dir)
        groups_file = self.groups_file or os.path.join(data_dir, "config.yaml")
        store = ConfigStore(groups_file, user=self.owner)
        root_dir = str(self.serverapp.root_dir) if self.serverapp else None
        kwargs: dict[str, Any] = self.engine_class.server_defaults(
            self.config, data_dir=data_dir, root_dir=root_dir
        )
        kwargs.update(parent=self, config_store=store, jwt_settings=self.jwt_settings())
        self.engine = self.engine_class(**kwargs)  # type: ignore[abstract]
        self.service = DeploymentService(self.engine, store, bcrypt_rounds=self.bcrypt_rounds)
        self._started: asyncio.Future | None = None
        self.settings.update({"primehub_app": self})

    def initialize_handlers(self) -> None:
        from .handlers import default_handlers

        self.handlers.extend(default_handlers)

    def jwt_settings(self) -> JwtSettings | None:
        """The bearer JWT settings, or None when no issuer is configured.

        An issuer without audience or key set is a configuration mistake: the server refuses to
        start rather than run endpoints that silently take no tokens.
        """
        if not self.jwt_issuer:
            return None
        missing = [n for n in ("jwt_audience", "jwt_jwks") if not getattr(self, n)]
        if missing:
            names = " and ".join(f"PrimeHubApp.{n}" for n in missing)
            raise ValueError(f"PrimeHubApp.jwt_issuer is set: {names} must be set too")
        return JwtSettings(
            issuer=self.jwt_issuer,
            audience=self.jwt_audience,
            jwks=self.jwt_jwks,
            jwks_ca=self.jwt_jwks_ca,
            user_claim=self.jwt_user_claim,
            groups_claim=self.jwt_groups_claim or DEFAULT_GROUPS_CLAIM,
        )

    async def ensure_started(self) -> DeploymentService:
        """Start the engine once; every caller waits for that one start."""
        assert self.engine is not None and self.service is not None
        if self._started is None:
            self._started = asyncio.ensure_future(self.engine.start())
        started = self._started
        try:
            await asyncio.shield(started)
        except Exception as error:
            raise EngineUnavailable(f"the deployment engine could not start: {error}") from None
        return self.service

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        # Start eagerly so deployments come back after a restart without any request.
        try:
            await self.ensure_started()
        except EngineUnavailable as error:
            self.log.error("%s", error.message)
            return
        base = self.engine.endpoint_base if self.engine is not None else None
        if base:  # the one URL `make demo`, `serve` and curl users need besides the API's
            self.log.info("PrimeHub model endpoints: %s/deployment/<id>/api/v1.0/predictions", base)

    async def stop_extension(self) -> None:
        started = getattr(self, "_started", None)
        if self.engine is not None and started is not None:
            try:
                await started
            except Exception:
                return
            await self.engine.shutdown()
            self._started = None

    def user_of(self, handler: Any) -> str:
        """The PrimeHub user name for a request."""
        source = self.user_source
        if source == "auto":
            from jupyter_server.auth.identity import (
                IdentityProvider,
                LegacyIdentityProvider,
                PasswordIdentityProvider,
            )

            builtin = (IdentityProvider, PasswordIdentityProvider, LegacyIdentityProvider)
            provider = getattr(handler, "identity_provider", None)
            source = "owner" if type(provider) in builtin else "identity"
        if source == "owner":
            return self.owner
        user = handler.current_user
        return getattr(user, "username", None) or str(user)


class APIOnlyServerApp(ServerApp):
    """The Jupyter server under `primehub-deploy serve`: its token opens the PrimeHub API only.

    No kernels, contents, files, terminals, sessions, kernel specs, nbconvert, config or
    shutdown: whoever holds this token manages deployments, and gets no shell on the machine.
    """

    # "auth" has no handlers of its own (the identity provider adds login/logout); the base
    # handlers (/api version, /metrics, static) are always there and harmless.
    default_services = ("auth",)  # type: ignore[assignment]

    @default("terminals_enabled")
    def _default_terminals_enabled(self) -> bool:
        return False

    def init_configurables(self) -> None:
        """Create the managers as usual, then take away the contents manager's /files/ route."""
        super().init_configurables()
        self.contents_manager.files_handler_class = None


class ServeApp(PrimeHubApp):
    """`primehub-deploy serve`: the API and the engine alone, without other extensions."""

    load_other_extensions = False
    serverapp_class = APIOnlyServerApp

    @classmethod
    def serve(cls, argv: list[str], token: str) -> None:
        """Run until stopped; the token goes in as configuration, never through an argv."""
        config = Config()
        config.IdentityProvider.token = token
        serverapp = cls.initialize_server(argv=argv, config=config)
        serverapp.start()


main = launch_new_instance = PrimeHubApp.launch_instance
