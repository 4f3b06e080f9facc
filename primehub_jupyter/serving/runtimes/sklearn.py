"""scikit-learn runtime and packager: estimators and pipelines saved with joblib."""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelLoadError, PackagingError
from ..tables import encoder_categories
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

    @property
    def class_names(self) -> list[str] | None:
        """classNames from the bundle when the method outputs one column per class."""
        return self._class_names

    def predict(self, X: np.ndarray, names: list[str] | None, meta: dict[str, Any]) -> np.ndarray:
        """Call the bound method; models fitted on DataFrames get a DataFrame when possible
        (table requests arrive as one already, with the recorded column dtypes)."""
        if self._columns is not None and isinstance(X, np.ndarray):
            X = self._columns.frame(X, names)
        return np.asarray(self._call(X))


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
