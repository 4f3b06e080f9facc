"""scikit-learn runtime and packager: estimators and pipelines saved with joblib."""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelLoadError, PackagingError
from ..tables import Table, encoder_categories
from .base import PER_CLASS_METHODS, ModelFacts, PackageOptions, Packager, Runtime
from .common import Columns, defined_in, labels, pin

if TYPE_CHECKING:
    from ..descriptor import BundleDescriptor

#: Methods a bundle may name in predictMethod, in the order tried when none is given.
PREDICT_METHODS = (
    "predict_proba",
    "predict",
    "predict_log_proba",
    "decision_function",
    "transform",
)

_PINNED_MODULES = ("sklearn", "numpy", "scipy", "joblib")


def _sklearn_version() -> str:
    import sklearn

    return str(sklearn.__version__)


class SklearnRuntime(Runtime):
    """Serves a fitted scikit-learn estimator or pipeline with its `predictMethod`."""

    name = "sklearn"

    def __init__(self) -> None:
        super().__init__()
        self.model: Any = None
        self.method = "predict"
        self._call: Any = None
        self._class_names: list[str] | None = None
        self._columns: Columns | None = None
        self._plan: _ColumnPlan | None = None

    def load(self, bundle_dir: Path, descriptor: BundleDescriptor) -> None:
        """Unpickle the artifact with joblib and bind the configured predict method."""
        import joblib

        artifact = bundle_dir / descriptor.artifact
        try:
            model = joblib.load(artifact)
        except ModuleNotFoundError as exc:
            raise ModelLoadError(
                f"{descriptor.artifact} needs the Python module {exc.name!r}, which is not "
                f"installed where the model server runs: install {bundle_dir / 'requirements.txt'}"
                " (or the module that defines the model's classes) into this environment"
            ) from exc
        except Exception as exc:
            raise ModelLoadError(
                f"cannot read {artifact} with joblib ({type(exc).__name__}: {exc}): the file is "
                "corrupt, truncated or not a joblib/pickle file; package the model again with "
                "primehub_jupyter.package(model, path)"
            ) from exc

        method = descriptor.predict_method or (
            "predict_proba" if hasattr(model, "predict_proba") else "predict"
        )
        if method not in PREDICT_METHODS:
            raise ModelLoadError(
                f"predictMethod {method!r} in bundle.yaml is not one the sklearn runtime serves; "
                f"use one of {', '.join(PREDICT_METHODS)}"
            )
        if not hasattr(model, method):
            raise ModelLoadError(
                f"{descriptor.artifact} holds a {type(model).__name__}, which has no {method}() "
                "(bundle.yaml predictMethod); set predictMethod to a method the model has"
            )
        running = _sklearn_version()
        if descriptor.framework_version and descriptor.framework_version != running:
            print(
                f"warning: {descriptor.artifact} was packaged with scikit-learn "
                f"{descriptor.framework_version} but this server runs {running}; "
                "predictions may differ",
                file=sys.stderr,
            )
        self.model = model
        self.method = method
        self._call = getattr(model, method)
        if method in PER_CLASS_METHODS and descriptor.class_names:
            self._class_names = list(descriptor.class_names)
        feature_names = getattr(model, "feature_names_in_", None)
        if feature_names is not None:
            self._columns = Columns([str(n) for n in feature_names])
            # Models fitted on a DataFrame warn on every ndarray call; that would flood the log.
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
        self._plan = _ColumnPlan.of(model, method, descriptor)

    @property
    def class_names(self) -> list[str] | None:
        """classNames from the bundle when the method outputs one column per class."""
        return self._class_names

    def predict(self, X: np.ndarray, names: list[str] | None, meta: dict[str, Any]) -> np.ndarray:
        """Call the bound method; models fitted on DataFrames get a DataFrame when possible
        (table requests arrive as one already, with the recorded column dtypes)."""
        if self._columns is not None and isinstance(X, np.ndarray):
            X = self._columns.frame(X, names)
        plan = self._plan
        if plan is not None and plan.takes(X):
            output = plan(X)
            if output is not None:
                return np.asarray(output)
        return np.asarray(self._call(X))


class _ColumnPlan:
    """A Pipeline whose first step is a ColumnTransformer, called step by step.

    For one row, ColumnTransformer.transform spent over half of predict_proba in its own
    orchestration (joblib's sequential dispatch with per-transformer config and warning-filter
    replay, pandas column selection through `_safe_indexing`, narwhals checks, output checks),
    not in the transformers. This does what it does for a fitted, dense, unweighted one: each
    fitted transformer's own `transform` on a DataFrame of its columns (so their checks and
    errors are unchanged), `np.hstack` of the outputs (sparse ones made dense first, as
    ColumnTransformer does when `sparse_output_` is False), then the later steps and the
    final estimator's method, as Pipeline does. Built only from public fitted attributes, and
    used only when it answers the bundle's sample exactly as the model's own method does.
    """

    def __init__(
        self,
        columns: list[str],
        parts: list[tuple[Any, Any]],
        steps: list[Any],
        final: Any,
    ) -> None:
        self.columns = columns
        self.parts = parts
        self.steps = steps
        self.final = final

    @classmethod
    def of(cls, model: Any, method: str, descriptor: BundleDescriptor) -> _ColumnPlan | None:
        """The plan for `model`, or None when it is not such a pipeline or answers otherwise."""
        signature = descriptor.signature
        if signature is None or not signature.is_table or descriptor.sample is None:
            return None
        try:
            import sklearn
            from sklearn.compose import ColumnTransformer
            from sklearn.pipeline import Pipeline
        except ImportError:
            return None
        if not isinstance(model, Pipeline) or len(model.steps) < 2:
            return None
        first, final = model.steps[0][1], model.steps[-1][1]
        if not isinstance(first, ColumnTransformer) or not hasattr(final, method):
            return None
        if sklearn.get_config().get("enable_metadata_routing"):
            return None  # Pipeline then routes parameters to each step
        names = getattr(first, "feature_names_in_", None)
        if names is None or first.sparse_output_ or first.transformer_weights:
            return None
        names = [str(n) for n in names]
        parts: list[tuple[Any, Any]] = []
        for _, transformer, selection in first.transformers_:
            if isinstance(transformer, str):
                if transformer == "drop":
                    continue
                return None  # fitted "passthrough" is a FunctionTransformer; anything else: no
            if isinstance(selection, str):
                parts.append((transformer, selection))  # one column: a Series, as sklearn does
                continue
            chosen = list(selection)
            if not chosen:
                continue  # ColumnTransformer skips empty selections
            if all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in chosen):
                chosen = [names[int(c)] for c in chosen]  # the remainder's column indices
            if not all(isinstance(c, str) and c in names for c in chosen):
                return None
            # Positions in the fitted order (`takes` checks X has exactly that order): take()
            # copies the same columns as sklearn's own `X.loc[:, names]`, at a third of its cost.
            parts.append((transformer, [names.index(c) for c in chosen]))
        if not parts:
            return None
        steps = [s for _, s in model.steps[1:-1] if s is not None and s != "passthrough"]
        plan = cls(names, parts, steps, getattr(final, method))
        return plan if plan._agrees(model, method, descriptor) else None

    def _agrees(self, model: Any, method: str, descriptor: BundleDescriptor) -> bool:
        """Whether the plan answers the bundle's sample rows exactly as the model does."""
        assert descriptor.signature is not None and descriptor.sample is not None
        data = descriptor.sample.request.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("ndarray"), list):
            return False
        try:
            frame = Table(descriptor.signature.inputs).from_rows(
                data.get("names") or None, data["ndarray"], "sample"
            )
            if not self.takes(frame):
                return False
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if not isinstance(model.steps[0][1].transform(frame), np.ndarray):
                    return False  # set_output(transform="pandas"): not handled here
                own = np.asarray(getattr(model, method)(frame))
                mine = np.asarray(self(frame))
        except Exception:
            return False
        return (
            own.dtype == mine.dtype
            and own.shape == mine.shape
            and bool(np.array_equal(own, mine, equal_nan=own.dtype.kind in "fc"))
        )

    def takes(self, X: Any) -> bool:
        """Whether X is a DataFrame with the fitted columns in fitted order."""
        columns = getattr(X, "columns", None)
        return columns is not None and columns.tolist() == self.columns

    def __call__(self, X: Any) -> Any:
        """The model's output for X, or None where ColumnTransformer would refuse a
        transformer's output (not 2-D, or a DataFrame column holding pandas.NA): the model's
        own call then answers, with its own error."""
        import pandas as pd
        import scipy.sparse

        outputs = []
        for transformer, selection in self.parts:
            columns = X[selection] if isinstance(selection, str) else X.take(selection, axis=1)
            output = transformer.transform(columns)
            if scipy.sparse.issparse(output):
                output = output.toarray()
            elif getattr(output, "ndim", 0) != 2 or (
                isinstance(output, pd.DataFrame)
                and any(
                    getattr(dtype, "na_value", None) is pd.NA and pd.NA in output[name].values
                    for name, dtype in output.dtypes.items()
                )
            ):
                return None
            outputs.append(output)
        Xt = np.hstack(outputs)
        for step in self.steps:
            Xt = step.transform(Xt)
        return self.final(Xt)


class SklearnPackager(Packager):
    """Packages fitted scikit-learn estimators and pipelines (joblib artifact)."""

    framework = "sklearn"
    description = "a fitted scikit-learn estimator or Pipeline"
    file_suffixes = (".joblib", ".pkl", ".pickle")
    detect_order = 90  # last: other frameworks' wrappers are scikit-learn estimators too
    container_format = True

    def accepts(self, model: Any) -> bool:
        """True for any scikit-learn estimator instance (fitted or not)."""
        if isinstance(model, type) or not defined_in(model, "sklearn"):
            return False
        try:
            from sklearn.base import BaseEstimator
        except ImportError:
            return False
        return isinstance(model, BaseEstimator)

    def load_file(self, path: Path, options: PackageOptions) -> Any:
        """Read a joblib or pickle file (joblib reads plain pickles too)."""
        import joblib

        return joblib.load(path)

    def inspect(self, model: Any, options: PackageOptions) -> ModelFacts:
        """Refuse unfitted models and unknown methods; collect classes and feature counts."""
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        kind = type(model).__name__
        predict_method, class_names = options.predict_method, options.class_names
        try:
            check_is_fitted(model)
        except NotFittedError as exc:
            raise PackagingError(
                f"the {kind} is not fitted: call .fit(X, y) before packaging it"
            ) from exc
        except TypeError as exc:  # check_is_fitted raises TypeError for non-estimators
            raise PackagingError(f"cannot package the {kind}: {exc}") from exc

        if predict_method is None:
            predict_method = "predict_proba" if hasattr(model, "predict_proba") else "predict"
        elif predict_method not in PREDICT_METHODS:
            raise PackagingError(
                f"predict_method={predict_method!r} is not supported; use one of "
                f"{', '.join(PREDICT_METHODS)}"
            )
        if not hasattr(model, predict_method):
            raise PackagingError(f"the {kind} has no {predict_method}() method")

        classes = getattr(model, "classes_", None)
        if class_names is not None:
            class_names = [str(name) for name in class_names]
            if classes is not None and len(class_names) != len(classes):
                raise PackagingError(
                    f"class_names has {len(class_names)} names but the {kind} has "
                    f"{len(classes)} classes ({', '.join(map(str, classes))})"
                )
        elif classes is not None and np.ndim(classes) == 1:
            class_names = labels(classes)

        feature_names = getattr(model, "feature_names_in_", None)
        n_features = getattr(model, "n_features_in_", None)
        return ModelFacts(
            framework="sklearn",
            runtime=SklearnRuntime.name,
            framework_version=_sklearn_version(),
            predict_method=predict_method,
            class_names=class_names,
            n_features=int(n_features) if n_features is not None else None,
            feature_names=[str(n) for n in feature_names] if feature_names is not None else None,
            requirements=pin(*_PINNED_MODULES),
            categories=encoder_categories(model) if feature_names is not None else {},
        )

    def save(
        self,
        model: Any,
        bundle_dir: Path,
        source_file: Path | None,
        options: PackageOptions,
        facts: ModelFacts,
    ) -> str:
        """Copy the user's joblib/pickle file unchanged, or dump the object with joblib."""
        if source_file is not None and source_file.suffix.lower() in self.file_suffixes:
            artifact = "model" + source_file.suffix.lower()
            shutil.copyfile(source_file, bundle_dir / artifact)
            return artifact
        import joblib

        joblib.dump(model, bundle_dir / "model.joblib")
        return "model.joblib"
