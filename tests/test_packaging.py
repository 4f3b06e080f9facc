"""Bundles in-process: package(), load_bundle(), the runtime registry and Seldon decoding."""

from __future__ import annotations

import pickle
import re

import joblib
import numpy as np
import orjson
import pytest
import sklearn
import yaml
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from primehub_jupyter.serving import registry
from primehub_jupyter.serving.bundle import BundleDescriptor, load_bundle
from primehub_jupyter.serving.errors import (
    BundleError,
    ModelLoadError,
    PackagingError,
    PayloadError,
)
from primehub_jupyter.serving.packaging import package
from primehub_jupyter.serving.protocols import seldon
from primehub_jupyter.serving.runtimes.sklearn import SklearnRuntime


@pytest.fixture(scope="module")
def iris_models():
    """Iris features and labels, a fitted LogisticRegression and a fitted Pipeline."""
    X, y = load_iris(return_X_y=True)
    logreg = LogisticRegression(max_iter=1000).fit(X, y)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
    return X, y, logreg, pipeline


@pytest.fixture(scope="module")
def logreg_bundle(iris_models, tmp_path_factory):
    """A bundle packaged once from the LogisticRegression with default options."""
    return package(iris_models[2], tmp_path_factory.mktemp("bundles") / "iris")


def _yaml(bundle):
    return yaml.safe_load((bundle / "bundle.yaml").read_text())


# --- package() --------------------------------------------------------------------------------


def test_package_writes_the_documented_descriptor(iris_models, logreg_bundle):
    _, _, logreg, _ = iris_models
    data = _yaml(logreg_bundle)
    assert data["formatVersion"] == 1
    assert data["name"] == "iris"
    assert data["framework"] == "sklearn"
    assert data["runtime"] == "sklearn"
    assert data["artifact"] == "model.joblib"
    assert data["frameworkVersion"] == sklearn.__version__
    assert data["predictMethod"] == "predict_proba"
    assert data["classNames"] == ["0", "1", "2"]
    assert data["signature"] == {
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}],
        "outputs": [{"name": "output-0", "datatype": "FP64", "shape": [-1, 3]}],
    }
    assert data["sample"]["request"] == {"data": {"ndarray": [[0.0, 0.0, 0.0, 0.0]]}}
    response = data["sample"]["response"]
    assert response["meta"] == {}
    assert response["data"]["names"] == ["0", "1", "2"]
    assert np.allclose(response["data"]["ndarray"], logreg.predict_proba(np.zeros((1, 4))))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", data["createdAt"])
    restored = joblib.load(logreg_bundle / "model.joblib")
    assert np.allclose(restored.coef_, logreg.coef_)


def test_package_pins_requirements(logreg_bundle):
    lines = (logreg_bundle / "requirements.txt").read_text().splitlines()
    assert f"scikit-learn=={sklearn.__version__}" in lines
    assert f"numpy=={np.__version__}" in lines
    assert f"joblib=={joblib.__version__}" in lines
    assert any(line.startswith("scipy==") for line in lines)


def test_package_pipeline_with_predict_and_sample(iris_models, tmp_path):
    X, _, _, pipeline = iris_models
    bundle = package(
        pipeline,
        tmp_path / "pipe",
        name="iris-pipe",
        predict_method="predict",
        sample_input=X[50:60],
    )
    data = _yaml(bundle)
    assert data["name"] == "iris-pipe"
    assert data["predictMethod"] == "predict"
    assert data["signature"]["outputs"] == [
        {"name": "output-0", "datatype": "INT64", "shape": [-1]}
    ]
    assert data["sample"]["request"]["data"]["ndarray"] == X[50:53].tolist()  # first 3 rows
    assert data["sample"]["response"]["data"] == {
        "names": [],
        "ndarray": pipeline.predict(X[50:53]).tolist(),
    }


def test_package_regressor_has_no_class_names(iris_models, tmp_path):
    X, y, _, _ = iris_models
    data = _yaml(package(LinearRegression().fit(X, y), tmp_path / "reg"))
    assert data["predictMethod"] == "predict"
    assert "classNames" not in data


@pytest.mark.parametrize("suffix", [".joblib", ".pkl"])
def test_package_from_saved_file_copies_it(suffix, iris_models, tmp_path):
    source = tmp_path / f"saved{suffix}"
    if suffix == ".pkl":
        source.write_bytes(pickle.dumps(iris_models[2]))
    else:
        joblib.dump(iris_models[2], source)
    bundle = package(str(source), tmp_path / "from-file", class_names=["a", "b", "c"])
    descriptor = load_bundle(bundle)
    assert descriptor.artifact == f"model{suffix}"
    assert (bundle / descriptor.artifact).read_bytes() == source.read_bytes()
    assert descriptor.class_names == ["a", "b", "c"]


def test_overwrite_replaces_an_existing_bundle(iris_models, tmp_path):
    target = package(iris_models[2], tmp_path / "b")
    with pytest.raises(PackagingError, match="not empty: pass overwrite=True"):
        package(iris_models[3], target)
    assert _yaml(target)["predictMethod"] == "predict_proba"
    package(iris_models[3], target, predict_method="predict", overwrite=True)
    assert _yaml(target)["predictMethod"] == "predict"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no staging leftovers


def test_overwrite_never_deletes_a_directory_that_is_not_a_bundle(iris_models, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(PackagingError, match="not a model bundle"):
        package(iris_models[2], tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_package_into_an_empty_directory(iris_models, tmp_path):
    (tmp_path / "empty").mkdir()
    assert (package(iris_models[2], tmp_path / "empty") / "bundle.yaml").is_file()


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"weights": [1, 2]}, r"cannot package a builtins\.dict: supported are a fitted scikit"),
        (LogisticRegression(), r"LogisticRegression is not fitted: call \.fit"),
        ("/no/such/model.joblib", r"model file /no/such/model\.joblib does not exist"),
    ],
)
def test_package_refuses_what_it_cannot_serve(model, message, tmp_path):
    with pytest.raises(PackagingError, match=message):
        package(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_package_refuses_unknown_file_types(tmp_path):
    source = tmp_path / "model.xyz"
    source.write_bytes(b"\x08\x01")
    with pytest.raises(PackagingError, match=r"unsupported file type \.xyz; supported are"):
        package(source, tmp_path / "out")


def test_package_refuses_bad_options(iris_models, tmp_path):
    X, y, logreg, _ = iris_models
    with pytest.raises(PackagingError, match="class_names has 2 names but"):
        package(logreg, tmp_path / "a", class_names=["x", "y"])
    with pytest.raises(PackagingError, match="has no predict_proba"):
        package(LinearRegression().fit(X, y), tmp_path / "b", predict_method="predict_proba")
    with pytest.raises(PackagingError, match="predict_method='score' is not supported"):
        package(logreg, tmp_path / "c", predict_method="score")
    with pytest.raises(PackagingError, match="sample_input has 3 columns but the model expects 4"):
        package(logreg, tmp_path / "d", sample_input=[[1, 2, 3]])
    (tmp_path / "file").write_text("x")
    with pytest.raises(PackagingError, match="is a file"):
        package(logreg, tmp_path / "file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_package_reports_a_model_that_fails_on_its_sample(iris_models, tmp_path):
    with pytest.raises(PackagingError, match="failed on the sample input"):
        package(iris_models[2], tmp_path / "nan", sample_input=[[np.nan, 1, 2, 3]])
    assert list(tmp_path.iterdir()) == []  # the staging directory is cleaned up


# --- load_bundle() --------------------------------------------------------------------------


def test_load_bundle_round_trip(logreg_bundle):
    descriptor = load_bundle(logreg_bundle)
    assert isinstance(descriptor, BundleDescriptor)
    assert descriptor.bundle_dir == logreg_bundle
    assert descriptor.predict_method == "predict_proba"
    assert descriptor.signature is not None
    assert descriptor.signature.inputs[0].shape == [-1, 4]
    assert load_bundle(logreg_bundle / "bundle.yaml").name == "iris"
    dumped = descriptor.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert dumped == _yaml(logreg_bundle)


def _broken(bundle, tmp_path, edit):
    target = tmp_path / "broken"
    target.mkdir()
    for item in bundle.iterdir():
        if item.is_file():  # the build/ context is not needed to load a bundle
            (target / item.name).write_bytes(item.read_bytes())
    edit(target)
    return target


def _set(key, value):
    def edit(target):
        data = _yaml(target)
        data[key] = value
        (target / "bundle.yaml").write_text(yaml.safe_dump(data))

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: (t / "bundle.yaml").unlink(),
            r"no bundle\.yaml in .*broken: is this a model bundle\? create one with "
            r"primehub_jupyter\.package\(model, path\)",
        ),
        (lambda t: (t / "bundle.yaml").write_text("name: [unclosed\n"), "is not valid YAML"),
        (lambda t: (t / "bundle.yaml").write_text("- a list\n"), "must be a YAML mapping"),
        (lambda t: (t / "model.joblib").unlink(), r"artifact model\.joblib not found in "),
        (_set("runtime", "keras9"), r"unknown runtime 'keras9': supported runtimes are sklearn"),
        (_set("formatVersion", 7), "formatVersion 7, newer than this server reads"),
        (_set("classNames", "setosa"), r"invalid: classNames: Input should be a valid list"),
        (_set("artifact", "../../etc/passwd"), "points outside the bundle"),
    ],
)
def test_load_bundle_errors_say_what_to_do(edit, message, logreg_bundle, tmp_path):
    with pytest.raises(BundleError, match=message):
        load_bundle(_broken(logreg_bundle, tmp_path, edit))


def test_load_bundle_missing_path_and_file(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "model.joblib").write_bytes(b"x")
    with pytest.raises(BundleError, match="is a file, but a model bundle is a directory"):
        load_bundle(tmp_path / "model.joblib")


def test_unknown_keys_are_kept_with_a_warning(logreg_bundle, tmp_path, capsys):
    descriptor = load_bundle(_broken(logreg_bundle, tmp_path, _set("futureField", 1)))
    assert descriptor.model_extra == {"futureField": 1}
    assert "ignoring unknown keys futureField" in capsys.readouterr().err


# --- runtimes -----------------------------------------------------------------------------------


def test_corrupt_artifact_is_a_model_load_error(logreg_bundle, tmp_path):
    bundle = _broken(
        logreg_bundle, tmp_path, lambda t: (t / "model.joblib").write_bytes(b"\x80\x04junk")
    )
    descriptor = load_bundle(bundle)
    with pytest.raises(ModelLoadError, match=r"cannot read .*model\.joblib with joblib"):
        registry.load_runtime(bundle, descriptor)


def test_runtime_registry_accepts_new_runtimes(logreg_bundle, tmp_path):
    class EchoRuntime(SklearnRuntime):
        name = "echo"

        def predict(self, X, names, meta):
            return X * 2

    registry.register_runtime("echo", EchoRuntime)
    try:
        assert "echo" in registry.runtime_names()
        bundle = _broken(logreg_bundle, tmp_path, _set("runtime", "echo"))
        runtime = registry.load_runtime(bundle, load_bundle(bundle))
        assert isinstance(runtime, EchoRuntime)
        assert runtime.predict(np.ones((1, 4)), None, {}).tolist() == [[2, 2, 2, 2]]
    finally:
        registry.unregister_runtime("echo")
    assert "echo" not in registry.runtime_names()


def test_check_input_validates_shape(logreg_bundle):
    runtime = registry.load_runtime(logreg_bundle, load_bundle(logreg_bundle))
    assert runtime.check_input(np.ones(4)).shape == (1, 4)
    with pytest.raises(PayloadError, match="expected 4 features per row, got 5"):
        runtime.check_input(np.ones((2, 5)))
    with pytest.raises(PayloadError, match=r"shaped like \[N, 4\], got shape \[1, 2, 4\]"):
        runtime.check_input(np.ones((1, 2, 4)))
    with pytest.raises(PayloadError, match="lists 1 names for 4 features"):
        runtime.check_input(np.ones((1, 4)), ["a"])


# --- Seldon protocol --------------------------------------------------------------------------


def test_decode_ndarray_and_tensor():
    request = seldon.decode_request(b'{"data": {"names": ["a", "b"], "ndarray": [[1, 2.5]]}}')
    assert request.kind == "ndarray"
    assert request.X.dtype == np.float64
    assert request.X.tolist() == [[1.0, 2.5]]
    assert request.names == ["a", "b"]
    assert request.meta == {}
    tensor = seldon.decode_request(
        b'{"data": {"tensor": {"shape": [2, 2], "values": [1, 2, 3, 4]}}, "meta": {"x": 1}}'
    )
    assert tensor.kind == "tensor"
    assert tensor.X.tolist() == [[1, 2], [3, 4]]
    assert tensor.meta == {"x": 1}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"data": {"ndarray": [["1.5", 2]]}}', "strings"),
        (b'{"data": {"ndarray": [[1, 2], [3]]}}', "ragged"),
        (b'{"data": {"names": "a", "ndarray": [[1]]}}', "list of strings"),
        (b'{"data": {"tensor": {"shape": [-1, 2], "values": [1, 2]}}}', "cannot be negative"),
        (b'{"data": {"tensor": {"shape": [1, 2], "values": [[1, 2]]}}}', "flat list"),
        (b'{"data": {"other": 1}}', 'must hold "ndarray" or "tensor"'),
        (b'{"data": [], "meta": 3}', '"meta" must be a JSON object'),
        (b'{"jsonData": {"a": 1}}', "jsonData payloads are not supported"),
    ],
)
def test_decode_rejects_with_a_reason(body, message):
    with pytest.raises(PayloadError, match=re.escape(message)):
        seldon.decode_request(body)


def test_encode_names_and_forms():
    proba = np.array([[0.25, 0.75]])
    assert seldon.output_names(proba, ["no", "yes"]) == ["no", "yes"]
    assert seldon.output_names(proba, ["only-one"]) == ["t:0", "t:1"]
    assert seldon.output_names(np.array([1, 0]), ["no", "yes"]) == []
    labels = np.array(["cat", "dog"])
    encoded = seldon.encode_response(labels, "tensor", None, {"puid": "p"})
    # Strings cannot travel in a tensor, so they come back as an ndarray.
    assert encoded == b'{"data":{"names":[],"ndarray":["cat","dog"]},"meta":{"puid":"p"}}'
    tensor = orjson.loads(seldon.encode_response(proba, "tensor", None, {}))
    assert tensor == {
        "data": {"names": ["t:0", "t:1"], "tensor": {"shape": [1, 2], "values": [0.25, 0.75]}},
        "meta": {},
    }
