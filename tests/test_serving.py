"""The model server as a real process on 127.0.0.1, exercised over real HTTP."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from primehub_jupyter.serving.packaging import package

try:
    from tests import raising_model
    from tests.serving_helpers import DEADLINE, PREDICT, REPO, STAMP, ModelServer, env, serve
except ImportError:  # tests/ is on sys.path instead of the repository root
    import raising_model  # type: ignore[no-redef]
    from serving_helpers import (  # type: ignore[no-redef]
        DEADLINE,
        PREDICT,
        REPO,
        STAMP,
        ModelServer,
        env,
        serve,
    )

CLASS_NAMES = ["setosa", "versicolor", "virginica"]


@pytest.fixture(scope="module")
def iris_models():
    """Iris features, labels and two fitted models."""
    X, y = load_iris(return_X_y=True)
    logreg = LogisticRegression(max_iter=1000).fit(X, y)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
    return X, y, logreg, pipeline


@pytest.fixture(scope="module")
def serving_bundles(iris_models, tmp_path_factory):
    """Bundles for the logistic regression, the pipeline (predict) and the trouble model."""
    X, y, logreg, pipeline = iris_models
    root = tmp_path_factory.mktemp("serving_bundles")
    trouble = raising_model.TroubleModel().fit(X, y)
    return {
        "logreg": package(logreg, root / "iris-logreg", class_names=CLASS_NAMES),
        "pipeline": package(pipeline, root / "iris-pipeline", predict_method="predict"),
        "trouble": package(trouble, root / "trouble"),
    }


@pytest.fixture(scope="module")
def logreg_server(serving_bundles, tmp_path_factory):
    """The iris LogisticRegression on --port 0, one process."""
    workdir = tmp_path_factory.mktemp("logreg-server")
    yield from serve(
        ModelServer.on_port,
        serving_bundles["logreg"],
        workdir,
        "--deployment",
        "iris-ab12c",
        "--replica",
        "iris-ab12c-0",
    )


@pytest.fixture(scope="module")
def pipeline_server(serving_bundles, tmp_path_factory):
    """The iris pipeline (predictMethod=predict) on an inherited socket, two workers."""
    workdir = tmp_path_factory.mktemp("pipeline-server")
    yield from serve(ModelServer.on_fd, serving_bundles["pipeline"], workdir, workers=2)


@pytest.fixture(scope="module")
def trouble_server(serving_bundles, tmp_path_factory):
    """The trouble model with a 64 KiB body limit."""
    workdir = tmp_path_factory.mktemp("trouble-server")
    yield from serve(
        ModelServer.on_port, serving_bundles["trouble"], workdir, "--max-body-bytes", "65536"
    )


# --- predictions ---------------------------------------------------------------------------


def test_ndarray_prediction_matches_predict_proba(iris_models, logreg_server):
    X, _, logreg, _ = iris_models
    rows = X[[0, 60, 120]]
    response = logreg_server.post({"data": {"ndarray": rows.tolist()}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"]["names"] == CLASS_NAMES
    assert np.allclose(body["data"]["ndarray"], logreg.predict_proba(rows))
    assert body["meta"]["puid"] == response.headers["Request-ID"]


def test_tensor_prediction_answers_as_tensor(iris_models, logreg_server):
    X, _, logreg, _ = iris_models
    rows = X[[5, 70]]
    payload = {"data": {"tensor": {"shape": [2, 4], "values": rows.ravel().tolist()}}}
    body = logreg_server.post(payload).json()
    tensor = body["data"]["tensor"]
    assert tensor["shape"] == [2, 3]
    expected = logreg.predict_proba(rows)
    assert np.allclose(np.reshape(tensor["values"], tensor["shape"]), expected)
    assert body["data"]["names"] == CLASS_NAMES
    assert "ndarray" not in body["data"]


def test_v01_path_and_meta_passthrough(iris_models, logreg_server):
    X, _, logreg, _ = iris_models
    payload = {"data": {"names": ["a", "b", "c", "d"], "ndarray": [X[3].tolist()]}}
    payload["meta"] = {"tags": {"team": "fraud"}}
    body = logreg_server.post(payload, path="/api/v0.1/predictions").json()
    assert np.allclose(body["data"]["ndarray"], logreg.predict_proba(X[3:4]))
    assert body["meta"]["tags"] == {"team": "fraud"}
    assert body["meta"]["puid"]


def test_single_flat_row_is_one_row(iris_models, logreg_server):
    X, _, logreg, _ = iris_models
    body = logreg_server.post({"data": {"ndarray": X[7].tolist()}}).json()
    assert np.allclose(body["data"]["ndarray"], logreg.predict_proba(X[7:8]))


def test_predict_method_predict_on_fd_workers(iris_models, pipeline_server):
    X, _, _, pipeline = iris_models
    rows = X[::30]
    body = pipeline_server.post({"data": {"ndarray": rows.tolist()}}).json()
    assert body["data"]["ndarray"] == pipeline.predict(rows).tolist()
    assert body["data"]["names"] == []  # labels, not per-class columns
    tensor = {"shape": list(rows.shape), "values": rows.ravel().tolist()}
    body = pipeline_server.post({"data": {"tensor": tensor}}).json()
    assert body["data"]["tensor"] == {
        "shape": [len(rows)],
        "values": pipeline.predict(rows).tolist(),
    }


def test_workers_are_separate_processes(pipeline_server):
    assert pipeline_server.proc is not None
    children = psutil.Process(pipeline_server.proc.pid).children()
    assert len(children) == 2
    status = requests.get(pipeline_server.url + "/health/status", timeout=30).json()
    assert status["pid"] in {child.pid for child in children}


def test_a_killed_worker_is_replaced(pipeline_server):
    assert pipeline_server.proc is not None
    supervisor = psutil.Process(pipeline_server.proc.pid)
    victim, survivor = supervisor.children()
    victim.kill()
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        pids = {child.pid for child in supervisor.children() if child.status() != "zombie"}
        if len(pids) == 2 and victim.pid not in pids:
            break
        time.sleep(0.05)
    assert survivor.pid in pids
    assert victim.pid not in pids
    assert len(pids) == 2
    pipeline_server.wait_for_log(rf"worker {victim.pid} exited \(killed by SIGKILL\)")
    for _ in range(5):
        assert pipeline_server.post({"data": {"ndarray": [[1, 2, 3, 4]]}}).status_code == 200


def test_supervisor_gives_up_when_workers_keep_crashing():
    from primehub_jupyter.serving.workers import EXIT_WORKERS_FAILED, run_workers

    def crash() -> None:
        raise RuntimeError("worker cannot start")

    assert run_workers(crash, 2) == EXIT_WORKERS_FAILED


# --- health, routing, request ids -----------------------------------------------------------


def test_health_endpoints(logreg_server):
    ping = requests.get(logreg_server.url + "/health/ping", timeout=30)
    assert ping.status_code == 200
    assert ping.text == "pong"
    status = requests.get(logreg_server.url + "/health/status", timeout=30)
    assert status.status_code == 200
    body = status.json()
    assert body["status"] == "ok"
    assert body["name"] == "iris-logreg"
    assert body["runtime"] == "sklearn"
    assert body["deployment"] == "iris-ab12c"
    assert body["replica"] == "iris-ab12c-0"


def test_unknown_path_is_404_and_wrong_method_is_405(logreg_server):
    missing = requests.get(logreg_server.url + "/api/v2.0/predictions", timeout=30)
    assert missing.status_code == 404
    assert missing.json()["status"]["code"] == 404
    wrong = requests.get(logreg_server.url + PREDICT, timeout=30)
    assert wrong.status_code == 405
    assert wrong.headers["Allow"] == "POST"
    assert requests.post(logreg_server.url + "/health/ping", timeout=30).status_code == 405


@pytest.mark.parametrize("header", ["Request-ID", "X-Request-ID"])
def test_request_id_is_kept(header, logreg_server):
    response = logreg_server.post({"data": {"ndarray": [[1, 2, 3, 4]]}}, headers={header: "req-42"})
    assert response.headers["Request-ID"] == "req-42"
    assert response.json()["meta"]["puid"] == "req-42"


def test_request_id_is_generated_everywhere(logreg_server):
    first = requests.get(logreg_server.url + "/health/ping", timeout=30).headers["Request-ID"]
    second = requests.get(logreg_server.url + "/nowhere", timeout=30).headers["Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert re.fullmatch(r"[0-9a-f]{32}", second)
    assert first != second


# --- client errors ----------------------------------------------------------------------------

BAD_PAYLOADS = [
    pytest.param(b"{not json", "not valid JSON", id="not-json"),
    pytest.param(b"[1, 2, 3]", "JSON object", id="not-an-object"),
    pytest.param(b'{"meta": {}}', 'no "data"', id="missing-data"),
    pytest.param(b'{"data": {"ndarray": [[1, 2, 3]]}}', "expected 4 features", id="features"),
    pytest.param(b'{"data": {"ndarray": [[1, 2, 3, 4], [1, 2]]}}', "ragged", id="ragged"),
    pytest.param(b'{"data": {"ndarray": [["a", "b", "c", "d"]]}}', "strings", id="strings"),
    pytest.param(b'{"data": {"ndarray": [[1, null, 3, 4]]}}', "only numbers", id="null"),
    pytest.param(b'{"data": {"ndarray": []}}', "no rows", id="empty"),
    pytest.param(b'{"data": {"ndarray": "1,2,3,4"}}', "JSON array", id="not-a-list"),
    pytest.param(
        b'{"data": {"tensor": {"shape": [2, 4], "values": [1, 2, 3]}}}',
        "needs 8 values",
        id="tensor",
    ),
    pytest.param(b'{"strData": "hello"}', "not supported by the sklearn runtime", id="strData"),
    pytest.param(b'{"binData": "aGVsbG8="}', "not supported by the sklearn runtime", id="binData"),
]


@pytest.mark.parametrize(("body", "message"), BAD_PAYLOADS)
def test_bad_payload_is_400_and_server_keeps_serving(body, message, logreg_server):
    response = logreg_server.post(data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    error = response.json()
    assert message in error["message"]
    assert error["status"] == {
        "code": 400,
        "info": error["message"],
        "reason": "MICROSERVICE_BAD_DATA",
        "status": "FAILURE",
    }
    assert logreg_server.post({"data": {"ndarray": [[1, 2, 3, 4]]}}).status_code == 200


def test_oversize_body_is_413(trouble_server):
    too_big = b'{"data": {"ndarray": [' + b"[1, 2, 3, 4], " * 6000 + b"[1, 2, 3, 4]]}}"
    response = trouble_server.post(data=too_big)
    assert response.status_code == 413
    assert response.json()["status"]["code"] == 413
    assert "--max-body-bytes" in response.json()["message"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(10):
            yield b" " * 10_000

    assert trouble_server.post(data=chunks()).status_code == 413
    assert trouble_server.post({"data": {"ndarray": [[1, 2, 3, 4]]}}).status_code == 200


def test_model_error_is_500_and_server_keeps_serving(trouble_server):
    response = trouble_server.post({"data": {"ndarray": [[-1, 2, 3, 4]]}})
    assert response.status_code == 500
    error = response.json()
    assert "TroubleModel refuses negative input -1.0" in error["message"]
    assert error["status"]["info"] == error["message"]
    assert error["status"]["reason"] == "MICROSERVICE_INTERNAL_ERROR"
    ok = trouble_server.post({"data": {"ndarray": [[1, 2, 3, 4]]}})
    assert ok.status_code == 200
    assert np.allclose(ok.json()["data"]["ndarray"], [[1 / 3] * 3])
    trouble_server.wait_for_log(r"ValueError: TroubleModel refuses negative input")


# --- logs -------------------------------------------------------------------------------------


def test_log_file_has_timestamped_lines_and_access_log(logreg_server):
    headers = {
        "X-Forwarded-User": "alice",
        "Request-ID": "log-check-1",
        "Authorization": "Bearer supersecret-token",
    }
    payload = {"data": {"ndarray": [[1, 2, 3, 4]]}, "meta": {"tags": {"note": "bodysecret"}}}
    assert logreg_server.post(payload, headers=headers).status_code == 200
    logreg_server.wait_for_log(
        rf"(?m)^{STAMP} POST /api/v1\.0/predictions 200 \d+\.\d+ms user=alice "
        r"request_id=log-check-1$"
    )
    log = logreg_server.log()
    assert "supersecret" not in log
    assert "bodysecret" not in log
    lines = log.splitlines()
    assert lines
    assert all(re.match(rf"{STAMP} ", line) for line in lines), log
    # Health probes (every few seconds from the engine) stay out of the access log...
    assert "GET /health/ping 200" not in log
    # ...while anything else is logged, errors included.
    requests.get(logreg_server.url + "/nowhere", headers={"Request-ID": "miss-1"}, timeout=30)
    logreg_server.wait_for_log(rf"(?m)^{STAMP} GET /nowhere 404 \S+ms user=- request_id=miss-1$")


def test_fd_level_output_is_captured(trouble_server):
    assert trouble_server.post({"data": {"ndarray": [[50, 0, 0, 0]]}}).status_code == 200
    trouble_server.wait_for_log(rf"(?m)^{STAMP} TroubleModel wrote this line to fd 2$")


def test_no_access_log_flag(serving_bundles, tmp_path):
    server = ModelServer.on_port(serving_bundles["logreg"], tmp_path, "--no-access-log")
    try:
        payload = {"data": {"ndarray": [[1, 2, 3, 4]]}}
        headers = {"Request-ID": "quiet-1"}
        requests.post(
            server.url + "/api/v1.0/predictions", json=payload, headers=headers, timeout=30
        )
        assert server.stop() == 0
        log = server.log()
        assert "stopped serving iris-logreg" in log
        assert "quiet-1" not in log
        assert "GET /health/ping" not in log
    finally:
        server.kill()


# --- lifecycle --------------------------------------------------------------------------------


def test_sigterm_finishes_in_flight_request_then_exits_0(serving_bundles, tmp_path):
    server = ModelServer.on_port(serving_bundles["trouble"], tmp_path)
    try:
        result: dict[str, requests.Response] = {}
        slow = threading.Thread(
            target=lambda: result.setdefault(
                "response", server.post({"data": {"ndarray": [[101, 0, 0, 0]]}})
            )
        )
        slow.start()
        server.wait_for_log("slow predict started")
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        slow.join(DEADLINE)
        assert result["response"].status_code == 200
        assert server.proc.wait(timeout=DEADLINE) == 0
        assert "stopped serving trouble" in server.log()
    finally:
        server.kill()


def _run_to_exit(bundle: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "primehub_jupyter.serving", str(bundle), *extra]
    args += ["--log-file", str(tmp_path / "server.log")]
    args += ["--termination-log", str(tmp_path / "termination.log")]
    return subprocess.run(
        args, cwd=REPO, env=env(), capture_output=True, text=True, timeout=DEADLINE
    )


def _copy_bundle(source: Path, target: Path) -> Path:
    target.mkdir()
    for item in source.iterdir():
        if item.is_file():  # the build/ context is not needed to serve a bundle
            (target / item.name).write_bytes(item.read_bytes())
    return target


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("corrupt", r"model failed to load: ModelLoadError: cannot read .*model\.joblib.*corrupt"),
        ("missing", r"model failed to load: BundleError: artifact model\.joblib not found in "),
        ("no-descriptor", r"model failed to load: BundleError: no bundle\.yaml in .*package\("),
        ("runtime", r"model failed to load: BundleError: .*unknown runtime 'tf9'.*sklearn"),
        ("sample", r"model failed to load: ModelLoadError: .*failed on the sample request.*3"),
    ],
    ids=["corrupt", "missing", "no-descriptor", "runtime", "sample"],
)
def test_load_failure_exits_3_with_termination_log(breakage, expected, serving_bundles, tmp_path):
    bundle = _copy_bundle(serving_bundles["logreg"], tmp_path / "bundle")
    if breakage == "corrupt":
        (bundle / "model.joblib").write_bytes(b"this is not a pickle")
    elif breakage == "missing":
        (bundle / "model.joblib").unlink()
    elif breakage == "no-descriptor":
        (bundle / "bundle.yaml").unlink()
    elif breakage == "sample":
        text = (bundle / "bundle.yaml").read_text()
        assert "[[0.0, 0.0, 0.0, 0.0]]" in text
        (bundle / "bundle.yaml").write_text(
            text.replace("[[0.0, 0.0, 0.0, 0.0]]", "[[0.0, 0.0, 0.0]]")
        )
    else:
        text = (bundle / "bundle.yaml").read_text()
        (bundle / "bundle.yaml").write_text(text.replace("runtime: sklearn", "runtime: tf9"))

    done = _run_to_exit(bundle, tmp_path, "--port", "0")
    assert done.returncode == 3
    message = (tmp_path / "termination.log").read_text()
    assert re.match(expected, message), message
    assert len(message.strip().splitlines()) == 1  # one paragraph
    log = (tmp_path / "server.log").read_text()
    assert re.search(rf"(?m)^{STAMP} Traceback \(most recent call last\):$", log), log
    assert re.search(rf"(?m)^{STAMP} model failed to load: ", log), log


def test_busy_port_exits_4(serving_bundles, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = _run_to_exit(serving_bundles["logreg"], tmp_path, "--port", str(port))
    assert done.returncode == 4
    assert f"cannot listen on 127.0.0.1:{port}" in (tmp_path / "termination.log").read_text()


@pytest.mark.parametrize("extra", [(), ("--port", "1", "--fd", "3")])
def test_exactly_one_of_port_or_fd(extra, serving_bundles, tmp_path):
    done = _run_to_exit(serving_bundles["logreg"], tmp_path, *extra)
    assert done.returncode == 2
    assert "exactly one of --port or --fd" in done.stderr


def test_log_file_rotates_keeping_one_previous_file(serving_bundles, tmp_path):
    from primehub_jupyter.engines.local.logs import tail_lines

    server = ModelServer.on_port(serving_bundles["logreg"], tmp_path, "--log-max-bytes", "4000")
    try:
        session = requests.Session()
        payload = {"data": {"ndarray": [[1, 2, 3, 4]]}}
        for i in range(120):  # ~120 access lines of ~110 bytes: several rotations
            headers = {"Request-ID": f"rotate-{i:03d}"}
            assert (
                session.post(
                    server.url + "/api/v1.0/predictions", json=payload, headers=headers, timeout=30
                ).status_code
                == 200
            )
        server.wait_for_log(r"request_id=rotate-119")
        rotated = server.log_file.with_name(server.log_file.name + ".1")
        assert rotated.exists()
        assert server.log_file.stat().st_size < 4000 + 200
        assert rotated.stat().st_size < 4000 + 200
        assert not server.log_file.with_name(server.log_file.name + ".2").exists()
        # Together the rotated file and the live one are the recent log, in order.
        lines = tail_lines(rotated, None) + tail_lines(server.log_file, None)
        ids = [line.rsplit("request_id=", 1)[1] for line in lines if "request_id=rotate-" in line]
        assert ids == sorted(ids) and ids[-1] == "rotate-119" and len(ids) > 20
    finally:
        server.kill()
