"""Base classes for serving runtimes (load and predict) and packagers (write a bundle)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import PayloadError

if TYPE_CHECKING:
    from ..bundle import BundleDescriptor

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


def datatype_of(array: np.ndarray) -> str:
    """Name the Open Inference Protocol datatype of an array (BYTES for strings and objects)."""
    return _DATATYPES.get((array.dtype.kind, array.dtype.itemsize), "BYTES")


class Runtime(ABC):
    """Loads one bundle's artifact and answers predictions on numeric arrays.

    A runtime instance serves one model. `predict` is called on the event loop thread with a
    validated float64 array, so it must not keep per-request state outside its arguments.
    """

    #: The `runtime:` value in bundle.yaml that selects this class.
    name: ClassVar[str]
    #: Seldon payload kinds this runtime understands ("ndarray", "tensor"; later strData, ...).
    payload_kinds: ClassVar[frozenset[str]] = frozenset({"ndarray", "tensor"})

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
        """Names of the output columns when they are classes, else None."""
        return None

    # ---- optional hooks (Seldon's Python wrapper names); the server calls them if overridden --

    #: Whether rows of several requests may be stacked on axis 0 and predicted in one call.
    supports_batching: ClassVar[bool] = True

    def predict_raw(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """Answer a whole Seldon request document yourself; None means "use predict()"."""
        return None

    def send_feedback(
        self, request: dict[str, Any], response: dict[str, Any], reward: float, truth: Any
    ) -> dict[str, Any] | None:
        """Learn from feedback on an earlier prediction; the answer (or None) is returned."""
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


class Packager(ABC):
    """Recognises one kind of model object and writes its artifact into a bundle directory."""

    #: Shown to users in "supported are ..." messages.
    description: ClassVar[str]
    #: File suffixes (lower case, with dot) of saved models this packager can read.
    file_suffixes: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def accepts(self, model: Any) -> bool:
        """True when `model` is an object of this packager's framework (fitted or not)."""

    def load_file(self, path: Path) -> Any:
        """Read a saved model file with one of `file_suffixes`."""
        raise NotImplementedError

    @abstractmethod
    def inspect(
        self, model: Any, *, predict_method: str | None, class_names: list[str] | None
    ) -> ModelFacts:
        """Check the model can be served (fitted, method exists) and describe it."""

    @abstractmethod
    def save(self, model: Any, bundle_dir: Path, source_file: Path | None) -> str:
        """Write the artifact into `bundle_dir` and return its file name.

        `source_file` is the file the model was read from, if any, so it can be copied as-is.
        """
