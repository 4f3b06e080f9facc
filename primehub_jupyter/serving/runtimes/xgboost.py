"""XGBoost runtime and packager: Boosters and the scikit-learn wrappers, as JSON or UBJ."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelLoadError, PackagingError
from .base import PER_CLASS_METHODS, ModelFacts, ModelPath, PackageOptions, Packager, Runtime
from .common import check_classes, defined_in, labels, pin, reorder

if TYPE_CHECKING:
    from ..descriptor import BundleDescriptor

#: Methods of the scikit-learn wrappers the runtime serves, in the order tried by default.
WRAPPER_METHODS = ("predict_proba", "predict", "apply")
#: What a bare Booster serves: its objective's output, or the untransformed margin.
BOOSTER_METHODS = ("predict", "predict_margin")
_ESTIMATORS = {
    "classifier": "XGBClassifier",
    "regressor": "XGBRegressor",
    "ranker": "XGBRanker",
}


class XGBoostRuntime(Runtime):
    """Serves an XGBoost model saved in XGBoost's JSON or UBJ format.

    `parameters.estimator` names the scikit-learn wrapper class (XGBClassifier, ...) the model
    was fitted with; without it the model is served as a bare Booster.
    """

    name = "xgboost"

    def __init__(self) -> None:
        super().__init__()
        self.method = "predict"
        self._call: Any = None
        self._class_names: list[str] | None = None
        self._columns: list[str] | None = None

    def load(self, bundle_dir: Path, descriptor: BundleDescriptor) -> None:
        """Load the model file into the wrapper class (or a Booster) and bind the method."""
        import xgboost

        path = bundle_dir / descriptor.artifact
        estimator = self.parameters.get("estimator")
        try:
            if estimator:
                cls = getattr(xgboost, str(estimator), None)
                if cls is None:
                    raise ModelLoadError(
                        f"bundle.yaml names estimator {estimator!r}, which this xgboost "
                        f"{xgboost.__version__} does not have"
                    )
                model = cls()
                model.load_model(path)
                booster = model.get_booster()
            else:
                booster = model = xgboost.Booster(model_file=str(path))
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"xgboost cannot read {descriptor.artifact} ({type(exc).__name__}: {exc}): "
                "package the model again with primehub_jupyter.package(model, path)"
            ) from exc

        allowed = WRAPPER_METHODS if estimator else BOOSTER_METHODS
        method = descriptor.predict_method or (
            "predict_proba" if estimator and hasattr(model, "predict_proba") else "predict"
        )
        if method not in allowed or (estimator and not hasattr(model, method)):
            raise ModelLoadError(
                f"predictMethod {method!r} is not served for this XGBoost model; use one of "
                f"{', '.join(m for m in allowed if not estimator or hasattr(model, m))}"
            )
        self.method = method
        if not estimator:
            margin = method == "predict_margin"
            self._call = lambda X: booster.inplace_predict(
                X, predict_type="margin" if margin else "value"
            )
        else:
            self._call = getattr(model, method)
        if method in PER_CLASS_METHODS and descriptor.class_names:
            self._class_names = list(descriptor.class_names)
        self._columns = booster.feature_names

    @property
    def class_names(self) -> list[str] | None:
        """classNames from the bundle when the output has one column per class."""
        return self._class_names

    def predict(self, X: np.ndarray, names: list[str] | None, meta: dict[str, Any]) -> np.ndarray:
        """Predict; request columns named in another order are put in the fitted order."""
        if names and self._columns and names != self._columns:
            X = reorder(X, names, self._columns)
        return np.asarray(self._call(X))


class XGBoostPackager(Packager):
    """Packages XGBoost Boosters and scikit-learn wrappers (XGBClassifier, XGBRegressor, ...)."""

    framework = "xgboost"
    description = "an XGBoost Booster or XGBClassifier/XGBRegressor/XGBRanker"
    file_suffixes = (".json", ".ubj")
    detect_order = 10  # its wrappers are scikit-learn estimators too

    def accepts(self, model: Any) -> bool:
        """True for xgboost.Booster and xgboost.XGBModel instances."""
        if not defined_in(model, "xgboost") or isinstance(model, type):
            return False
        import xgboost

        return isinstance(model, (xgboost.Booster, xgboost.XGBModel))

    def accepts_path(self, path: Path) -> bool:
        """UBJ files, and JSON files that hold an XGBoost learner."""
        if not super().accepts_path(path):
            return False
        if path.suffix.lower() == ".ubj":
            return True
        with path.open("rb") as handle:
            return b'"learner"' in handle.read(4096)

    def load_file(self, path: Path, options: PackageOptions) -> Any:
        """Read the model into the wrapper class it was saved from, or a Booster."""
        import xgboost

        booster = xgboost.Booster(model_file=str(path))
        estimator = _estimator_of(booster)
        if estimator is None:
            return booster
        model = getattr(xgboost, estimator)()
        model.load_model(path)
        return model

    def inspect(self, model: Any, options: PackageOptions) -> ModelFacts:
        """Refuse unfitted wrappers; record the wrapper class, classes and feature names."""
        import xgboost

        if isinstance(model, ModelPath):
            model = self.load_file(model.path, options)
        estimator: str | None = None
        if isinstance(model, xgboost.XGBModel):
            estimator = type(model).__name__
            if not hasattr(xgboost, estimator):
                raise PackagingError(
                    f"{estimator} is not an xgboost class; subclasses of the XGBoost wrappers "
                    "cannot be restored from XGBoost's format (package them with joblib as a "
                    "custom model instead)"
                )
            try:
                booster = model.get_booster()
            except Exception as exc:
                raise PackagingError(
                    f"the {estimator} is not fitted: call .fit(X, y) before packaging it"
                ) from exc
            methods = [m for m in WRAPPER_METHODS if hasattr(model, m)]
        else:
            booster = model
            methods = list(BOOSTER_METHODS)
        method = options.predict_method or methods[0]
        if method not in methods:
            raise PackagingError(
                f"predict_method={method!r} is not supported for this XGBoost model; use one of "
                f"{', '.join(methods)}"
            )

        class_names = options.class_names
        classes = getattr(model, "classes_", None) if estimator else None
        if classes is not None:
            check_classes(class_names, len(classes), estimator or "model")
            class_names = class_names or labels(classes)
        feature_names = booster.feature_names
        categories, column_dtypes = _columns(booster, options.sample_input is not None)
        modules = ["xgboost", "numpy", "scipy"] + (["sklearn"] if estimator else [])
        return ModelFacts(
            framework=self.framework,
            runtime=XGBoostRuntime.name,
            framework_version=xgboost.__version__,
            predict_method=method,
            class_names=[str(n) for n in class_names] if class_names else None,
            n_features=booster.num_features() or None,
            feature_names=list(feature_names) if feature_names else None,
            requirements=pin(*modules),
            parameters={"estimator": estimator} if estimator else {},
            categories=categories,
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
        """Copy a saved JSON/UBJ file as it is, or save the model as JSON."""
        if source_file is not None and source_file.suffix.lower() in self.file_suffixes:
            artifact = "model" + source_file.suffix.lower()
            shutil.copyfile(source_file, bundle_dir / artifact)
            return artifact
        if isinstance(model, ModelPath):
            model = self.load_file(model.path, options)
        model.save_model(bundle_dir / "model.json")
        return "model.json"


#: Column dtype per XGBoost feature type, for a sample synthesized from the model alone.
_DTYPES = {"int": "int64", "float": "float64", "q": "float64", "i": "bool", "c": "category"}


def _columns(booster: Any, has_sample: bool) -> tuple[dict[str, list[Any]], dict[str, str]]:
    """(column -> categories, column -> pandas dtype) of a Booster fitted on a DataFrame.

    XGBoost >= 3.1 saves the categories of pandas `category` columns in the model; before
    that they are nowhere but in the user's DataFrame, so a sample must carry them.
    """
    names = booster.feature_names or []
    types = booster.feature_types or []
    categorical = [n for n, t in zip(names, types, strict=False) if t == "c"]
    if not categorical:
        return {}, {}
    categories = _saved_categories(booster, names, categorical)
    if categories is None:
        if has_sample:
            return {}, {}
        import xgboost

        raise PackagingError(
            "the model has categorical columns (" + ", ".join(categorical) + ") whose "
            f"categories cannot be read back from this xgboost {xgboost.__version__} model "
            "(XGBoost keeps them in the model from 3.1 on, text in ASCII only): pass "
            "sample_input= with a few rows of the DataFrame it was fitted on (e.g. "
            "sample_input=df.head(2))"
        )
    dtypes = {n: _DTYPES[t] for n, t in zip(names, types, strict=False) if t in _DTYPES}
    return categories, dtypes


def _saved_categories(
    booster: Any, names: list[str], categorical: list[str]
) -> dict[str, list[Any]] | None:
    """Column -> categories from the model's JSON (`cats`: one encoding per feature, text as
    bytes cut at `offsets`, numbers as `values`); None when the model has none or they are
    not ASCII text or numbers."""
    try:
        learner = json.loads(bytes(booster.save_raw("json")))["learner"]
        cats = _find_cats(learner.get("gradient_booster"))
        encodings = cats["enc"] if cats else None
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(encodings, list) or len(encodings) != len(names):
        return None
    found: dict[str, list[Any]] = {}
    for name, encoding in zip(names, encodings, strict=True):
        if name not in categorical:
            continue
        values = _decoded(encoding)
        if not values:
            return None
        found[name] = values
    return found


def _find_cats(node: Any) -> Any:
    # gbtree keeps them in its model; dart nests a gbtree.
    if not isinstance(node, dict):
        return None
    if "cats" in node:
        return node["cats"]
    return next((c for c in map(_find_cats, node.values()) if c is not None), None)


def _decoded(encoding: Any) -> list[Any] | None:
    if not isinstance(encoding, dict) or not isinstance(encoding.get("values"), list):
        return None
    values = encoding["values"]
    offsets = encoding.get("offsets")
    if offsets:
        # ASCII only: xgboost 3.1/3.2 cuts non-ASCII text at character, not byte, offsets,
        # so what it writes there is not the category the user knows.
        if not all(isinstance(v, int) and 0 <= v < 128 for v in values):
            return None
        raw = bytes(values)
        return [raw[a:b].decode("ascii") for a, b in itertools.pairwise(offsets)]
    if "type" in encoding and all(isinstance(v, (int, float)) for v in values):
        return list(values)
    return None


def _estimator_of(booster: Any) -> str | None:
    """The wrapper class a Booster was saved from (XGBoost records its estimator type)."""
    raw = booster.attr("scikit_learn")
    if not raw:
        return None
    try:
        kind = json.loads(raw).get("_estimator_type")
    except (ValueError, AttributeError):
        return None
    return _ESTIMATORS.get(str(kind))
