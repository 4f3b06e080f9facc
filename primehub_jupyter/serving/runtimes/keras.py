"""Keras 3 runtime and packager: `.keras` files (and legacy `.h5`), on any Keras backend."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelLoadError, PackagingError
from .base import ModelFacts, PackageOptions, Packager, Runtime, datatype_of
from .common import (
    copy_into,
    defined_in,
    import_source,
    imported_modules,
    loaded,
    merge_requirements,
    pin,
    shape_of,
)

if TYPE_CHECKING:
    from ..descriptor import BundleDescriptor

#: The module each Keras backend needs at run time.
_BACKEND_MODULES = {"torch": "torch", "jax": "jax", "tensorflow": "tensorflow"}


class KerasRuntime(Runtime):
    """Serves a Keras 3 model saved as `.keras` (or legacy HDF5).

    The backend recorded at packaging (`parameters.backend`) is used unless KERAS_BACKEND is
    set or Keras is already imported. A `source` file, if any, is imported first so custom
    layers registered with `@keras.saving.register_keras_serializable` can be deserialized.
    """

    name = "keras"

    def __init__(self) -> None:
        super().__init__()
        self.model: Any = None
        self._dtype: np.dtype = np.dtype(np.float32)

    def load(self, bundle_dir: Path, descriptor: BundleDescriptor) -> None:
        """Pick the backend, import custom objects, then load the model without compiling."""
        backend = self.parameters.get("backend")
        if backend and loaded("keras") is None:
            os.environ.setdefault("KERAS_BACKEND", str(backend))
        if descriptor.source:
            import_source(bundle_dir / descriptor.source)
        import keras

        try:
            self.model = keras.saving.load_model(bundle_dir / descriptor.artifact, compile=False)
        except Exception as exc:
            raise ModelLoadError(
                f"keras {keras.__version__} ({keras.backend.backend()} backend) cannot load "
                f"{descriptor.artifact}: {type(exc).__name__}: {exc}"
            ) from exc
        self._dtype = self.input_dtype

    def predict(self, X: np.ndarray, names: list[str] | None, meta: dict[str, Any]) -> np.ndarray:
        """One forward pass over the batch (no callbacks, no progress bar)."""
        output = self.model.predict_on_batch(np.ascontiguousarray(X, dtype=self._dtype))
        if isinstance(output, (list, tuple, dict)):
            raise TypeError(
                f"the model returned a {type(output).__name__} of outputs; the keras runtime "
                "serves models with one output"
            )
        return np.asarray(output)


class KerasPackager(Packager):
    """Packages Keras 3 models as `.keras` files."""

    framework = "keras"
    description = "a Keras 3 model (keras.Model)"
    file_suffixes = (".keras", ".h5", ".hdf5")
    detect_order = 20  # before pytorch: a Keras model on the torch backend is an nn.Module

    def accepts(self, model: Any) -> bool:
        """True for Keras 3 `keras.Model` instances (tf_keras models go to tensorflow)."""
        if isinstance(model, type) or not defined_in(model, "keras"):
            return False
        import keras

        return isinstance(model, keras.Model)

    def load_file(self, path: Path, options: PackageOptions) -> Any:
        """Load the saved model (custom objects come from `source=`, imported first)."""
        if options.source is not None:
            import_source(options.source)
        import keras

        try:
            return keras.saving.load_model(path, compile=False)
        except Exception as exc:
            raise PackagingError(
                f"keras cannot load {path} ({type(exc).__name__}: {exc}); if it uses custom "
                "layers, pass the .py file that defines them as source="
            ) from None

    def inspect(self, model: Any, options: PackageOptions) -> ModelFacts:
        """Record the backend, the input shape and dtype; one input and one output only."""
        import keras

        backend = keras.backend.backend()
        try:
            inputs = list(model.inputs)
            outputs = list(model.outputs)
        except (AttributeError, ValueError):  # a subclassed model never called on data
            inputs, outputs = [], []
        if len(inputs) > 1 or len(outputs) > 1:
            raise PackagingError(
                f"the model has {len(inputs)} inputs and {len(outputs)} outputs; the keras "
                "runtime serves models with one input and one output"
            )
        shape = shape_of(inputs[0].shape) if inputs else None
        dtype = datatype_of(np.empty(0, dtype=str(inputs[0].dtype))) if inputs else "FP32"
        requirements = pin("keras", "numpy", _BACKEND_MODULES.get(backend, backend))
        source = None
        if options.source is not None:
            if not options.source.is_file():
                raise PackagingError(f"source file {options.source} does not exist")
            source = options.source.name
            text = options.source.read_text(encoding="utf-8")
            requirements = merge_requirements(requirements, pin(*imported_modules(text)))
        return ModelFacts(
            framework=self.framework,
            runtime=KerasRuntime.name,
            framework_version=keras.__version__,
            class_names=options.class_names,
            requirements=requirements,
            input_shape=shape,
            input_datatype=dtype,
            parameters={"backend": backend},
            source=source,
        )

    def save(
        self,
        model: Any,
        bundle_dir: Path,
        source_file: Path | None,
        options: PackageOptions,
        facts: ModelFacts,
    ) -> str:
        """Copy a saved model file as it is, or save the model as `model.keras`."""
        if options.source is not None and facts.source:
            copy_into(options.source, bundle_dir, facts.source)
        if source_file is not None and source_file.suffix.lower() in self.file_suffixes:
            artifact = "model" + source_file.suffix.lower()
            copy_into(source_file, bundle_dir, artifact)
            return artifact
        model.save(bundle_dir / "model.keras")
        return "model.keras"
