"""Base classes for serving runtimes (load and predict) and packagers (write a bundle)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import PayloadError

if TYPE_CHECKING:
    from ..descriptor import BundleDescriptor

# Methods whose output has one column per class, so classNames can label the columns.
PER_CLASS_METHODS = frozenset({"predict_proba", "predict_log_proba", "decision_function"})

# numpy dtype kind/size -> Open Inference Protocol datatype names, used in bundle signatures.
_DATATYPES = {
    ("b", 1): "BOOL",
    ("u", 1): "UINT8",
    ("u", 2): "UINT16",
    ("u", 4): "UINT32",
    ("u", 8): "UINT64",
    ("i", 1): "INT8",
    ("i", 2): "INT16",
    ("i", 4): "INT32",
    ("i", 8): "INT64",
    ("f", 2): "FP16",
    ("f", 4): "FP32",
    ("f", 8): "FP64",
}


_NUMPY_TYPES = {name: np.dtype(f"{kind}{size}") for (kind, size), name in _DATATYPES.items()}


def datatype_of(array: np.ndarray) -> str:
    """Name the Open Inference Protocol datatype of an array (BYTES for strings and objects)."""
    return _DATATYPES.get((array.dtype.kind, array.dtype.itemsize), "BYTES")


def numpy_dtype(datatype: str | None, default: Any = np.float64) -> np.dtype:
    """The numpy dtype of an Open Inference Protocol datatype name (FP32 -> float32)."""
    return _NUMPY_TYPES.get(datatype or "", np.dtype(default))


class Runtime(ABC):
    """Loads one bundle's artifact and answers predictions on numeric arrays.

    A runtime instance serves one model. `predict` is called with a validated array of the
    bundle's input datatype (`input_dtype`; float64 unless the signature says otherwise), or
    with a str/bytes/JSON value for runtimes whose `payload_kinds` take strData, binData or
    jsonData. It must not keep per-request state outside its arguments (the custom runtime,
    which never batches, is the one exception: a ClientResponse's tags and metrics).
    """

    #: The `runtime:` value in bundle.yaml that selects this class.
    name: ClassVar[str]
    #: Seldon payload kinds this runtime understands ("ndarray", "tensor", "strData",
    #: "jsonData", "binData"). Only the custom runtime takes the last three.
    payload_kinds: ClassVar[frozenset[str]] = frozenset({"ndarray", "tensor"})
    #: False when `predict` also takes non-numeric ndarrays (e.g. a list of strings); the
    #: protocol then skips its float64 conversion and passes the array as decoded.
    numeric_input: ClassVar[bool] = True

    def __init__(self) -> None:
        self.descriptor: BundleDescriptor | None = None
        self._input_shape: tuple[int, ...] | None = None

    @abstractmethod
    def load(self, bundle_dir: Path, descriptor: BundleDescriptor) -> None:
        """Load the artifact; raise ModelLoadError with an actionable message on failure."""

    @abstractmethod
    def predict(self, X: np.ndarray, names: list[str] | None, meta: dict[str, Any]) -> np.ndarray:
        """Return the model's output for the rows of `X` (already validated by `check_input`)."""

    @property
    def class_names(self) -> list[str] | None:
        """Names of the output columns when they are classes (bundle.yaml classNames)."""
        if self.descriptor is None or self.descriptor.class_names is None:
            return None
        return list(self.descriptor.class_names)

    # ---- optional hooks (Seldon's Python wrapper names); the server calls them if overridden --

    #: Whether rows of several requests may be stacked on axis 0 and predicted in one call.
    supports_batching: ClassVar[bool] = True

    def predict_raw(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """Answer a whole Seldon request document yourself; None means "use predict()"."""
        return None

    def send_feedback(
        self, request: dict[str, Any], response: dict[str, Any], reward: float, truth: Any
    ) -> dict[str, Any] | None:
        """Learn from feedback on an earlier prediction.

        Returns a whole Seldon response document (like `predict_raw`), or None for an empty
        answer.
        """
        return None

    def metrics(self) -> list[dict[str, Any]]:
        """Custom metrics after a prediction: [{"type": COUNTER|GAUGE|TIMER, "key", "value",
        "tags"?}], exported in Prometheus format beside the server's own."""
        return []

    def tags(self) -> dict[str, Any]:
        """Tags merged into the response's meta.tags."""
        return {}

    def health_status(self) -> Any:
        """Extra detail for /health/status; raise to report the model unhealthy."""
        return None

    def metadata(self) -> dict[str, Any] | None:
        """Model metadata the model itself declares (Seldon's `init_metadata()`), or None."""
        return None

    @property
    def input_dtype(self) -> np.dtype:
        """The dtype of the bundle's first input (FP64 when the signature does not say)."""
        inputs = (
            self.descriptor.signature.inputs
            if self.descriptor and self.descriptor.signature
            else []
        )
        return numpy_dtype(inputs[0].datatype if inputs else None)

    @property
    def parameters(self) -> dict[str, Any]:
        """The bundle's runtime-specific `parameters` (an empty dict when there are none)."""
        return dict(self.descriptor.parameters or {}) if self.descriptor else {}

    def configure(self, descriptor: BundleDescriptor) -> None:
        """Keep the descriptor and its input shape; `load_runtime()` calls this before `load`.

        The declared shape lets `check_input` answer malformed requests with a 400 before they
        reach the model.
        """
        self.descriptor = descriptor
        inputs = descriptor.signature.inputs if descriptor.signature else []
        self._input_shape = tuple(inputs[0].shape) if inputs else None

    def check_input(self, X: np.ndarray, names: list[str] | None = None) -> np.ndarray:
        """Validate `X` against the bundle signature; a single flat row is accepted as one row."""
        shape = self._input_shape
        if shape is None:
            return X
        if X.ndim and X.shape[0] == 0:
            raise PayloadError("the request holds no rows to predict")
        if X.ndim == len(shape) - 1:
            X = X.reshape((1, *X.shape))
        if X.ndim != len(shape):
            raise PayloadError(
                f"expected a {len(shape)}-D array shaped like {_shape_text(shape)}, "
                f"got shape {list(X.shape)}"
            )
        for axis, (want, got) in enumerate(zip(shape, X.shape, strict=True)):
            if axis and want >= 0 and want != got:
                if axis == 1 and len(shape) == 2:
                    raise PayloadError(f"expected {want} features per row, got {got}")
                raise PayloadError(
                    f"expected shape {_shape_text(shape)}, got {list(X.shape)} (axis {axis})"
                )
        if names is not None and X.ndim == 2 and len(names) != X.shape[1]:
            raise PayloadError(f"data.names lists {len(names)} names for {X.shape[1]} features")
        return X


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join("N" if n < 0 else str(n) for n in shape) + "]"


@dataclass
class PackageOptions:
    """What the caller of `package()` said about the model, beyond the model itself."""

    predict_method: str | None = None
    class_names: list[str] | None = None
    #: Custom Python: the class in `source`; PyTorch state dicts: the nn.Module class.
    model_class: str | None = None
    #: A .py file defining `model_class` (custom Python, PyTorch state dicts).
    source: Path | None = None
    #: Extra files or directories copied into the bundle (custom Python).
    files: list[Path] = field(default_factory=list)
    #: Keyword arguments for the class's constructor (custom Python, PyTorch state dicts).
    init_kwargs: dict[str, Any] | None = None
    #: Extra requirement lines, added to the pinned ones.
    requirements: list[str] = field(default_factory=list)
    #: The sample input as given (packagers that trace or inspect a model may use it).
    sample_input: Any = None


@dataclass
class ModelFacts:
    """What a packager learned about a model, turned into bundle.yaml fields by `package()`."""

    framework: str
    runtime: str
    framework_version: str
    predict_method: str | None = None
    class_names: list[str] | None = None
    n_features: int | None = None
    feature_names: list[str] | None = None
    requirements: list[str] = field(default_factory=list)
    #: The whole input shape with -1 for any size (e.g. [-1, 1, 28, 28]); None: from the sample.
    input_shape: list[int] | None = None
    #: Open Inference Protocol datatype of the input the model computes in.
    input_datatype: str = "FP64"
    #: Runtime-specific settings written to bundle.yaml `parameters`.
    parameters: dict[str, Any] = field(default_factory=dict)
    #: Bundle-relative name of the Python source defining `model_class`.
    source: str | None = None
    #: The text of that source, when the packager made it (custom classes from notebooks).
    source_text: str | None = None
    model_class: str | None = None
    #: A sample input the model carries itself (e.g. an MLflow input example).
    default_sample: Any = None
    #: Whether sample inputs may be non-numeric (strings, JSON, bytes).
    any_input: bool = False
    #: Column -> the categories the model's encoders know (models fitted on DataFrames).
    categories: dict[str, list[Any]] = field(default_factory=dict)
    #: Column -> the pandas dtype the model needs when no sample says (e.g. "category").
    column_dtypes: dict[str, str] = field(default_factory=dict)

    def sample_shape(self) -> list[int] | None:
        """The input shape, from `input_shape` or else from `n_features` (rows of features)."""
        if self.input_shape is not None:
            return list(self.input_shape)
        if self.n_features is not None:
            return [-1, self.n_features]
        return None


class ModelPath:
    """A model that is a file or directory in its framework's format, used as it is."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"ModelPath({str(self.path)!r})"


class Packager(ABC):
    """Recognises one kind of model object and writes its artifact into a bundle directory."""

    #: The framework name (bundle.yaml `framework`, `package(framework=...)`).
    framework: ClassVar[str]
    #: Shown to users in "supported are ..." messages.
    description: ClassVar[str]
    #: File suffixes (lower case, with dot) of saved models this packager can read.
    file_suffixes: ClassVar[tuple[str, ...]] = ()
    #: True when a file of this kind may hold another framework's object (pickles): the object
    #: read from it is detected again.
    container_format: ClassVar[bool] = False
    #: Detection tries packagers in increasing order: one whose objects are also another
    #: framework's (an XGBClassifier is a scikit-learn estimator, a Keras model on the torch
    #: backend a torch.nn.Module) needs a lower number than that framework's. The built-in
    #: ones use 10-30 and, for the catch-alls (custom classes, scikit-learn), 80-90.
    detect_order: ClassVar[int] = 50
    #: For saved models that are directories: what such a directory is and the file that marks
    #: it, e.g. ("an MLflow model", "MLmodel file"), for messages about unreadable paths.
    directory_kind: ClassVar[tuple[str, str] | None] = None

    @abstractmethod
    def accepts(self, model: Any) -> bool:
        """True when `model` is an object of this packager's framework (fitted or not).

        Must not import the framework: an object of a framework exists only once the
        framework is imported, so checking `sys.modules` or the class's module is enough.
        """

    def accepts_named(self, model: Any) -> bool:
        """True when `package(model, framework=<this framework>)` may package `model`.

        What `accepts` says unless overridden (the custom packager also takes instances).
        """
        return self.accepts(model)

    def accepts_path(self, path: Path) -> bool:
        """True when the saved model at `path` (a file or directory) is this framework's."""
        return path.is_file() and path.suffix.lower() in self.file_suffixes

    def resolve_uri(self, uri: str, scratch: Path) -> Path | None:
        """The local copy, downloaded into `scratch`, of a model named by a URI this packager
        owns (e.g. MLflow's runs:/ and models:/); None when `uri` is not one of its URIs."""
        return None

    def load_file(self, path: Path, options: PackageOptions) -> Any:
        """Read a saved model; path-native formats return `ModelPath(path)`."""
        return ModelPath(path)

    @abstractmethod
    def inspect(self, model: Any, options: PackageOptions) -> ModelFacts:
        """Check the model can be served (fitted, method exists) and describe it."""

    @abstractmethod
    def save(
        self,
        model: Any,
        bundle_dir: Path,
        source_file: Path | None,
        options: PackageOptions,
        facts: ModelFacts,
    ) -> str:
        """Write the artifact into `bundle_dir` and return its bundle-relative name.

        `source_file` is the file the model was read from, if any, so it can be copied as-is.
        """

    def describe_saved(self, bundle_dir: Path, artifact: str, facts: ModelFacts) -> None:
        """Complete `facts` from the saved artifact (e.g. a SavedModel's signature)."""
        return None
