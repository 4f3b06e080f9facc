"""ONNX Runtime (also the route for MXNet models): .onnx files and ModelProtos, served."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from primehub_jupyter.serving.bundle import load_bundle
from primehub_jupyter.serving.errors import PackagingError
from primehub_jupyter.serving.packaging import package
from primehub_jupyter.serving.registry import load_runtime

from .helpers import descriptor, iris, serve

onnxruntime = pytest.importorskip(
    "onnxruntime", reason="ONNX Runtime is not installed (pip install 'primehub-jupyter[onnx]')"
)
skl2onnx = pytest.importorskip(
    "skl2onnx", reason="skl2onnx (used to make ONNX test models) is not installed"
)


@pytest.fixture(scope="module")
def converted():
    """An iris LogisticRegression as ONNX, without and with ZipMap (list of dicts) output."""
    X, y = iris()
    model = LogisticRegression(max_iter=500).fit(X, y)
    sample = X[:1].astype(np.float32)
    plain = skl2onnx.to_onnx(model, sample, options={"zipmap": False})
    zipped = skl2onnx.to_onnx(model, sample)
    return X, model, plain, zipped


@pytest.fixture(scope="module")
def onnx_bundle(converted, tmp_path_factory):
    _, _, plain, _ = converted
    root = tmp_path_factory.mktemp("onnx")
    saved = root / "iris.onnx"
    saved.write_bytes(plain.SerializeToString())
    return package(str(saved), root / "iris-onnx")


@pytest.fixture(scope="module")
def onnx_server(onnx_bundle, tmp_path_factory):
    yield from serve(onnx_bundle, tmp_path_factory.mktemp("onnx-server"))


def _session_output(proto, rows, output):
    session = onnxruntime.InferenceSession(
        proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run([output], {"X": rows.astype(np.float32)})[0]


def test_onnx_over_http_equals_onnxruntime(converted, onnx_server):
    X, model, plain, _ = converted
    rows = X[::10]
    got = onnx_server.predict(rows)
    assert np.allclose(got, _session_output(plain, rows, "probabilities"), atol=1e-6)
    assert np.allclose(got, model.predict_proba(rows), atol=1e-4)  # float32 vs float64


def test_descriptor_names_the_served_output(onnx_bundle):
    data = descriptor(onnx_bundle)
    assert (data["framework"], data["runtime"], data["artifact"]) == ("onnx", "onnx", "model.onnx")
    assert data["predictMethod"] == "probabilities"  # class probabilities, like scikit-learn
    assert data["signature"]["inputs"][0] == {
        "name": "input-0",
        "datatype": "FP32",
        "shape": [-1, 4],
    }
    pins = (onnx_bundle / "requirements.txt").read_text()
    assert f"onnxruntime=={onnxruntime.__version__}" in pins


def test_zipmap_output_becomes_a_matrix_with_class_names(converted, tmp_path):
    X, model, _, zipped = converted
    bundle = package(zipped, tmp_path / "zipmap")  # an onnx.ModelProto object
    data = descriptor(bundle)
    assert data["predictMethod"] == "output_probability"
    assert data["classNames"] == ["0", "1", "2"]
    runtime = load_runtime(bundle, load_bundle(bundle))
    assert np.allclose(runtime.predict(X[:4], None, {}), model.predict_proba(X[:4]), atol=1e-4)


def test_another_output_by_name(converted, tmp_path):
    X, model, plain, _ = converted
    bundle = package(plain, tmp_path / "labels", predict_method="label")
    runtime = load_runtime(bundle, load_bundle(bundle))
    assert runtime.predict(X[::30], None, {}).tolist() == model.predict(X[::30]).tolist()
    with pytest.raises(PackagingError, match=r"no such output; its outputs are label, probab"):
        package(plain, tmp_path / "nope", predict_method="scores")


def test_a_broken_onnx_file_is_refused(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x01not a model")
    with pytest.raises(PackagingError, match="onnxruntime cannot load the model"):
        package(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()
