"""Custom Python models written for Seldon's Python wrapper, packaged and served unchanged."""

from __future__ import annotations

import base64
import importlib.util
import linecache
import sys
import textwrap

import numpy as np
import pytest

from primehub_jupyter.serving.bundle import load_bundle
from primehub_jupyter.serving.errors import ModelLoadError, PackagingError, PayloadError
from primehub_jupyter.serving.packaging import package
from primehub_jupyter.serving.registry import load_runtime

from .helpers import descriptor, iris, serve

# Written as for seldon-core's wrapper: the 2-argument predict, class_names as an attribute,
# a weights file opened by relative path in load(), Seldon's exception for bad input.
IRIS_MODEL = textwrap.dedent(
    """
    import numpy as np
    from seldon_core.flask_utils import SeldonMicroserviceException


    class IrisModel:
        class_names = ["setosa", "versicolor", "virginica"]

        def __init__(self, scale=1.0):
            self.scale = float(scale)
            self.weights = None
            self.rewards = []

        def load(self):
            self.weights = np.loadtxt("weights/iris.txt")

        def predict(self, X, features_names):
            if np.any(np.asarray(X) < 0):
                message = "measurements cannot be negative"
                raise SeldonMicroserviceException(message, status_code=400)
            return np.asarray(X) @ self.weights * self.scale

        def tags(self):
            return {"model": "iris-custom", "feedback": len(self.rewards)}

        def metrics(self):
            return [{"type": "COUNTER", "key": "iris_predictions_total", "value": 1}]

        def health_status(self):
            return {"weights": int(self.weights.size)}

        def send_feedback(self, features, feature_names, reward, truth, routing=None):
            self.rewards.append(reward)
            return []
    """
)

# The 3-argument predict with meta, non-numeric payloads, Seldon's SeldonComponent and
# ClientResponse, and init_metadata.
TEXT_MODEL = textwrap.dedent(
    """
    from seldon_core.user_model import ClientResponse, SeldonComponent


    class TextModel(SeldonComponent):
        def __init__(self, suffix="!"):
            super().__init__()
            self.suffix = suffix

        def init_metadata(self):
            return {"name": "text", "versions": ["v1"], "custom": {"kind": "echo"}}

        def predict(self, X, features_names, meta):
            if isinstance(X, str):
                return ClientResponse(X.upper() + self.suffix, tags={"length": len(X)})
            if isinstance(X, bytes):
                return X[::-1]
            if isinstance(X, dict):
                return {"keys": sorted(X), "meta_tags": meta.get("tags", {})}
            return [[len(str(x))] for x in X]
    """
)


def _import(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def project(tmp_path_factory, monkeypatch_module):
    """A user's project folder: the model modules and the weights file they load."""
    root = tmp_path_factory.mktemp("project")
    (root / "IrisModel.py").write_text(IRIS_MODEL)
    (root / "TextModel.py").write_text(TEXT_MODEL)
    (root / "weights").mkdir()
    np.savetxt(root / "weights" / "iris.txt", np.random.default_rng(0).random((4, 3)))
    monkeypatch_module.chdir(root)  # files= are given relative to the project, as in a notebook
    return root


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def iris_bundle(project, tmp_path_factory):
    from primehub_jupyter.serving.runtimes import seldon_compat

    seldon_compat.install()  # the class imports seldon_core; here it is our stand-in
    module = _import(project / "IrisModel.py", "IrisModel")
    X, _ = iris()
    yield package(
        module.IrisModel,  # the class object: its module source is packaged
        tmp_path_factory.mktemp("custom") / "iris-custom",
        files=["weights/iris.txt"],
        init_kwargs={"scale": 2.0},
        sample_input=X[:2],
    )
    sys.modules.pop("IrisModel", None)


@pytest.fixture(scope="module")
def text_bundle(project, tmp_path_factory):
    return package(
        str(project / "TextModel.py"),  # a .py file; the class is named like the file
        tmp_path_factory.mktemp("custom-text") / "text",
        sample_input="hello",
    )


@pytest.fixture(scope="module")
def iris_server(iris_bundle, tmp_path_factory):
    yield from serve(iris_bundle, tmp_path_factory.mktemp("custom-server"))


@pytest.fixture(scope="module")
def text_server(text_bundle, tmp_path_factory):
    yield from serve(text_bundle, tmp_path_factory.mktemp("text-server"))


def _expected(project, rows, scale=2.0):
    return np.asarray(rows) @ np.loadtxt(project / "weights" / "iris.txt") * scale


def test_seldon_class_over_http(project, iris_server):
    X, _ = iris()
    answer = iris_server.post({"data": {"ndarray": X[::20].tolist()}})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["data"]["names"] == ["setosa", "versicolor", "virginica"]
    assert np.allclose(body["data"]["ndarray"], _expected(project, X[::20]))
    assert body["meta"]["tags"]["model"] == "iris-custom"


def test_seldon_exception_is_a_client_error_and_the_model_keeps_serving(project, iris_server):
    answer = iris_server.post({"data": {"ndarray": [[-1.0, 0.0, 0.0, 0.0]]}})
    assert answer.status_code == 400
    assert "measurements cannot be negative" in answer.text
    assert np.allclose(iris_server.predict([[1, 2, 3, 4]]), _expected(project, [[1, 2, 3, 4]]))


def test_feedback_reaches_the_model(iris_server):
    before = iris_server.post({"data": {"ndarray": [[1, 2, 3, 4]]}}).json()["meta"]["tags"]
    feedback = {
        "request": {"data": {"ndarray": [[1, 2, 3, 4]]}},
        "response": {"data": {"ndarray": [[0.1, 0.2, 0.7]]}},
        "reward": 1.0,
        "truth": {"data": {"ndarray": [[0, 0, 1]]}},
    }
    answer = iris_server.post(feedback, path="/api/v1.0/feedback")
    assert answer.status_code == 200, answer.text
    after = iris_server.post({"data": {"ndarray": [[1, 2, 3, 4]]}}).json()["meta"]["tags"]
    assert after["feedback"] == before["feedback"] + 1


def test_health_status_and_custom_metrics_over_http(iris_server):
    status = iris_server.post({"data": {"ndarray": [[1, 2, 3, 4]]}})
    assert status.status_code == 200
    health = __import__("requests").get(iris_server.url + "/health/status", timeout=30).json()
    assert health["model"] == {"weights": 12}
    metrics = __import__("requests").get(iris_server.url + "/metrics", timeout=30).text
    assert "iris_predictions_total" in metrics


def test_iris_bundle_contents(iris_bundle):
    data = descriptor(iris_bundle)
    assert (data["framework"], data["runtime"]) == ("custom", "custom")
    assert (data["artifact"], data["modelClass"]) == ("IrisModel.py", "IrisModel")
    assert data["files"] == ["weights/iris.txt"]
    assert data["parameters"] == {"initKwargs": {"scale": 2.0}}
    assert (iris_bundle / "IrisModel.py").read_text() == IRIS_MODEL
    assert (iris_bundle / "weights" / "iris.txt").is_file()
    pins = (iris_bundle / "requirements.txt").read_text()
    assert "numpy==" in pins and "seldon" not in pins  # Seldon's names are provided here


def test_text_payloads_over_http(text_server):
    answer = text_server.post({"strData": "abc"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["strData"] == "ABC!"
    assert answer.json()["meta"]["tags"]["length"] == 3  # from the ClientResponse
    answer = text_server.post({"jsonData": {"b": 1, "a": 2}, "meta": {"tags": {"t": "x"}}})
    assert answer.json()["jsonData"] == {"keys": ["a", "b"], "meta_tags": {"t": "x"}}
    answer = text_server.post({"binData": base64.b64encode(b"\x01\x02\x03").decode()})
    assert base64.b64decode(answer.json()["binData"]) == b"\x03\x02\x01"
    answer = text_server.post({"data": {"ndarray": ["one", "three"]}})
    assert answer.json()["data"]["ndarray"] == [[3], [5]]


def test_text_bundle_records_its_string_sample(text_bundle):
    data = descriptor(text_bundle)
    assert data["modelClass"] == "TextModel"
    assert data["sample"]["request"] == {"strData": "hello"}
    assert data["sample"]["response"]["strData"] == "HELLO!"
    assert data["signature"]["inputs"] == [{"name": "input-0", "datatype": "BYTES", "shape": [-1]}]


def test_metadata_from_init_metadata(text_bundle):
    runtime = load_runtime(text_bundle, load_bundle(text_bundle))
    assert runtime.metadata() == {"name": "text", "versions": ["v1"], "custom": {"kind": "echo"}}


# --- the runtime hooks directly ------------------------------------------------------------

RAW_MODEL = textwrap.dedent(
    """
    import os


    class RawModel:
        def __init__(self, greeting="hi", times=1):
            self.greeting = greeting
            self.times = times
            self.feedback = []
            self.metric_type = "COUNTER"

        def predict(self, X, names, **kwargs):
            return [[kwargs["meta"].get("n", 0)]]

        def predict_raw(self, request):
            return {"jsonData": {"greeting": self.greeting * self.times,
                                 "asked": request.get("jsonData"),
                                 "feedback": len(self.feedback)}}

        def send_feedback_raw(self, feedback):
            self.feedback.append(feedback["reward"])
            return {"jsonData": {"count": len(self.feedback)}}

        def metrics(self):
            return [{"type": self.metric_type, "key": "raw_calls_total", "value": 1}]
    """
)


@pytest.fixture(scope="module")
def raw_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    source = root / "raw_model.py"
    source.write_text(RAW_MODEL)
    return package(
        source,
        root / "raw",
        init_kwargs={"greeting": "hello"},
        sample_input={"q": 1},
    )


@pytest.fixture(scope="module")
def raw_server(raw_bundle, tmp_path_factory):
    yield from serve(raw_bundle, tmp_path_factory.mktemp("raw-server"))


def test_predict_raw_and_send_feedback_raw_over_http(raw_server):
    answer = raw_server.post({"jsonData": {"question": 42}})
    assert answer.status_code == 200, answer.text
    want = {"greeting": "hello", "asked": {"question": 42}, "feedback": 0}
    assert answer.json()["jsonData"] == want
    feedback = {"request": {"jsonData": 1}, "response": {"jsonData": 2}, "reward": 1.0}
    for _ in range(2):
        answer = raw_server.post(feedback, path="/api/v1.0/feedback")
        assert answer.status_code == 200, answer.text
    answer = raw_server.post({"jsonData": {}})
    assert answer.json()["jsonData"]["feedback"] == 2  # send_feedback_raw reached the object
    metrics = __import__("requests").get(raw_server.url + "/metrics", timeout=30).text
    assert "raw_calls_total" in metrics


def test_predict_raw_and_send_feedback_raw_reach_the_object(raw_bundle, monkeypatch):
    data = descriptor(raw_bundle)
    assert data["modelClass"] == "RawModel"  # the only class with predict
    assert data["sample"]["response"]["jsonData"]["asked"] == {"q": 1}
    params = '[{"name": "times", "value": "2", "type": "INT"}]'
    monkeypatch.setenv("PREDICTIVE_UNIT_PARAMETERS", params)  # Seldon's way wins
    runtime = load_runtime(raw_bundle, load_bundle(raw_bundle))
    assert runtime.predict_raw({"jsonData": 5})["jsonData"]["greeting"] == "hellohello"
    assert runtime.predict(np.zeros((1, 1)), None, {"n": 7}).tolist() == [[7]]  # meta keyword
    answer = runtime.send_feedback({"jsonData": 1}, {}, 0.5, None)
    assert answer == {"jsonData": {"count": 1}}
    assert runtime.user.feedback == [0.5]
    assert runtime.metrics()[0]["key"] == "raw_calls_total"
    runtime.user.metric_type = "HISTOGRAM"  # not a Seldon metric type
    with pytest.raises(ValueError, match="bad custom metric"):
        runtime.metrics()


def test_send_feedback_gets_features_and_truth(iris_bundle, project):
    runtime = load_runtime(iris_bundle, load_bundle(iris_bundle))
    runtime.send_feedback(
        {"data": {"names": ["a", "b", "c", "d"], "ndarray": [[1, 2, 3, 4]]}},
        {"data": {"ndarray": [[1, 0, 0]]}},
        0.25,
        {"data": {"ndarray": [[1, 0, 0]]}},
    )
    assert runtime.user.rewards == [0.25]
    assert runtime.class_names == ["setosa", "versicolor", "virginica"]
    assert runtime.tags() == {"model": "iris-custom", "feedback": 1}
    with pytest.raises(PayloadError, match="cannot be negative") as caught:
        runtime.predict(-np.ones((1, 4)), None, {})
    assert caught.value.status == 400


def test_a_class_defined_in_a_notebook_cell(tmp_path, monkeypatch):
    cell = textwrap.dedent(
        """
        import numpy as np

        TRAINING_RAN = True  # other statements of the cell are not packaged


        class Doubler:
            def predict(self, X, features_names):
                return np.asarray(X) * 2
        """
    )
    filename = "/tmp/ipykernel_0/cell-1.py"  # how ipykernel names cell sources
    linecache.cache[filename] = (len(cell), None, cell.splitlines(True), filename)
    namespace = {"__name__": "__main__"}
    exec(compile(cell, filename, "exec"), namespace)
    try:
        bundle = package(namespace["Doubler"], tmp_path / "doubler", sample_input=[[1.0, 2.0]])
    finally:
        linecache.cache.pop(filename, None)
    source = (bundle / "Doubler.py").read_text()
    assert "import numpy as np" in source and "class Doubler" in source
    assert "TRAINING_RAN" not in source
    runtime = load_runtime(bundle, load_bundle(bundle))
    assert runtime.predict(np.array([[1.0, 2.0]]), None, {}).tolist() == [[2.0, 4.0]]


def test_custom_packaging_errors(project, tmp_path):
    with pytest.raises(PackagingError, match=r"pass model_class="):
        two = tmp_path / "two.py"
        two.write_text(
            "class A:\n    def predict(self, X, n): ...\nclass B(A):\n"
            "    def predict(self, X, n): ...\n"
        )
        package(two, tmp_path / "a", sample_input=[[1]])
    with pytest.raises(PackagingError, match="defines no class 'Missing'"):
        package(project / "TextModel.py", tmp_path / "b", model_class="Missing", sample_input="x")
    with pytest.raises(PackagingError, match=r"file .*nope\.bin \(in files=\) does not exist"):
        package(project / "TextModel.py", tmp_path / "c", files=["nope.bin"], sample_input="x")
    with pytest.raises(PackagingError, match=r"IrisModel.load\(\) cannot open .*files=\["):
        package(project / "IrisModel.py", tmp_path / "d", sample_input=[[1.0, 2.0, 3.0, 4.0]])
    failing = tmp_path / "Failing.py"
    failing.write_text(
        "class Failing:\n    def predict(self, X, names):\n        raise ValueError('boom')\n"
    )
    with pytest.raises(PackagingError, match=r"failed on the sample input \(ValueError: boom\)"):
        package(failing, tmp_path / "f", sample_input=[[1.0]])
    broken = tmp_path / "Broken.py"
    broken.write_text(
        "class Broken:\n    def __init__(self, required):\n        pass\n"
        "    def predict(self, X, names):\n        return X\n"
    )
    with pytest.raises(PackagingError, match=r"Broken\(\*\*\{\}\) failed"):
        package(broken, tmp_path / "e", sample_input=[[1]])
    assert not any(p.name in {"a", "b", "c", "d", "e", "f"} for p in tmp_path.iterdir())


def test_load_errors_name_the_class(iris_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("PREDICTIVE_UNIT_PARAMETERS", "not json")
    with pytest.raises(ModelLoadError, match="PREDICTIVE_UNIT_PARAMETERS is not JSON"):
        load_runtime(iris_bundle, load_bundle(iris_bundle))
