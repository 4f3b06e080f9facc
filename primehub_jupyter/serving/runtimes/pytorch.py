"""PyTorch runtime and packager: TorchScript, or a state dict with its nn.Module class source."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelLoadError, PackagingError
from .base import ModelFacts, ModelPath, PackageOptions, Packager, Runtime, datatype_of
from .common import (
    copy_into,
    defined_in,
    import_source,
    imported_modules,
    loaded,
    merge_requirements,
    pin,
)

if TYPE_CHECKING:
    from ..descriptor import BundleDescriptor

TORCHSCRIPT = "torchscript"
STATE_DICT = "state_dict"
_ARTIFACT = "model.pt"


class PyTorchRuntime(Runtime):
    """Serves a TorchScript module, or an nn.Module rebuilt from its class source and state dict.

    `parameters.format` is "torchscript" or "state_dict". For a state dict, bundle.yaml names
    the `source` file and `modelClass`, and `parameters.initKwargs` are the constructor's
    arguments.
    """

    name = "pytorch"

    def __init__(self) -> None:
        super().__init__()
        self.module: Any = None
        self._torch: Any = None
        self._dtype: np.dtype = np.dtype(np.float32)

    def load(self, bundle_dir: Path, descriptor: BundleDescriptor) -> None:
        """Load the module on the CPU in eval mode."""
        import torch

        self._torch = torch
        path = bundle_dir / descriptor.artifact
        if self.parameters.get("format", TORCHSCRIPT) == STATE_DICT:
            self.module = _module_from_state_dict(bundle_dir, descriptor, self.parameters)
        else:
            try:
                self.module = torch.jit.load(str(path), map_location="cpu")
            except Exception as exc:
                raise ModelLoadError(
                    f"torch cannot load {descriptor.artifact} as TorchScript "
                    f"({type(exc).__name__}: {exc}); package the model again"
                ) from exc
        self.module.eval()
        self._dtype = self.input_dtype

    def predict(self, X: np.ndarray, names: list[str] | None, meta: dict[str, Any]) -> np.ndarray:
        """Run the module's forward on X (cast to the bundle's input dtype), without autograd."""
        torch = self._torch
        tensor = torch.from_numpy(np.ascontiguousarray(X, dtype=self._dtype))
        with torch.inference_mode():
            output = self.module(tensor)
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"the model returned a {type(output).__name__}; the pytorch runtime serves "
                "modules whose forward returns one tensor"
            )
        return output.detach().cpu().numpy()


def _module_from_state_dict(
    bundle_dir: Path, descriptor: BundleDescriptor, parameters: dict[str, Any]
) -> Any:
    import torch

    source = descriptor.source
    class_name = descriptor.model_class
    if not source or not class_name:
        raise ModelLoadError(
            "a state dict bundle needs `source` (the .py file) and `modelClass` in bundle.yaml"
        )
    module = import_source(bundle_dir / source)
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ModelLoadError(f"{source} defines no class {class_name!r} (bundle.yaml modelClass)")
    kwargs = dict(parameters.get("initKwargs") or {})
    try:
        net = cls(**kwargs)
    except Exception as exc:
        raise ModelLoadError(
            f"{class_name}(**{kwargs!r}) failed ({type(exc).__name__}: {exc}): pass the "
            "constructor's arguments with package(..., init_kwargs={...})"
        ) from exc
    state = torch.load(str(bundle_dir / descriptor.artifact), map_location="cpu", weights_only=True)
    try:
        net.load_state_dict(state)
    except Exception as exc:
        raise ModelLoadError(
            f"the state dict in {descriptor.artifact} does not fit {class_name}"
            f"(**{kwargs!r}): {exc}"
        ) from exc
    return net


class PyTorchPackager(Packager):
    """Packages nn.Modules (as TorchScript, or as a state dict with the class source)."""

    framework = "pytorch"
    description = (
        "a PyTorch nn.Module or TorchScript module (or a state dict with source= and model_class=)"
    )
    file_suffixes = (".pt", ".pth", ".torchscript")
    detect_order = 30

    def accepts(self, model: Any) -> bool:
        """True for torch.nn.Module instances and for dicts of tensors (state dicts)."""
        if isinstance(model, type):
            return False
        if defined_in(model, "torch"):
            import torch

            return isinstance(model, torch.nn.Module)
        return _is_state_dict(model)

    def load_file(self, path: Path, options: PackageOptions) -> Any:
        """A TorchScript archive stays a path; anything else must be a state dict."""
        if _is_torchscript(path):
            return ModelPath(path)
        import torch

        try:
            return torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise PackagingError(
                f"{path} is neither TorchScript nor a state dict ({type(exc).__name__}). "
                "A whole pickled module cannot be served safely: save "
                "torch.jit.script(model) with .save(), or model.state_dict() with "
                "torch.save() and package it with source= and model_class="
            ) from None

    def inspect(self, model: Any, options: PackageOptions) -> ModelFacts:
        """Decide between TorchScript and state dict; find the input dtype."""
        import torch

        requirements = pin("torch", "numpy")
        parameters: dict[str, Any] = {}
        source: str | None = None
        model_class: str | None = None
        dtype = "FP32"
        if isinstance(model, ModelPath):
            parameters["format"] = TORCHSCRIPT
            dtype = _first_dtype(torch.jit.load(str(model.path), map_location="cpu"))
        elif options.source is not None or _is_state_dict(model):
            if options.source is None:
                raise PackagingError(
                    "a state dict needs the .py file that defines its nn.Module class: "
                    "package(state_dict, path, source='net.py', model_class='Net')"
                )
            if not options.source.is_file():
                raise PackagingError(f"source file {options.source} does not exist")
            model_class = options.model_class or (
                type(model).__name__ if isinstance(model, torch.nn.Module) else None
            )
            if not model_class:
                raise PackagingError(
                    "name the nn.Module class defined in the source file: model_class='Net'"
                )
            parameters["format"] = STATE_DICT
            if options.init_kwargs:
                parameters["initKwargs"] = dict(options.init_kwargs)
            source = options.source.name
            text = options.source.read_text(encoding="utf-8")
            requirements = merge_requirements(requirements, pin(*imported_modules(text)))
            dtype = _first_dtype(model)
        else:
            parameters["format"] = TORCHSCRIPT
            dtype = _first_dtype(model)
        return ModelFacts(
            framework=self.framework,
            runtime=PyTorchRuntime.name,
            framework_version=torch.__version__.split("+", 1)[0],
            class_names=options.class_names,
            requirements=requirements,
            input_datatype=dtype,
            parameters=parameters,
            source=source,
            model_class=model_class,
        )

    def save(
        self,
        model: Any,
        bundle_dir: Path,
        source_file: Path | None,
        options: PackageOptions,
        facts: ModelFacts,
    ) -> str:
        """Write TorchScript (scripted, else traced on the sample) or the state dict + source."""
        import torch

        if facts.parameters.get("format") == STATE_DICT:
            assert options.source is not None and facts.source is not None
            copy_into(options.source, bundle_dir, facts.source)
            state = model.state_dict() if isinstance(model, torch.nn.Module) else model
            torch.save(state, bundle_dir / _ARTIFACT)
            return _ARTIFACT
        if isinstance(model, ModelPath):
            copy_into(model.path, bundle_dir, _ARTIFACT)
            return _ARTIFACT
        _to_torchscript(model, options.sample_input, facts.input_datatype).save(
            str(bundle_dir / _ARTIFACT)
        )
        return _ARTIFACT


def _to_torchscript(model: Any, sample_input: Any, datatype: str) -> Any:
    import torch

    if isinstance(model, torch.jit.ScriptModule):
        return model
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            # torch 2.x marks TorchScript deprecated; it is still the portable format here.
            warnings.simplefilter("ignore")
            try:
                return torch.jit.script(model)
            except Exception as script_error:
                if sample_input is None:
                    raise PackagingError(
                        f"torch.jit.script cannot compile the {type(model).__name__} "
                        f"({type(script_error).__name__}: {str(script_error).strip()[:300]}); "
                        "pass sample_input= so it can be traced instead, or package its "
                        "state dict with source='net.py' and model_class="
                    ) from None
                from .base import numpy_dtype

                example = torch.from_numpy(np.asarray(sample_input, dtype=numpy_dtype(datatype)))
                try:
                    return torch.jit.trace(model, example)
                except Exception as trace_error:
                    raise PackagingError(
                        f"the {type(model).__name__} can be neither scripted nor traced "
                        f"({type(trace_error).__name__}: {trace_error}); package its state "
                        "dict with source='net.py' and model_class= instead"
                    ) from None
    finally:
        model.train(was_training)


def _first_dtype(module: Any) -> str:
    """The datatype of the first floating point parameter (FP32 when there is none)."""
    if isinstance(module, dict):
        tensors = list(module.values())
    else:
        tensors = list(module.parameters()) + list(module.buffers())
    for tensor in tensors:
        if tensor.is_floating_point():
            return datatype_of(np.empty(0, dtype=str(tensor.dtype).replace("torch.", "")))
    return "FP32"


def _is_state_dict(model: Any) -> bool:
    if not isinstance(model, dict) or not model or loaded("torch") is None:
        return False
    import torch

    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items())


def _is_torchscript(path: Path) -> bool:
    # TorchScript archives are zip files with a constants.pkl; torch.save() files are not.
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
