"""TensorFlow SavedModels (TF2, and TF1 through TF2's loader), where TensorFlow is installed."""

from __future__ import annotations

import numpy as np
import pytest

from primehub_jupyter.serving.bundle import load_bundle
from primehub_jupyter.serving.packaging import package
from primehub_jupyter.serving.registry import load_runtime

from .helpers import descriptor, iris, serve

tf = pytest.importorskip(
    "tensorflow",
    reason="TensorFlow is not installed (pip install 'primehub-jupyter[tensorflow]')",
)


class Linear(tf.Module):
    """y = softmax(x W + b) with a serving signature."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(0)
        self.w = tf.Variable(rng.normal(size=(4, 3)).astype("float32"))
        self.b = tf.Variable(np.zeros(3, dtype="float32"))

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="features")])
    def __call__(self, x):
        return {"probabilities": tf.nn.softmax(tf.matmul(x, self.w) + self.b)}


@pytest.fixture(scope="module")
def tf2_bundle(tmp_path_factory):
    module = Linear()
    return module, package(
        module, tmp_path_factory.mktemp("tf2") / "linear", sample_input=iris()[0][:2]
    )


@pytest.fixture(scope="module")
def tf2_server(tf2_bundle, tmp_path_factory):
    yield from serve(tf2_bundle[1], tmp_path_factory.mktemp("tf2-server"))


def test_tf2_savedmodel_over_http_equals_tensorflow(tf2_bundle, tf2_server):
    module, bundle = tf2_bundle
    X, _ = iris()
    want = module(tf.constant(X[::20], dtype=tf.float32))["probabilities"].numpy()
    assert np.allclose(tf2_server.predict(X[::20]), want, atol=1e-6)
    data = descriptor(bundle)
    assert (data["framework"], data["runtime"], data["artifact"]) == (
        "tensorflow",
        "tensorflow",
        "saved_model",
    )
    assert data["signature"]["inputs"][0] == {
        "name": "input-0",
        "datatype": "FP32",
        "shape": [-1, 4],
    }


def test_tf1_savedmodel_through_the_tf2_loader(tmp_path):
    v1 = tf.compat.v1
    export = tmp_path / "tf1-model"
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, shape=[None, 4], name="x")
        w = v1.get_variable("w", initializer=np.eye(4, 2, dtype="float32"))
        y = tf.matmul(x, w, name="y")
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(export))
            signature = v1.saved_model.predict_signature_def(inputs={"x": x}, outputs={"y": y})
            builder.add_meta_graph_and_variables(
                session, ["serve"], signature_def_map={"serving_default": signature}
            )
            builder.save()
    X, _ = iris()
    bundle = package(str(export), tmp_path / "tf1", sample_input=X[:1])
    runtime = load_runtime(bundle, load_bundle(bundle))
    assert np.allclose(runtime.predict(X[:3], None, {}), X[:3] @ np.eye(4, 2), atol=1e-5)
