"""Model serving: bundles, packaging, runtime plugins, Seldon v1 and V2 protocols, the server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bundle import load_bundle
    from .descriptor import BundleDescriptor
    from .errors import BundleError, ModelLoadError, PackagingError
    from .packaging import package

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
    "BundleDescriptor": "descriptor",
    "load_bundle": "bundle",
    "package": "packaging",
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
