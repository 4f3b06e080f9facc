"""Model serving: bundles, runtimes, the Seldon v1 protocol and the model server process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bundle import BundleDescriptor, load_bundle, package
    from .errors import BundleError, ModelLoadError, PackagingError

__all__ = [
    "BundleDescriptor",
    "BundleError",
    "ModelLoadError",
    "PackagingError",
    "load_bundle",
    "package",
]

# Resolved lazily: `python -m primehub_jupyter.serving` imports this package first, and the
# model server must be able to capture output (--log-file) before pydantic or numpy load.
_EXPORTS = {
    "BundleDescriptor": "bundle",
    "load_bundle": "bundle",
    "package": "bundle",
    "BundleError": "errors",
    "ModelLoadError": "errors",
    "PackagingError": "errors",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)
