"""MLflow runtime and packager: an MLflow model directory, served with `mlflow.pyfunc`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelLoadError, PackagingError
from .base import ModelFacts, PackageOptions, Packager, Runtime
from .common import Columns, copy_into, merge_requirements, pin, requirement_name, shape_of

if TYPE_CHECKING:
    from ..descriptor import BundleDescriptor

_ARTIFACT = "model"
#: MLflow model URIs (runs:/, models:/, ...) that `package()` downloads first.
URI = re.compile(r"^(runs|models|mlflow-artifacts|dbfs|s3|gs|wasbs|hdfs):/", re.IGNORECASE)


class MlflowRuntime(Runtime):
    """Serves an MLflow model directory with `mlflow.pyfunc.load_model`.

    Requests become what the model's signature asks for: a DataFrame with the signature's
    column names and types for a column-based signature, an array of its dtype for a tensor
    signature, the array as it is without a signature.
    """

    name = "mlflow"

    def __init__(self) -> None:
        super().__init__()
        self.model: Any = None
        self._columns: Columns | None = None
        self._column_types: list[Any] = []
        self._tensor_dtype: np.dtype | None = None

    def load(self, bundle_dir: Path, descriptor: BundleDescriptor) -> None:
        """Load the pyfunc model and read its input schema."""
        import mlflow.pyfunc

        try:
            self.model = mlflow.pyfunc.load_model(str(bundle_dir / descriptor.artifact))
        except Exception as exc:
            raise ModelLoadError(
                f"mlflow.pyfunc cannot load {descriptor.artifact} ({type(exc).__name__}: {exc}); "
                f"install {bundle_dir / 'requirements.txt'} where the model server runs"
            ) from exc
        schema = self.model.metadata.get_input_schema()
        if schema is None:
            return
        if schema.is_tensor_spec():
            self._tensor_dtype = schema.numpy_types()[0]
        elif schema.has_input_names():
            self._columns = Columns([str(n) for n in schema.input_names()])
            self._column_types = list(schema.numpy_types())

    def predict(self, X: np.ndarray, names: list[str] | None, meta: dict[str, Any]) -> np.ndarray:
        """Call pyfunc predict on the input the signature wants; return an array."""
        data: Any = X
        if not isinstance(X, np.ndarray):  # a table request: a DataFrame with the schema's types
            pass
        elif self._tensor_dtype is not None:
            data = np.ascontiguousarray(X, dtype=self._tensor_dtype)
        elif self._columns is not None:
            data = self._columns.frame(X, names)
            if hasattr(data, "astype"):
                data = data.astype(
                    dict(zip(self._columns.columns, self._column_types, strict=False))
                )
        output = self.model.predict(data)
        if hasattr(output, "to_numpy"):
            output = output.to_numpy()
        return np.asarray(output)


#: MLflow column types -> pandas dtypes (a signature with text, booleans or datetimes is a table).
_COLUMN_DTYPES = {
    "long": "int64",
    "integer": "int32",
    "double": "float64",
    "float": "float32",
    "boolean": "bool",
    "string": "object",
    "datetime": "datetime64[ns]",
}


def _column_dtypes(schema: Any) -> dict[str, str]:
    """Column -> pandas dtype from a column-based MLflow signature."""
    found = {}
    for spec in schema.inputs:
        kind = getattr(getattr(spec, "type", None), "name", None)
        if spec.name is not None and kind in _COLUMN_DTYPES:
            found[str(spec.name)] = _COLUMN_DTYPES[kind]
    return found


class MlflowPackager(Packager):
    """Packages MLflow model directories (with an MLmodel file) as they are."""

    framework = "mlflow"
    description = "an MLflow model directory (with an MLmodel file) or a runs:/ or models:/ URI"
    detect_order = 30
    directory_kind = ("an MLflow model", "MLmodel file")

    def accepts(self, model: Any) -> bool:
        """MLflow models are packaged from their directory, never from objects."""
        return False

    def accepts_path(self, path: Path) -> bool:
        """A directory with an MLmodel file."""
        return path.is_dir() and (path / "MLmodel").is_file()

    def resolve_uri(self, uri: str, scratch: Path) -> Path | None:
        """Download an MLflow model URI (runs:/, models:/, ...); None for anything else."""
        return self.download(uri, scratch) if URI.match(uri) else None

    def download(self, uri: str, into: Path) -> Path:
        """Fetch a model URI (runs:/, models:/, ...) with MLflow's own client."""
        try:
            import mlflow.artifacts
        except ImportError:
            raise PackagingError(f"{uri} is an MLflow model URI: install mlflow") from None
        try:
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(into)))
        except Exception as exc:
            raise PackagingError(
                f"cannot download {uri} ({type(exc).__name__}: {exc}); check MLFLOW_TRACKING_URI"
            ) from None

    def inspect(self, model: Any, options: PackageOptions) -> ModelFacts:
        """Read MLmodel: flavors, input schema, input example and the model's requirements."""
        import mlflow
        from mlflow.models import Model

        path = model.path
        try:
            meta = Model.load(str(path))
        except Exception as exc:
            raise PackagingError(f"{path}/MLmodel cannot be read: {exc}") from None
        if "python_function" not in meta.flavors:
            raise PackagingError(
                f"the MLflow model in {path} has no python_function flavor "
                f"(flavors: {', '.join(meta.flavors)}), so mlflow.pyfunc cannot serve it"
            )
        schema = meta.get_input_schema()
        n_features = feature_names = shape = None
        column_dtypes: dict[str, str] = {}
        dtype = "FP64"
        if schema is not None and schema.is_tensor_spec():
            spec = schema.inputs[0]
            shape = shape_of(spec.shape)
            from .base import datatype_of

            dtype = datatype_of(np.empty(0, dtype=spec.type))
        elif schema is not None and schema.has_input_names():
            feature_names = [str(n) for n in schema.input_names()]
            n_features = len(feature_names)
            column_dtypes = _column_dtypes(schema)
        try:
            example = meta.load_input_example(str(path))
        except Exception:  # an example is a convenience, never a reason to refuse the model
            example = None
        own = path / "requirements.txt"
        model_requirements = own.read_text(encoding="utf-8").splitlines() if own.is_file() else []
        ours = [
            line
            for line in pin("mlflow", "numpy", "pandas")
            if not any(requirement_name(r) == "mlflow" for r in model_requirements)
            or not (requirement_name(line) or "").startswith("mlflow")
        ]
        return ModelFacts(
            framework=self.framework,
            runtime=MlflowRuntime.name,
            framework_version=mlflow.__version__,
            class_names=options.class_names,
            n_features=n_features,
            feature_names=feature_names,
            requirements=merge_requirements(model_requirements, ours),
            input_shape=shape,
            input_datatype=dtype,
            parameters={"flavors": sorted(meta.flavors)},
            default_sample=example,
            column_dtypes=column_dtypes,
        )

    def save(
        self,
        model: Any,
        bundle_dir: Path,
        source_file: Path | None,
        options: PackageOptions,
        facts: ModelFacts,
    ) -> str:
        """Copy the model directory as it is."""
        copy_into(model.path, bundle_dir, _ARTIFACT)
        return _ARTIFACT
