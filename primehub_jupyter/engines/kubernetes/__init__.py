"""The Kubernetes engine: PhDeployment custom resources and the operator that runs them."""

from __future__ import annotations

from typing import Any

__all__ = ["KubernetesEngine"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `python -m primehub_jupyter.engines.kubernetes.fetch` (the model pods'
    # init container) imports nothing but the standard library.
    if name == "KubernetesEngine":
        from .engine import KubernetesEngine

        return KubernetesEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
