"""Adaptive batching, Prometheus metrics and the request/feedback log of a real model server."""

from __future__ import annotations

import base64
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import numpy as np
import pytest
import requests
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from primehub_jupyter.serving import settings
from primehub_jupyter.serving.packaging import package
from primehub_jupyter.serving.requestlog import FEEDBACK, REQUESTS, log_files, read_records

try:
    from tests import raising_model
    from tests.serving_helpers import (
        DEADLINE,
        PREDICT,
        WITH_TEST_RUNTIMES,
        ModelServer,
        metric_value,
        serve,
    )
    from tests.serving_models import write_bundle
except ImportError:  # tests/ is on sys.path instead of the repository root
    import raising_model  # type: ignore[no-redef]
    from serving_helpers import (  # type: ignore[no-redef]
        DEADLINE,
        PREDICT,
        WITH_TEST_RUNTIMES,
        ModelServer,
        metric_value,
        serve,
    )
    from serving_models import write_bundle  # type: ignore[no-redef]

SERVER = "seldon_api_executor_server_requests_seconds"
CLIENT = "seldon_api_executor_client_requests_seconds"
BATCH = "primehub_model_server_batch_rows"


def _eventually(check, what: str):
    """Poll `check()` until it returns a truthy value (metrics of other workers lag ~1 s)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def doubler_bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("doubler")
    return {
        name: write_bundle(root / name, name, features=2)
        for name in ("test-doubler", "test-doubler-unbatched", "test-aggregate")
    }


@pytest.fixture(scope="module")
def batched(doubler_bundles, tmp_path_factory):
    """The slow doubler with adaptive batching: up to 64 rows, 5 ms wait."""
    yield from serve(
        ModelServer.on_port,
        doubler_bundles["test-doubler"],
        tmp_path_factory.mktemp("batched"),
        "--max-batch-size",
        "64",
        "--max-batch-wait-ms",
        "5",
        entry=WITH_TEST_RUNTIMES,
    )


@pytest.fixture(scope="module")
def iris(tmp_path_factory):
    """An iris model with two workers, full identity flags and the request log on.

    It is tests/raising_model.py's TroubleModel (uniform probabilities; a first feature above
    100 makes it sleep), so a test can keep one worker busy and know the other one answers.
    """
    X, y = load_iris(return_X_y=True)
    model = raising_model.TroubleModel().fit(X, y)
    root = tmp_path_factory.mktemp("iris-features")
    bundle = package(model, root / "bundle", name="iris-m")
    log_dir = root / "request-logs"
    servers = serve(
        ModelServer.on_port,
        bundle,
        root / "server",
        "--deployment",
        "iris-dep",
        "--predictor",
        "pred-a",
        "--model-image",
        "registry/iris:1",
        "--model-version",
        "v7",
        "--replica",
        "iris-dep-abc-0",
        "--request-log-dir",
        str(log_dir),
        workers=2,
    )
    server = next(servers)
    server.log_dir = log_dir
    server.model = model
    yield server
    next(servers, None)


def _ask(server, rows: np.ndarray, v2: bool) -> np.ndarray:
    if v2:
        tensor = {"name": "input-0", "shape": list(rows.shape), "datatype": "FP64"}
        tensor["data"] = rows.ravel().tolist()
        name = server.bundle.name  # write_bundle names the model after its runtime
        response = requests.post(
            f"{server.url}/v2/models/{name}/infer", json={"inputs": [tensor]}, timeout=30
        )
        assert response.status_code == 200, response.text
        output = response.json()["outputs"][0]
        return np.reshape(output["data"], output["shape"])
    response = server.post({"data": {"ndarray": rows.tolist()}})
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["data"]["ndarray"])


def _concurrent_callers(server, callers: int = 16, each: int = 4) -> int:
    """Distinct rows from many threads at once; every caller must get its own rows back."""
    start = threading.Barrier(callers)
    rows_sent = 0
    lock = threading.Lock()

    def caller(index: int) -> None:
        nonlocal rows_sent
        start.wait()
        for turn in range(each):
            count = 1 + (index + turn) % 3  # 1-3 rows per request
            rows = np.array([[index * 100 + turn * 10 + r, -index - r] for r in range(count)])
            answer = _ask(server, rows.astype(float), v2=index % 2 == 1)
            assert answer.tolist() == (rows * 2).tolist(), (index, turn)
            with lock:
                rows_sent += count

    with ThreadPoolExecutor(callers) as pool:
        for future in [pool.submit(caller, i) for i in range(callers)]:
            future.result()
    return rows_sent


# --- adaptive batching ------------------------------------------------------------------------


def test_batching_gives_each_caller_its_own_rows_and_batches(batched):
    rows = _concurrent_callers(batched)
    samples = batched.metrics()
    batches = metric_value(samples, BATCH + "_count")
    assert metric_value(samples, BATCH + "_sum") == rows
    assert 0 < batches < 64  # 64 requests, far fewer model calls
    single = metric_value(samples, BATCH + "_bucket", le="1.0")
    assert single < batches  # some model calls held rows of several requests
    status = batched.get("/health/status").json()
    assert status["batching"] == {"maxBatchSize": 64, "maxBatchWaitMs": 5.0}


def test_fast_model_batched_answers_match_the_model(tmp_path):
    # A fast model: lone requests are predicted on the event loop, concurrent ones in batches.
    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(X, y)
    bundle = package(model, tmp_path / "bundle", name="fast")
    server = ModelServer.on_port(bundle, tmp_path / "server", "--max-batch-size", "16")
    try:
        for i in range(5):
            body = server.post({"data": {"ndarray": X[i : i + 1].tolist()}}).json()
            assert np.allclose(body["data"]["ndarray"], model.predict_proba(X[i : i + 1]))

        def caller(index: int) -> None:
            for turn in range(5):
                rows = X[(index * 5 + turn) % 150 :][: 1 + turn % 2]
                body = server.post({"data": {"ndarray": rows.tolist()}}).json()
                assert np.allclose(body["data"]["ndarray"], model.predict_proba(rows))

        with ThreadPoolExecutor(8) as pool:
            for future in [pool.submit(caller, i) for i in range(8)]:
                future.result()
        samples = server.metrics()
        assert metric_value(samples, BATCH + "_count") <= 45
        assert metric_value(samples, BATCH + "_sum") == 5 + 8 * (3 * 1 + 2 * 2)
        assert server.stop() == 0
    finally:
        server.kill()


def test_runtime_without_batching_support_is_never_batched(doubler_bundles, tmp_path):
    server = ModelServer.on_port(
        doubler_bundles["test-doubler-unbatched"],
        tmp_path,
        "--max-batch-size",
        "64",
        entry=WITH_TEST_RUNTIMES,
    )
    try:
        _concurrent_callers(server, callers=6, each=2)
        samples = server.metrics()
        assert metric_value(samples, BATCH + "_count") == 0
        assert metric_value(samples, CLIENT + "_count") == 12
        assert server.get("/health/status").json()["batching"]["maxBatchSize"] == 1
        assert server.stop() == 0
    finally:
        server.kill()


def test_a_model_that_merges_rows_never_mixes_callers(doubler_bundles, tmp_path):
    server = ModelServer.on_port(
        doubler_bundles["test-aggregate"],
        tmp_path,
        "--max-batch-size",
        "32",
        entry=WITH_TEST_RUNTIMES,
    )
    try:
        barrier = threading.Barrier(8)

        def one(i: int) -> requests.Response:
            barrier.wait()
            return server.post({"data": {"ndarray": [[i, 1]]}})

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(8)))
        for i, answer in enumerate(answers):
            if answer.status_code == 200:  # alone in its batch: its own sum
                assert answer.json()["data"]["ndarray"] == [[i, 1]]
            else:
                assert answer.status_code == 500
                assert "one row per input row" in answer.json()["message"]
        assert server.post({"data": {"ndarray": [[5, 6]]}}).json()["data"]["ndarray"] == [[5, 6]]
        assert server.stop() == 0
    finally:
        server.kill()


def test_batching_flags_are_checked(doubler_bundles, tmp_path):
    import subprocess

    try:
        from tests.serving_helpers import env
    except ImportError:
        from serving_helpers import env  # type: ignore[no-redef]
    done = subprocess.run(
        [*WITH_TEST_RUNTIMES, str(doubler_bundles["test-doubler"]), "--max-batch-size", "0"],
        capture_output=True,
        text=True,
        env=env(),
        timeout=DEADLINE,
    )
    assert done.returncode == 2
    assert "--max-batch-size" in done.stderr


# --- deployment metadata -> flags -------------------------------------------------------------


def test_metadata_keys_become_flags(tmp_path):
    metadata = {
        settings.MAX_BATCH_SIZE: "32",
        settings.MAX_BATCH_WAIT_MS: "2.5",
        settings.REQUEST_LOG: "true",
        "something/else": "kept out",
    }
    args = settings.model_server_args(metadata, request_log_dir=tmp_path)
    assert args == [
        "--max-batch-size",
        "32",
        "--max-batch-wait-ms",
        "2.5",
        "--request-log-dir",
        str(tmp_path),
    ]
    assert settings.model_server_args({settings.REQUEST_LOG: "off"}) == []
    for bad, message in [
        ({settings.MAX_BATCH_SIZE: "lots"}, "whole number"),
        ({settings.MAX_BATCH_SIZE: "0"}, "from 1 to 4096"),
        ({settings.MAX_BATCH_WAIT_MS: "-1"}, "milliseconds"),
        ({settings.REQUEST_LOG: "maybe"}, "true or false"),
    ]:
        with pytest.raises(ValueError, match=message):
            settings.model_server_args(bad, request_log_dir=tmp_path)


# --- metrics ----------------------------------------------------------------------------------


def test_metrics_names_labels_and_counts_across_workers(iris):
    # One worker sleeps in a slow prediction; meanwhile only the other one can take requests.
    slow: dict[str, requests.Response] = {}
    thread = threading.Thread(
        target=lambda: slow.setdefault("r", iris.post({"data": {"ndarray": [[101.5, 0, 0, 0]]}}))
    )
    thread.start()
    iris.wait_for_log("slow predict started")
    good, bad = 40, 3
    for i in range(good - 1):
        assert iris.post({"data": {"ndarray": [[5.0, 3.0, 1.0, i / 10]]}}).status_code == 200
    thread.join(DEADLINE)
    assert slow["r"].status_code == 200
    for _ in range(bad):
        assert iris.post({"data": {"ndarray": [[1, 2]]}}).status_code == 400
    feedback = {"request": {}, "response": {"meta": {"puid": "m-1"}}}
    for reward in (1, 0, 1):
        answer = iris.post({**feedback, "reward": reward}, path="/api/v1.0/feedback")
        assert answer.status_code == 200

    identity = {"deployment_name": "iris-dep", "predictor_name": "pred-a", "model_name": "iris-m"}

    def settled():
        samples = iris.metrics()
        served = metric_value(samples, SERVER + "_count", code="200", service="predictions")
        refused = metric_value(samples, SERVER + "_count", code="400", service="predictions")
        feedback = metric_value(samples, "seldon_api_model_feedback_total")
        return samples if served >= good and refused >= bad and feedback >= 3 else None

    samples = _eventually(settled, "the metrics of both workers")
    count = metric_value(samples, SERVER + "_count", code="200", service="predictions", **identity)
    assert count == good  # summed over the two workers: each saw only part of them
    assert metric_value(samples, SERVER + "_count", code="400", service="predictions") == bad
    for name, labels, _ in samples:
        if name == SERVER + "_count":
            assert set(labels) == {
                "code",
                "deployment_name",
                "predictor_name",
                "predictor_version",
                "model_name",
                "service",
                "method",
            }
            assert labels["method"] == "post"
        if name == CLIENT + "_count":
            assert labels["model_image"] == "registry/iris:1"
            assert labels["model_version"] == "v7"
            assert labels["service"] in ("/predict", "/send-feedback")
    assert metric_value(samples, CLIENT + "_count", code="200", service="/predict") == good
    buckets = [
        (float(labels["le"]), value)
        for name, labels, value in samples
        if name == SERVER + "_bucket"
        and labels["code"] == "200"
        and labels["service"] == "predictions"
    ]
    assert buckets[-1] == (float("inf"), good)
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    feedback_labels = {"method": "feedback", **identity}
    assert metric_value(samples, "seldon_api_model_feedback_total", **feedback_labels) == 3
    assert metric_value(samples, "seldon_api_model_feedback_reward_total", **feedback_labels) == 2
    # Seldon's executor path serves the same text.
    assert "seldon_api_executor_server_requests_seconds_bucket" in iris.get("/prometheus").text


@pytest.fixture(scope="module")
def hooks(tmp_path_factory):
    root = tmp_path_factory.mktemp("hooks-metrics")
    bundle = write_bundle(root / "bundle", "test-hooks", sample={"strData": "warm up"})
    yield from serve(
        ModelServer.on_port, bundle, root / "server", "--deployment", "hk", entry=WITH_TEST_RUNTIMES
    )


def test_custom_metrics_are_exported(hooks):
    before = metric_value(hooks.metrics(), "hooks_calls_total", flavour="test", method="predict")
    calls = 5
    for _ in range(calls):
        assert hooks.post({"strData": "x"}).status_code == 200
    assert hooks.post({"request": {}, "reward": 1}, path="/api/v1.0/feedback").status_code == 200
    samples = hooks.metrics()
    counter = metric_value(
        samples, "hooks_calls_total", flavour="test", method="predict", deployment_name="hk"
    )
    assert counter - before == calls
    assert metric_value(samples, "hooks_calls_total", method="feedback") == 1
    gauges = [v for name, labels, v in samples if name == "hooks_last_calls"]
    assert gauges and max(gauges) >= calls
    timer_count = metric_value(samples, "hooks_work_time_count", method="predict")
    timer_sum = metric_value(samples, "hooks_work_time_sum", method="predict")
    assert timer_count >= calls
    assert timer_sum == pytest.approx(timer_count * 0.020)  # 20 ms each, in seconds
    assert metric_value(samples, "hooks_work_time_bucket", method="predict", le="0.025") == (
        timer_count
    )
    assert not any("bad" in name for name, _, _ in samples)


# --- request and feedback log -------------------------------------------------------------------


def test_request_log_records_requests_and_responses(iris):
    X = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]]
    headers = {"Request-ID": "log-1", "X-Forwarded-User": "alice"}
    ok = iris.post({"data": {"ndarray": X}, "meta": {"tags": {"n": 1}}}, headers=headers)
    assert ok.status_code == 200
    bad = iris.post(data=b"{not json", headers={"Request-ID": "log-bad"})
    assert bad.status_code == 400
    # V2 with binary input: the JSON header and the binary tensor data are both kept.
    header = (
        b'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP64",'
        b'"parameters":{"binary_data_size":32}}]}'
    )
    binary = np.array([[5.9, 3.0, 5.1, 1.8]]).tobytes()
    v2 = requests.post(
        f"{iris.url}/v2/models/iris-m/infer",
        data=header + binary,
        headers={"Inference-Header-Content-Length": str(len(header)), "Request-ID": "log-v2"},
        timeout=30,
    )
    assert v2.status_code == 200, v2.text

    def logged():
        records = {r["requestId"]: r for r in read_records(iris.log_dir, REQUESTS)}
        return records if {"log-1", "log-bad", "log-v2"} <= set(records) else None

    records = _eventually(logged, "the request log")
    files = log_files(iris.log_dir, REQUESTS, deployment="iris-dep")
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert [f.relative_to(iris.log_dir).as_posix() for f in files] == [f"iris-dep/v7/{today}.jsonl"]

    first = records["log-1"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert first["user"] == "alice"
    assert first["status"] == 200
    assert first["path"] == PREDICT
    assert first["replica"] == "iris-dep-abc-0" and first["predictor"] == "pred-a"
    assert first["request"] == {"data": {"ndarray": X}, "meta": {"tags": {"n": 1}}}
    assert first["response"] == ok.json()
    assert first["latencyMs"] > 0
    assert records["log-bad"]["status"] == 400
    assert records["log-bad"]["request"] == {"text": "{not json"}
    assert "not valid JSON" in records["log-bad"]["response"]["message"]
    binary_record = records["log-v2"]
    assert binary_record["request"]["inputs"][0]["parameters"] == {"binary_data_size": 32}
    assert base64.b64decode(binary_record["requestBinary"]) == binary
    assert binary_record["response"] == v2.json()
    assert list(read_records(iris.log_dir, REQUESTS, request_id="log-1")) == [first]


def test_feedback_is_stored_beside_the_requests(iris):
    prediction = iris.post({"data": {"ndarray": [[1, 2, 3, 4]]}})
    puid = prediction.json()["meta"]["puid"]
    seldon = {"request": {"data": {"ndarray": [[1, 2, 3, 4]]}}, "response": prediction.json()}
    answer = iris.post(
        {**seldon, "reward": 1, "truth": {"data": {"ndarray": [0]}}}, path="/api/v1.0/feedback"
    )
    assert answer.status_code == 200
    odahu = requests.post(
        iris.url + "/feedback",
        json={"label": "setosa", "correct": False},
        headers={"Request-ID": puid, "Model-Name": "iris-m", "Model-Version": "v7"},
        timeout=30,
    )
    assert odahu.status_code == 200
    assert odahu.json() == {"message": "feedback stored", "requestId": puid, "logged": True}
    missing = requests.post(iris.url + "/feedback", json={"label": "x"}, timeout=30)
    assert missing.status_code == 400
    assert "Request-ID" in missing.json()["message"]

    def stored():
        found = list(read_records(iris.log_dir, FEEDBACK, request_id=puid))
        return found if len(found) == 2 else None

    by_source = {r["source"]: r for r in _eventually(stored, "the feedback log")}
    assert by_source["seldon"]["reward"] == 1
    assert by_source["seldon"]["truth"] == {"data": {"ndarray": [0]}}
    assert by_source["seldon"]["response"]["meta"]["puid"] == puid
    assert by_source["request-id"]["feedback"] == {"label": "setosa", "correct": False}
    assert by_source["request-id"]["modelVersion"] == "v7"
    files = log_files(iris.log_dir, FEEDBACK)
    assert [f.name.endswith(".feedback.jsonl") for f in files] == [True]
    # The prediction it refers to is in the request log under the same id.
    assert _eventually(lambda: list(read_records(iris.log_dir, REQUESTS, request_id=puid)), "it")


def test_request_log_is_off_by_default(batched):
    answer = requests.post(
        batched.url + "/feedback", json={}, headers={"Request-ID": "x"}, timeout=30
    )
    assert answer.json()["logged"] is False
    assert batched.get("/health/status").json()["requestLog"] is False


def test_a_raising_metrics_hook_is_a_json_500_and_the_server_keeps_serving(hooks):
    broken = hooks.post({"strData": "break metrics"})
    assert broken.status_code == 500
    assert "metrics() exploded" in broken.json()["message"]
    assert hooks.post({"strData": "fine"}).status_code == 200


def test_answers_name_their_predictor(iris):
    """X-PrimeHub-Predictor on every answer (canary/A-B on Kubernetes, where no gateway sets it)."""
    answer = iris.post({"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}})
    assert answer.status_code == 200 and answer.headers["X-PrimeHub-Predictor"] == "pred-a"
    missing = requests.get(f"{iris.url}/no/such/path", timeout=30)
    assert missing.status_code == 404 and missing.headers["X-PrimeHub-Predictor"] == "pred-a"
