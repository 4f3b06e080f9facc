"""MLflow: a model directory packaged as it is and served with mlflow.pyfunc."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from primehub_jupyter.serving.bundle import load_bundle
from primehub_jupyter.serving.errors import PackagingError
from primehub_jupyter.serving.packaging import package
from primehub_jupyter.serving.registry import load_runtime

from .helpers import descriptor, iris, serve

mlflow = pytest.importorskip(
    "mlflow", reason="MLflow is not installed (pip install 'primehub-jupyter[mlflow]')"
)
pd = pytest.importorskip("pandas", reason="pandas (needed by mlflow.pyfunc) is not installed")
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """An MLflow sklearn model with a column signature and an input example."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    X, y = iris()
    frame = pd.DataFrame(X, columns=COLUMNS)
    model = LogisticRegression(max_iter=500).fit(frame, y)
    path = tmp_path_factory.mktemp("mlflow") / "iris-mlflow"
    mlflow.sklearn.save_model(
        model,
        str(path),
        serialization_format="cloudpickle",
        signature=infer_signature(frame, model.predict(frame)),
        input_example=frame[:2],
        pip_requirements=["scikit-learn", "cloudpickle"],  # no slow inference of the env
    )
    return X, model, path


@pytest.fixture(scope="module")
def mlflow_bundle(saved, tmp_path_factory):
    _, _, path = saved
    return package(str(path), tmp_path_factory.mktemp("mlflow-bundle") / "iris")


@pytest.fixture(scope="module")
def mlflow_server(mlflow_bundle, tmp_path_factory):
    yield from serve(mlflow_bundle, tmp_path_factory.mktemp("mlflow-server"))


def test_mlflow_over_http_equals_pyfunc(saved, mlflow_server):
    X, model, path = saved
    rows = X[::15]
    pyfunc = mlflow.pyfunc.load_model(str(path))
    want = pyfunc.predict(pd.DataFrame(rows, columns=COLUMNS))
    assert np.array_equal(mlflow_server.predict(rows), np.asarray(want))
    assert np.array_equal(np.asarray(want), model.predict(pd.DataFrame(rows, columns=COLUMNS)))
    # Named columns in another order are put in the signature's order.
    named = mlflow_server.post(
        {"data": {"names": COLUMNS[::-1], "ndarray": rows[:, ::-1].tolist()}}
    ).json()
    assert np.array_equal(named["data"]["ndarray"], np.asarray(want))


def test_the_directory_is_copied_as_it_is(saved, mlflow_bundle):
    _, _, path = saved
    data = descriptor(mlflow_bundle)
    assert (data["framework"], data["runtime"], data["artifact"]) == ("mlflow", "mlflow", "model")
    assert set(data["parameters"]["flavors"]) == {"python_function", "sklearn"}
    for item in path.iterdir():
        assert (mlflow_bundle / "model" / item.name).read_bytes() == item.read_bytes()
    # The sample is MLflow's own input example, with its column names.
    request = data["sample"]["request"]["data"]
    assert request["names"] == COLUMNS and len(request["ndarray"]) == 2
    pins = (mlflow_bundle / "requirements.txt").read_text().splitlines()
    own = (path / "requirements.txt").read_text().splitlines()
    assert next(line for line in own if line.startswith("scikit-learn")) in pins
    assert any(line.startswith(("mlflow==", "mlflow-skinny==")) for line in pins)


def test_tensor_signature_model(tmp_path):
    import mlflow.sklearn
    from mlflow.models import infer_signature

    X, y = iris()
    model = LogisticRegression(max_iter=500).fit(X, y)
    path = tmp_path / "tensor-model"
    mlflow.sklearn.save_model(
        model,
        str(path),
        serialization_format="cloudpickle",
        signature=infer_signature(X, model.predict(X)),
        pip_requirements=["scikit-learn"],
    )
    bundle = package(path, tmp_path / "bundle")
    data = descriptor(bundle)
    assert data["signature"]["inputs"][0]["shape"] == [-1, 4]
    runtime = load_runtime(bundle, load_bundle(bundle))
    assert runtime.predict(X[::40], None, {}).tolist() == model.predict(X[::40]).tolist()


def test_a_directory_that_is_no_model_is_refused(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("x")
    with pytest.raises(PackagingError, match=r"neither an MLflow model \(no MLmodel file\)"):
        package(tmp_path / "data", tmp_path / "out")
