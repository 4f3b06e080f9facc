"""TensorFlow runtime and packager: SavedModel directories (TF2, and TF1 through TF2's loader)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelLoadError, PackagingError
from .base import ModelFacts, ModelPath, PackageOptions, Packager, Runtime, datatype_of
from .common import copy_into, defined_in, pin, shape_of

if TYPE_CHECKING:
    from ..descriptor import BundleDescriptor

DEFAULT_SIGNATURE = "serving_default"
_ARTIFACT = "saved_model"


class TensorFlowRuntime(Runtime):
    """Serves one signature of a SavedModel (`predictMethod`, default "serving_default").

    `tf.saved_model.load` reads TF2 SavedModels and TF1 ones (graphs with a MetaGraph tagged
    "serve", e.g. from `tf.compat.v1.saved_model.Builder` or TF1 Estimators). The signature must
    take one tensor; `parameters.output` picks the output when it has several (default: the
    first by name).
    """

    name = "tensorflow"

    def __init__(self) -> None:
        super().__init__()
        self._loaded: Any = None
        self._signature: Any = None
        self._input_name = ""
        self._output_name = ""
        self._tf: Any = None
        self._dtype: Any = None

    def load(self, bundle_dir: Path, descriptor: BundleDescriptor) -> None:
        """Load the SavedModel and resolve the signature's input and output names."""
        import tensorflow as tf

        self._tf = tf
        tags = self.parameters.get("tags")
        try:
            self._loaded = load_saved_model(bundle_dir / descriptor.artifact, tags)
        except Exception as exc:
            raise ModelLoadError(
                f"tensorflow {tf.__version__} cannot load the SavedModel {descriptor.artifact} "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        (self._signature, self._input_name, spec, self._output_name) = signature_parts(
            self._loaded,
            descriptor.predict_method or DEFAULT_SIGNATURE,
            self.parameters.get("output"),
        )
        self._dtype = spec.dtype

    def predict(self, X: np.ndarray, names: list[str] | None, meta: dict[str, Any]) -> np.ndarray:
        """Call the signature with X as its one input and return the chosen output."""
        tensor = self._tf.constant(X, dtype=self._dtype)
        result = self._signature(**{self._input_name: tensor})
        return np.asarray(result[self._output_name].numpy())


def signature_parts(loaded: Any, name: str, output: str | None) -> tuple[Any, str, Any, str]:
    """(function, input name, input TensorSpec, output name) of signature `name`."""
    signatures = getattr(loaded, "signatures", {}) or {}
    if name not in signatures:
        available = ", ".join(sorted(signatures)) or "none"
        raise ModelLoadError(
            f"the SavedModel has no signature {name!r} (it has: {available}); set predictMethod "
            "to one of them, or save the model with a serving signature"
        )
    function = signatures[name]
    args, kwargs = function.structured_input_signature
    inputs = dict(kwargs or {})
    if args or len(inputs) != 1:
        raise ModelLoadError(
            f"signature {name!r} takes {len(args) + len(inputs)} inputs; the tensorflow runtime "
            "serves signatures with exactly one tensor input"
        )
    input_name, spec = next(iter(inputs.items()))
    outputs = function.structured_outputs
    if not isinstance(outputs, dict) or not outputs:
        raise ModelLoadError(f"signature {name!r} has no named outputs")
    output_name = output or sorted(outputs)[0]
    if output_name not in outputs:
        raise ModelLoadError(
            f"signature {name!r} has no output {output_name!r} (it has: "
            f"{', '.join(sorted(outputs))})"
        )
    return function, input_name, spec, output_name


class TensorFlowPackager(Packager):
    """Packages SavedModel directories and TensorFlow modules (tf.Module, tf_keras models)."""

    framework = "tensorflow"
    description = "a TensorFlow SavedModel directory or tf.Module (TF1 SavedModels too)"
    detect_order = 30
    directory_kind = ("a TensorFlow SavedModel", "saved_model.pb")

    def accepts(self, model: Any) -> bool:
        """True for tf.Module instances (tf_keras models included)."""
        if isinstance(model, type) or not defined_in(model, "tensorflow", "tf_keras", "keras"):
            return False
        try:
            import tensorflow as tf
        except ImportError:
            return False
        return isinstance(model, tf.Module)

    def accepts_path(self, path: Path) -> bool:
        """A directory holding saved_model.pb (or .pbtxt)."""
        return path.is_dir() and any(
            (path / name).is_file() for name in ("saved_model.pb", "saved_model.pbtxt")
        )

    def inspect(self, model: Any, options: PackageOptions) -> ModelFacts:
        """Record the signature; shape and dtype come from the saved signature later."""
        import tensorflow as tf

        return ModelFacts(
            framework=self.framework,
            runtime=TensorFlowRuntime.name,
            framework_version=tf.__version__,
            predict_method=options.predict_method or DEFAULT_SIGNATURE,
            class_names=options.class_names,
            requirements=pin("tensorflow", "numpy"),
        )

    def save(
        self,
        model: Any,
        bundle_dir: Path,
        source_file: Path | None,
        options: PackageOptions,
        facts: ModelFacts,
    ) -> str:
        """Copy a SavedModel directory as it is, or save the module as one."""
        import tensorflow as tf

        if isinstance(model, ModelPath):
            copy_into(model.path, bundle_dir, _ARTIFACT)
        else:
            try:
                tf.saved_model.save(model, str(bundle_dir / _ARTIFACT))
            except Exception as exc:
                raise PackagingError(
                    f"tf.saved_model.save failed ({type(exc).__name__}: {exc}); give the module "
                    "a @tf.function(input_signature=[...]) to serve"
                ) from None
        return _ARTIFACT

    def describe_saved(self, bundle_dir: Path, artifact: str, facts: ModelFacts) -> None:
        """Read the input shape and dtype from the saved signature."""
        loaded = load_saved_model(bundle_dir / artifact, facts.parameters.get("tags"))
        _, _, spec, _ = signature_parts(
            loaded, facts.predict_method or DEFAULT_SIGNATURE, facts.parameters.get("output")
        )
        if spec.shape.rank is not None:
            facts.input_shape = [-1, *shape_of(spec.shape.as_list()[1:])]
        facts.input_datatype = datatype_of(np.empty(0, dtype=spec.dtype.as_numpy_dtype))


def load_saved_model(path: Path, tags: list[str] | None) -> Any:
    """tf.saved_model.load; a TF1 SavedModel with several MetaGraphs is loaded as "serve"."""
    import tensorflow as tf

    try:
        return tf.saved_model.load(str(path), tags=tags)
    except ValueError:
        if tags is not None:
            raise
        return tf.saved_model.load(str(path), tags=["serve"])
