"""Stand-ins for the few `seldon_core` names that model classes import, when it is not installed.

Classes written for Seldon's Python wrapper often subclass `SeldonComponent`, return a
`ClientResponse` or raise `SeldonMicroserviceException`. seldon-core pins old libraries, so
rather than installing it the custom runtime registers these small equivalents under the same
module names, only when the real package is absent.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any


class SeldonMicroserviceException(Exception):
    """An error with an HTTP status, as Seldon's wrapper defines it."""

    status_code = 400

    def __init__(
        self,
        message: str,
        status_code: int | None = None,
        payload: Any = None,
        reason: str = "MICROSERVICE_BAD_DATA",
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.payload = payload
        self.reason = reason

    def to_dict(self) -> dict[str, Any]:
        """The error as Seldon's wrapper would answer it."""
        return {"status": {"status": 1, "info": self.message, "code": -1, "reason": self.reason}}


class SeldonNotImplementedError(SeldonMicroserviceException):
    """Raised by SeldonComponent's default methods: "the model does not implement this"."""

    status_code = 400


class ClientResponse:
    """A prediction with per-request tags and metrics."""

    def __init__(
        self,
        data: Any,
        tags: dict[str, Any] | None = None,
        metrics: list[dict[str, Any]] | None = None,
    ) -> None:
        self.data = data
        self.tags = tags if tags is not None else {}
        self.metrics = metrics if metrics is not None else []

    @classmethod
    def create(cls, data: Any) -> ClientResponse:
        """Wrap `data` unless it already is a ClientResponse."""
        return data if isinstance(data, cls) else cls(data=data)


def _not_implemented(name: str) -> Any:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise SeldonNotImplementedError(f"{name} is not implemented")

    method.__name__ = name
    return method


class SeldonComponent:
    """Base class whose methods all say "not implemented" until a model overrides them."""

    def __init__(self, **kwargs: Any) -> None:
        pass

    def load(self) -> None:
        """Nothing to load by default."""


for _name in (
    "tags",
    "class_names",
    "predict",
    "predict_raw",
    "send_feedback",
    "send_feedback_raw",
    "transform_input",
    "transform_input_raw",
    "transform_output",
    "transform_output_raw",
    "metrics",
    "feature_names",
    "route",
    "route_raw",
    "aggregate",
    "aggregate_raw",
    "health_status",
    "health_status_raw",
    "metadata",
    "init_metadata",
):
    setattr(SeldonComponent, _name, _not_implemented(_name))


def install() -> bool:
    """Register the stand-ins as `seldon_core.*` unless seldon-core is installed."""
    if "seldon_core" in sys.modules or importlib.util.find_spec("seldon_core") is not None:
        return False
    package = types.ModuleType("seldon_core")
    package.__path__ = []
    package.__doc__ = "primehub-jupyter's stand-in for seldon-core's model-facing names"
    modules = {"seldon_core": package}
    for name in ("user_model", "flask_utils", "microservice"):
        module = types.ModuleType(f"seldon_core.{name}")
        module.SeldonComponent = SeldonComponent  # type: ignore[attr-defined]
        module.ClientResponse = ClientResponse  # type: ignore[attr-defined]
        module.SeldonNotImplementedError = SeldonNotImplementedError  # type: ignore[attr-defined]
        module.SeldonMicroserviceException = SeldonMicroserviceException  # type: ignore[attr-defined]
        setattr(package, name, module)
        modules[module.__name__] = module
    sys.modules.update(modules)
    return True
