"""Registry of serving runtimes and packagers, by name, imported only when used."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BundleError, ModelLoadError

if TYPE_CHECKING:
    from ..bundle import BundleDescriptor
    from .base import Packager, Runtime

# Values are "module:Class" strings so that listing or choosing a runtime never imports a
# framework the bundle does not use (importing torch just to serve sklearn would cost seconds).
_HERE = "primehub_jupyter.serving.runtimes"
_RUNTIMES: dict[str, str | type[Runtime]] = {
    "sklearn": f"{_HERE}.sklearn:SklearnRuntime",
    "xgboost": f"{_HERE}.xgboost:XGBoostRuntime",
    "lightgbm": f"{_HERE}.lightgbm:LightGBMRuntime",
    "pytorch": f"{_HERE}.pytorch:PyTorchRuntime",
    "keras": f"{_HERE}.keras:KerasRuntime",
    "tensorflow": f"{_HERE}.tensorflow:TensorFlowRuntime",
    "onnx": f"{_HERE}.onnx:OnnxRuntime",
    "mlflow": f"{_HERE}.mlflow:MlflowRuntime",
    "custom": f"{_HERE}.custom:CustomRuntime",
}

# Tried in order, most specific first: an XGBoost or LightGBM wrapper is also a scikit-learn
# estimator, and a Keras model on the torch backend is also a torch.nn.Module.
_PACKAGERS: list[str | Packager] = [
    f"{_HERE}.xgboost:XGBoostPackager",
    f"{_HERE}.lightgbm:LightGBMPackager",
    f"{_HERE}.keras:KerasPackager",
    f"{_HERE}.pytorch:PyTorchPackager",
    f"{_HERE}.tensorflow:TensorFlowPackager",
    f"{_HERE}.onnx:OnnxPackager",
    f"{_HERE}.mlflow:MlflowPackager",
    f"{_HERE}.custom:CustomPackager",
    f"{_HERE}.sklearn:SklearnPackager",
]
#: The order frameworks are listed in to people ("supported are ...").
_SHOWN_FIRST = ("sklearn", "xgboost", "lightgbm", "pytorch", "keras", "tensorflow", "onnx")


def _resolve(target: str | Any) -> Any:
    if not isinstance(target, str):
        return target
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def register_runtime(name: str, runtime: str | type[Runtime]) -> None:
    """Make `runtime: <name>` in bundle.yaml load with `runtime` (a class or "module:Class")."""
    _RUNTIMES[name] = runtime


def register_packager(packager: str | Packager, *, first: bool = False) -> None:
    """Let `package()` handle another kind of model; `first` puts it before existing ones."""
    if first:
        _PACKAGERS.insert(0, packager)
    else:
        _PACKAGERS.append(packager)


def supported_runtimes() -> list[str]:
    """Names accepted in the `runtime:` field of bundle.yaml, in registration order."""
    return list(_RUNTIMES)


def get_runtime_class(name: str) -> type[Runtime]:
    """The runtime class registered as `name`; BundleError naming the supported ones if none."""
    target = _RUNTIMES.get(name)
    if target is None:
        raise BundleError(
            f"unknown runtime {name!r}: supported runtimes are {', '.join(supported_runtimes())}"
        )
    cls = _resolve(target)
    _RUNTIMES[name] = cls
    return cls


def packagers() -> list[Packager]:
    """Registered packagers, in the order `package()` tries them (instantiated on first use)."""
    for index, target in enumerate(_PACKAGERS):
        if isinstance(target, str):
            _PACKAGERS[index] = _resolve(target)()
    return list(_PACKAGERS)  # type: ignore[arg-type]


def find_packager(model: Any) -> Packager | None:
    """The first packager that accepts `model`, or None."""
    return next((p for p in packagers() if p.accepts(model)), None)


def packager_for(framework: str) -> Packager:
    """The packager of a framework name (`package(framework=...)`); PackagingError if none."""
    from ..errors import PackagingError

    for packager in packagers():
        if packager.framework == framework:
            return packager
    raise PackagingError(
        f"unknown framework {framework!r}: supported are {', '.join(frameworks())}"
    )


def frameworks() -> list[str]:
    """Framework names `package()` knows, in the order they are shown to people."""
    names = [p.framework for p in packagers()]
    return sorted(names, key=lambda n: _SHOWN_FIRST.index(n) if n in _SHOWN_FIRST else 99)


def supported_models() -> str:
    """One sentence listing what `package()` accepts, for error messages."""
    shown = sorted(
        packagers(),
        key=lambda p: _SHOWN_FIRST.index(p.framework) if p.framework in _SHOWN_FIRST else 99,
    )
    return "; ".join(p.description for p in shown)


def load_runtime(bundle_dir: Path, descriptor: BundleDescriptor) -> Runtime:
    """Instantiate the bundle's runtime and load its artifact.

    Errors that are not already BundleError/ModelLoadError are wrapped in ModelLoadError so the
    caller gets one message that names the artifact and the runtime.
    """
    runtime = get_runtime_class(descriptor.runtime)()
    runtime.configure(descriptor)
    try:
        runtime.load(bundle_dir, descriptor)
    except (BundleError, ModelLoadError):
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"the {descriptor.runtime} runtime could not load {descriptor.artifact} from "
            f"{bundle_dir}: {type(exc).__name__}: {exc}"
        ) from exc
    return runtime
