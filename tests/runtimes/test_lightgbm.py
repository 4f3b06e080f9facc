"""LightGBM: the scikit-learn wrappers and Boosters as text models, served and compared."""

from __future__ import annotations

import numpy as np
import pytest

from primehub_jupyter.serving.bundle import load_bundle
from primehub_jupyter.serving.errors import PackagingError
from primehub_jupyter.serving.packaging import package
from primehub_jupyter.serving.registry import load_runtime

from .helpers import descriptor, iris, serve

lightgbm = pytest.importorskip(
    "lightgbm", reason="LightGBM is not installed (pip install 'primehub-jupyter[lightgbm]')"
)

SPECIES = np.array(["setosa", "versicolor", "virginica"])


@pytest.fixture(scope="module")
def models():
    X, y = iris()
    labels = SPECIES[y]  # string labels: predict() must give them back
    classifier = lightgbm.LGBMClassifier(n_estimators=10, num_leaves=4, verbose=-1).fit(X, labels)
    regressor = lightgbm.LGBMRegressor(n_estimators=10, num_leaves=4, verbose=-1)
    regressor.fit(X[:, :3], X[:, 3])
    return X, labels, classifier, regressor


@pytest.fixture(scope="module")
def classifier_bundle(models, tmp_path_factory):
    X, _, classifier, _ = models
    return package(
        classifier, tmp_path_factory.mktemp("lightgbm") / "iris-lgbm", sample_input=X[:2]
    )


@pytest.fixture(scope="module")
def classifier_server(classifier_bundle, tmp_path_factory):
    yield from serve(classifier_bundle, tmp_path_factory.mktemp("lightgbm-server"))


def test_classifier_over_http_equals_lightgbm(models, classifier_server):
    X, _, classifier, _ = models
    rows = X[::9]
    answer = classifier_server.post(
        {"data": {"tensor": {"shape": list(rows.shape), "values": rows.ravel().tolist()}}}
    )
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert data["names"] == SPECIES.tolist()
    assert data["tensor"]["shape"] == [len(rows), 3]
    got = np.asarray(data["tensor"]["values"]).reshape(len(rows), 3)
    assert np.allclose(got, classifier.predict_proba(rows), atol=1e-9)


def test_the_wrapper_is_recorded_with_its_labels(classifier_bundle):
    data = descriptor(classifier_bundle)
    assert (data["framework"], data["runtime"], data["artifact"]) == (
        "lightgbm",
        "lightgbm",
        "model.txt",
    )
    assert data["parameters"] == {"estimator": "LGBMClassifier", "classes": SPECIES.tolist()}
    assert data["classNames"] == SPECIES.tolist()
    assert (classifier_bundle / "model.txt").read_text().startswith("tree\nversion=")
    pins = (classifier_bundle / "requirements.txt").read_text()
    assert f"lightgbm=={lightgbm.__version__}" in pins


def test_predict_gives_the_original_labels(models, classifier_bundle, tmp_path):
    X, _, classifier, _ = models
    bundle = package(classifier, tmp_path / "labels", predict_method="predict")
    runtime = load_runtime(bundle, load_bundle(bundle))
    assert runtime.predict(X[::25], None, {}).tolist() == classifier.predict(X[::25]).tolist()
    with pytest.raises(PackagingError, match="predict_method='decision_function' is not"):
        package(classifier, tmp_path / "bad", predict_method="decision_function")


def test_binary_classifier_gives_two_columns(tmp_path):
    X, y = iris()
    binary = lightgbm.LGBMClassifier(n_estimators=5, num_leaves=4, verbose=-1).fit(X, y == 2)
    bundle = package(binary, tmp_path / "binary")
    runtime = load_runtime(bundle, load_bundle(bundle))
    assert np.allclose(runtime.predict(X[:4], None, {}), binary.predict_proba(X[:4]))


def test_booster_text_file_and_regressor(models, tmp_path):
    X, _, _, regressor = models
    saved = tmp_path / "model.txt"
    regressor.booster_.save_model(str(saved))
    bundle = package(saved, tmp_path / "from-file", sample_input=X[:1, :3])
    data = descriptor(bundle)
    assert "parameters" not in data and data["predictMethod"] == "predict"
    runtime = load_runtime(bundle, load_bundle(bundle))
    assert np.allclose(runtime.predict(X[:5, :3], None, {}), regressor.predict(X[:5, :3]))


def test_a_text_file_that_is_not_a_model_is_refused(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("tree house plans\n")
    with pytest.raises(PackagingError, match=r"a \.txt file that is not a saved lightgbm model"):
        package(notes, tmp_path / "out")
