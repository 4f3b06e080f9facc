"""Keras 3 on the torch backend: `.keras` bundles, served and compared with Keras."""

from __future__ import annotations

import os

import numpy as np
import pytest

from primehub_jupyter.serving.bundle import load_bundle
from primehub_jupyter.serving.packaging import package
from primehub_jupyter.serving.registry import load_runtime

from .helpers import descriptor, iris, serve

# Keras reads its backend once, when first imported.
os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip(
    "keras", reason="Keras is not installed (pip install 'primehub-jupyter[keras]')"
)
if int(keras.__version__.split(".")[0]) < 3:
    pytest.skip(
        f"Keras 3 is needed, Keras {keras.__version__} is installed", allow_module_level=True
    )


@pytest.fixture(scope="module")
def trained():
    X, y = iris()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(X, y, epochs=3, batch_size=32, verbose=0)
    return X, model


@pytest.fixture(scope="module")
def keras_bundle(trained, tmp_path_factory):
    _, model = trained
    return package(
        model,
        tmp_path_factory.mktemp("keras") / "iris-keras",
        class_names=["setosa", "versicolor", "virginica"],
    )


@pytest.fixture(scope="module")
def keras_server(keras_bundle, tmp_path_factory):
    yield from serve(keras_bundle, tmp_path_factory.mktemp("keras-server"))


def test_keras_over_http_equals_keras(trained, keras_server):
    X, model = trained
    rows = X[::12]
    answer = keras_server.post({"data": {"ndarray": rows.tolist()}}).json()
    assert answer["data"]["names"] == ["setosa", "versicolor", "virginica"]
    want = model.predict(rows.astype("float32"), verbose=0)
    assert np.allclose(answer["data"]["ndarray"], want, atol=1e-6)


def test_keras_model_is_packaged_as_keras_with_its_backend(keras_bundle):
    data = descriptor(keras_bundle)
    # On the torch backend a Keras model is also a torch.nn.Module: Keras must win.
    assert (data["framework"], data["runtime"], data["artifact"]) == (
        "keras",
        "keras",
        "model.keras",
    )
    assert data["parameters"] == {"backend": keras.backend.backend()}
    assert data["signature"]["inputs"][0] == {
        "name": "input-0",
        "datatype": "FP32",
        "shape": [-1, 4],
    }
    # No sample given: the known input shape gives a row of zeros.
    assert data["sample"]["request"] == {"data": {"ndarray": [[0.0, 0.0, 0.0, 0.0]]}}
    pins = (keras_bundle / "requirements.txt").read_text()
    assert f"keras=={keras.__version__}" in pins
    assert "torch==" in pins  # the backend the model runs on


def test_saved_keras_file_is_copied(trained, tmp_path):
    X, model = trained
    saved = tmp_path / "iris.keras"
    model.save(saved)
    bundle = package(str(saved), tmp_path / "from-file")
    assert (bundle / "model.keras").read_bytes() == saved.read_bytes()
    runtime = load_runtime(bundle, load_bundle(bundle))
    want = model.predict(X[:3].astype("float32"), verbose=0)
    assert np.allclose(runtime.predict(X[:3], None, {}), want, atol=1e-6)
