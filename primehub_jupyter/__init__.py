"""primehub-jupyter: package, deploy, monitor and invoke ML models without leaving Jupyter."""

from __future__ import annotations

from typing import Any

from ._version import __version__

__all__ = ["Client", "Deployment", "DeploymentPanel", "__version__", "package"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .server.app import PrimeHubApp

    return [{"module": "primehub_jupyter", "app": PrimeHubApp}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "primehub-jupyter"}]


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext primehub_jupyter` registers %deploy, %%deploy, %phlogs and %phdeploy."""
    from .kernel.magics import load_ipython_extension as load

    load(ipython)


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the package (e.g. for the server extension) stays cheap
    # and the kernel side never pulls in the server.
    if name == "Client":
        from .kernel.client import Client

        return Client
    if name == "Deployment":
        from .kernel.deployment import Deployment

        return Deployment
    if name == "DeploymentPanel":
        from .kernel.panel import DeploymentPanel

        return DeploymentPanel
    if name == "package":
        from .serving.packaging import package

        return package
    raise AttributeError(name)
