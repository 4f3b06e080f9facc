"""LightGBM runtime and packager: Boosters and the scikit-learn wrappers, as LightGBM text."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelLoadError, PackagingError
from .base import PER_CLASS_METHODS, ModelFacts, ModelPath, PackageOptions, Packager, Runtime
from .common import check_classes, defined_in, labels, pin, reorder

if TYPE_CHECKING:
    from ..descriptor import BundleDescriptor

_CLASSIFIER = "LGBMClassifier"
_WRAPPERS = ("LGBMClassifier", "LGBMRegressor", "LGBMRanker")


class LightGBMRuntime(Runtime):
    """Serves a LightGBM text model with a Booster.

    The scikit-learn wrappers cannot be rebuilt from LightGBM's text format, so the runtime does
    what they do on top of the Booster: `parameters.estimator` says which wrapper it was and
    `parameters.classes` holds an LGBMClassifier's labels (for `predict`).
    """

    name = "lightgbm"

    def __init__(self) -> None:
        super().__init__()
        self.method = "predict"
        self.booster: Any = None
        self._classes: np.ndarray | None = None
        self._class_names: list[str] | None = None
        self._columns: list[str] | None = None

    def load(self, bundle_dir: Path, descriptor: BundleDescriptor) -> None:
        """Read the text model and check the predict method fits the wrapper it came from."""
        import lightgbm

        try:
            self.booster = lightgbm.Booster(model_file=str(bundle_dir / descriptor.artifact))
        except Exception as exc:
            raise ModelLoadError(
                f"lightgbm cannot read {descriptor.artifact} ({type(exc).__name__}: {exc}): "
                "package the model again with primehub_jupyter.package(model, path)"
            ) from exc
        estimator = self.parameters.get("estimator")
        methods = _methods(estimator)
        method = descriptor.predict_method or methods[0]
        if method not in methods:
            raise ModelLoadError(
                f"predictMethod {method!r} is not served for this LightGBM model; use one of "
                f"{', '.join(methods)}"
            )
        self.method = method
        if estimator == _CLASSIFIER:
            self._classes = np.asarray(self.parameters.get("classes") or [])
        if method in PER_CLASS_METHODS and descriptor.class_names:
            self._class_names = list(descriptor.class_names)
        names = self.booster.feature_name()
        # LightGBM invents Column_0.. for unnamed features; those are not names worth matching.
        self._columns = None if names and names[0] == "Column_0" else names

    @property
    def class_names(self) -> list[str] | None:
        """classNames from the bundle when the output has one column per class."""
        return self._class_names

    def predict(self, X: np.ndarray, names: list[str] | None, meta: dict[str, Any]) -> np.ndarray:
        """Predict with the Booster, shaped like the scikit-learn wrapper's answer."""
        if names and self._columns and names != self._columns:
            X = reorder(X, names, self._columns)
        if self.method == "predict_raw_score":
            return np.asarray(self.booster.predict(X, raw_score=True))
        output = np.asarray(self.booster.predict(X))
        if self._classes is None:
            return output
        if output.ndim == 1:  # binary: LightGBM gives P(class 1) only
            output = np.column_stack([1.0 - output, output])
        if self.method == "predict_proba":
            return output
        return self._classes[np.argmax(output, axis=1)]


def _pandas_categories(booster: Any, names: list[str]) -> dict[str, list[Any]]:
    """Column -> categories of a Booster trained on pandas categoricals (LightGBM keeps the
    categories in the model, in the order of the categorical columns)."""
    known = getattr(booster, "pandas_categorical", None)
    if not known or not names or names[0] == "Column_0":
        return {}
    infos = booster.dump_model(num_iteration=0).get("feature_infos", {})
    # A numeric feature's info is its range; a categorical one also lists its codes.
    categorical = [n for n in names if infos.get(n, {}).get("values")]
    if len(categorical) != len(known):
        return {}
    return {
        name: [c.item() if isinstance(c, np.generic) else c for c in cats]
        for name, cats in zip(categorical, known, strict=True)
    }


def _methods(estimator: str | None) -> tuple[str, ...]:
    if estimator == _CLASSIFIER:
        return ("predict_proba", "predict", "predict_raw_score")
    return ("predict", "predict_raw_score")


class LightGBMPackager(Packager):
    """Packages LightGBM Boosters and the LGBMClassifier/LGBMRegressor/LGBMRanker wrappers."""

    framework = "lightgbm"
    description = "a LightGBM Booster or LGBMClassifier/LGBMRegressor/LGBMRanker"
    file_suffixes = (".txt", ".lgbm")
    detect_order = 10  # its wrappers are scikit-learn estimators too

    def accepts(self, model: Any) -> bool:
        """True for lightgbm.Booster and lightgbm.LGBMModel instances."""
        if not defined_in(model, "lightgbm") or isinstance(model, type):
            return False
        import lightgbm

        return isinstance(model, (lightgbm.Booster, lightgbm.LGBMModel))

    def accepts_path(self, path: Path) -> bool:
        """Text files that start like a LightGBM model ("tree" then "version=")."""
        if not super().accepts_path(path):
            return False
        with path.open("rb") as handle:
            return handle.read(64).startswith(b"tree\nversion=")

    def load_file(self, path: Path, options: PackageOptions) -> Any:
        """Read a LightGBM text model into a Booster."""
        import lightgbm

        return lightgbm.Booster(model_file=str(path))

    def inspect(self, model: Any, options: PackageOptions) -> ModelFacts:
        """Refuse unfitted wrappers; record the wrapper, its classes and the feature names."""
        import lightgbm

        if isinstance(model, ModelPath):
            model = self.load_file(model.path, options)
        estimator: str | None = None
        parameters: dict[str, Any] = {}
        class_names = options.class_names
        if isinstance(model, lightgbm.LGBMModel):
            kind = type(model).__name__
            estimator = next(
                (name for name in _WRAPPERS if isinstance(model, getattr(lightgbm, name))), None
            )
            try:
                booster = model.booster_
            except Exception as exc:
                raise PackagingError(
                    f"the {kind} is not fitted: call .fit(X, y) before packaging it"
                ) from exc
            if estimator:
                parameters["estimator"] = estimator
            if estimator == _CLASSIFIER:
                classes = model.classes_
                check_classes(class_names, len(classes), kind)
                parameters["classes"] = [
                    c.item() if isinstance(c, np.generic) else c for c in classes
                ]
                class_names = class_names or labels(classes)
        else:
            booster = model
        methods = _methods(estimator)
        method = options.predict_method or methods[0]
        if method not in methods:
            raise PackagingError(
                f"predict_method={method!r} is not supported for this LightGBM model; use one "
                f"of {', '.join(methods)}"
            )
        names = booster.feature_name()
        categories = _pandas_categories(booster, names)
        return ModelFacts(
            framework=self.framework,
            runtime=LightGBMRuntime.name,
            framework_version=lightgbm.__version__,
            predict_method=method,
            class_names=[str(n) for n in class_names] if class_names else None,
            n_features=booster.num_feature(),
            feature_names=None if not names or names[0] == "Column_0" else list(names),
            requirements=pin("lightgbm", "numpy", "scipy"),
            parameters=parameters,
            categories=categories,
            column_dtypes={name: "category" for name in categories},
        )

    def save(
        self,
        model: Any,
        bundle_dir: Path,
        source_file: Path | None,
        options: PackageOptions,
        facts: ModelFacts,
    ) -> str:
        """Copy a saved text model as it is, or save the Booster as text."""
        if source_file is not None and source_file.suffix.lower() in self.file_suffixes:
            shutil.copyfile(source_file, bundle_dir / "model.txt")
            return "model.txt"
        if isinstance(model, ModelPath):
            model = self.load_file(model.path, options)
        booster = getattr(model, "booster_", model)
        booster.save_model(str(bundle_dir / "model.txt"))
        return "model.txt"
