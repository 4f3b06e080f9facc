"""XGBoost: scikit-learn wrappers and Boosters, packaged, served and compared with XGBoost."""

from __future__ import annotations

import numpy as np
import pytest

from primehub_jupyter.serving.bundle import load_bundle
from primehub_jupyter.serving.bundle_check import compare_responses
from primehub_jupyter.serving.packaging import package
from primehub_jupyter.serving.registry import load_runtime

from .helpers import descriptor, iris, serve

xgboost = pytest.importorskip(
    "xgboost", reason="XGBoost is not installed (pip install 'primehub-jupyter[xgboost]')"
)

CLASSES = ["setosa", "versicolor", "virginica"]


@pytest.fixture(scope="module")
def models():
    X, y = iris()
    classifier = xgboost.XGBClassifier(n_estimators=8, max_depth=2).fit(X, y)
    booster = xgboost.train(
        {"objective": "reg:squarederror", "max_depth": 2}, xgboost.DMatrix(X, label=X[:, 0]), 6
    )
    return X, y, classifier, booster


@pytest.fixture(scope="module")
def classifier_bundle(models, tmp_path_factory):
    X, _, classifier, _ = models
    root = tmp_path_factory.mktemp("xgboost")
    return package(classifier, root / "iris-xgb", class_names=CLASSES, sample_input=X[:2])


@pytest.fixture(scope="module")
def classifier_server(classifier_bundle, tmp_path_factory):
    yield from serve(classifier_bundle, tmp_path_factory.mktemp("xgboost-server"))


def test_classifier_over_http_equals_xgboost(models, classifier_server):
    X, _, classifier, _ = models
    rows = X[::7]
    answer = classifier_server.post({"data": {"ndarray": rows.tolist()}}).json()
    assert answer["data"]["names"] == CLASSES
    assert np.allclose(answer["data"]["ndarray"], classifier.predict_proba(rows), atol=1e-6)


def test_the_wrapper_is_packaged_as_xgboost_not_as_sklearn(classifier_bundle):
    data = descriptor(classifier_bundle)
    assert (data["framework"], data["runtime"]) == ("xgboost", "xgboost")
    assert data["artifact"] == "model.json"
    assert data["parameters"] == {"estimator": "XGBClassifier"}
    assert data["predictMethod"] == "predict_proba"
    assert data["frameworkVersion"] == xgboost.__version__
    assert data["signature"]["inputs"] == [
        {"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}
    ]
    assert data["signature"]["outputs"][0]["shape"] == [-1, 3]
    pins = (classifier_bundle / "requirements.txt").read_text().splitlines()
    assert any(line.startswith(("xgboost==", "xgboost-cpu==")) for line in pins), pins
    assert not any(line.startswith("torch") for line in pins)


def test_recorded_sample_is_what_the_server_answers(classifier_bundle, classifier_server):
    sample = descriptor(classifier_bundle)["sample"]
    answer = classifier_server.post(sample["request"]).json()
    assert compare_responses(sample["response"], answer) == []
    assert len(sample["request"]["data"]["ndarray"]) == 2


def test_ubj_booster_file_is_copied_and_served_as_a_booster(models, tmp_path):
    X, _, _, booster = models
    saved = tmp_path / "regressor.ubj"
    booster.save_model(saved)
    bundle = package(str(saved), tmp_path / "reg", sample_input=X[:1])
    data = descriptor(bundle)
    assert data["artifact"] == "model.ubj" and "parameters" not in data
    assert (bundle / "model.ubj").read_bytes() == saved.read_bytes()
    runtime = load_runtime(bundle, load_bundle(bundle))
    assert np.allclose(runtime.predict(X[:5], None, {}), booster.inplace_predict(X[:5]))
    margin = package(booster, tmp_path / "margin", predict_method="predict_margin")
    runtime = load_runtime(margin, load_bundle(margin))
    want = booster.inplace_predict(X[:5], predict_type="margin")
    assert np.allclose(runtime.predict(X[:5], None, {}), want)


def test_saved_wrapper_json_keeps_its_class_and_predict_gives_labels(models, tmp_path):
    X, _, classifier, _ = models
    saved = tmp_path / "classifier.json"
    classifier.save_model(saved)
    bundle = package(saved, tmp_path / "labels", predict_method="predict")
    data = descriptor(bundle)
    assert data["parameters"] == {"estimator": "XGBClassifier"}
    assert data["classNames"] == ["0", "1", "2"]
    runtime = load_runtime(bundle, load_bundle(bundle))
    assert runtime.predict(X[::30], None, {}).tolist() == classifier.predict(X[::30]).tolist()
    assert runtime.class_names is None  # labels are one column, not one per class


def test_dataframe_columns_are_reordered_by_name(tmp_path):
    pd = pytest.importorskip("pandas", reason="pandas is not installed")
    X, _ = iris()
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    regressor = xgboost.XGBRegressor(n_estimators=5).fit(frame, X[:, 0] * 2)
    bundle = package(regressor, tmp_path / "named")
    assert descriptor(bundle)["sample"]["request"]["data"]["names"] == ["a", "b", "c", "d"]
    runtime = load_runtime(bundle, load_bundle(bundle))
    shuffled = X[:3][:, [3, 2, 1, 0]]
    got = runtime.predict(shuffled, ["d", "c", "b", "a"], {})
    assert np.allclose(got, regressor.predict(frame[:3]))
