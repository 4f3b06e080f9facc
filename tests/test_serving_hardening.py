"""Hostile input and faults against a real model server: codings, shapes, nesting, full logs."""

from __future__ import annotations

import gzip
import json
import re
import resource
import socket
import zlib

import numpy as np
import pytest
import requests
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from primehub_jupyter.serving.packaging import package

try:
    from tests.serve_helpers import wait_for
    from tests.serving_helpers import PREDICT, ModelServer, metric_value, serve
except ImportError:  # tests/ is on sys.path instead of the repository root
    from serve_helpers import wait_for  # type: ignore[no-redef]
    from serving_helpers import (  # type: ignore[no-redef]
        PREDICT,
        ModelServer,
        metric_value,
        serve,
    )

MODEL = "iris"
INFER = f"/v2/models/{MODEL}/infer"
LIMIT = 200_000


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return X, LogisticRegression(max_iter=1000).fit(X, y)


@pytest.fixture(scope="module")
def server(iris, tmp_path_factory):
    """The iris model with a 200 kB body limit."""
    root = tmp_path_factory.mktemp("hardening")
    bundle = package(iris[1], root / "bundle", name=MODEL)
    yield from serve(ModelServer.on_port, bundle, root / "server", "--max-body-bytes", str(LIMIT))


def seldon_body(X) -> bytes:
    return json.dumps({"data": {"ndarray": X[:3].tolist()}}).encode()


def v2_body(X) -> bytes:
    rows = X[:3]
    tensor = {
        "name": "x",
        "shape": list(rows.shape),
        "datatype": "FP64",
        "data": rows.ravel().tolist(),
    }
    return json.dumps({"inputs": [tensor]}).encode()


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident set size (VmHWM) in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def message(response) -> str:
    body = response.json()
    return body.get("message") or body["error"]


# ---- Content-Encoding -------------------------------------------------------------------------


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


ENCODINGS = [
    ("gzip", gzip.compress),
    ("GZip", gzip.compress),  # codings are case-insensitive
    ("x-gzip", gzip.compress),
    ("deflate", zlib.compress),  # the zlib format RFC 9110 means by deflate
    ("deflate", raw_deflate),  # what some clients send instead
    ("identity, gzip", gzip.compress),
    ("gzip, gzip", lambda data: gzip.compress(gzip.compress(data))),
    ("gzip", lambda data: gzip.compress(data[:10]) + gzip.compress(data[10:])),  # two members
]


@pytest.mark.parametrize(("encoding", "compress"), ENCODINGS)
def test_compressed_bodies_are_decoded(server, iris, encoding, compress):
    X, model = iris
    expected = model.predict_proba(X[:3])
    seldon = server.post(data=compress(seldon_body(X)), headers={"Content-Encoding": encoding})
    assert seldon.status_code == 200, seldon.text
    assert np.allclose(seldon.json()["data"]["ndarray"], expected)
    v2 = server.post(data=compress(v2_body(X)), path=INFER, headers={"Content-Encoding": encoding})
    assert v2.status_code == 200, v2.text
    assert np.allclose(np.reshape(v2.json()["outputs"][0]["data"], (3, 3)), expected)


def test_zip_bomb_is_413_without_taking_memory(server):
    bomb = gzip.compress(b" " * 100_000_000, compresslevel=9)
    assert len(bomb) < LIMIT  # small on the wire: only the decompressed size is too large
    before = peak_rss_kib(server.proc.pid)
    for path in (PREDICT, INFER):
        response = server.post(data=bomb, path=path, headers={"Content-Encoding": "gzip"})
        assert response.status_code == 413, response.text
        assert "--max-body-bytes" in message(response)
    # Inflating it would have cost 100 MB; the server never holds more than its limit of it.
    assert peak_rss_kib(server.proc.pid) - before < 20_000


def test_decoded_size_limit_is_exact(server):
    at_limit = b" " * (LIMIT - 2) + b"{}"
    response = server.post(data=gzip.compress(at_limit), headers={"Content-Encoding": "gzip"})
    assert response.status_code == 400, response.text  # decoded: just not a Seldon message
    assert 'no "data"' in message(response)
    over = gzip.compress(at_limit + b" ")
    response = server.post(data=over, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413, response.text


def _corrupt_crc(data: bytes) -> bytes:
    return data[:-8] + bytes([data[-8] ^ 0xFF]) + data[-7:]


BROKEN = [
    ("gzip", lambda body: gzip.compress(body)[:-12], "truncated"),
    ("gzip", lambda body: body, "corrupt"),  # not compressed at all
    ("gzip", lambda body: _corrupt_crc(gzip.compress(body)), "corrupt"),
    ("gzip", lambda body: gzip.compress(body) + b"trailing junk", "corrupt"),
    ("deflate", lambda body: zlib.compress(body)[:-3], "truncated"),
    ("deflate", lambda body: zlib.compress(body) + b"junk", "after the end"),
    ("deflate", lambda body: b"\xff\xfe\xfd" + body, "corrupt"),
]


@pytest.mark.parametrize(("encoding", "damage", "says"), BROKEN)
def test_broken_compressed_bodies_are_400(server, iris, encoding, damage, says):
    X, _ = iris
    for path, body in ((PREDICT, seldon_body(X)), (INFER, v2_body(X))):
        response = server.post(data=damage(body), path=path, headers={"Content-Encoding": encoding})
        assert response.status_code == 400, response.text
        assert response.headers["Content-Type"] == "application/json"
        assert says in message(response)
        assert encoding in message(response)


@pytest.mark.parametrize(
    "encoding",
    ["br", "zstd", "compress", "gzip, br", "gzip, gzip, gzip", "g\xe9zip", "*"],
)
def test_unsupported_encodings_are_415(server, iris, encoding):
    X, _ = iris
    for path, body in ((PREDICT, seldon_body(X)), (INFER, v2_body(X))):
        response = server.post(
            data=body, path=path, headers={"Content-Encoding": encoding.encode("latin-1")}
        )
        assert response.status_code == 415, response.text
        assert response.headers["Accept-Encoding"] == "gzip, deflate"
        assert "gzip, deflate" in message(response) or "at most 2" in message(response)


def test_feedback_takes_compressed_bodies_too(server):
    body = gzip.compress(json.dumps({"reward": 1.0}).encode())
    response = server.post(
        data=body, path="/api/v1.0/feedback", headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 200, response.text
    response = server.post(
        data=b"{}", path="/api/v1.0/feedback", headers={"Content-Encoding": "br"}
    )
    assert response.status_code == 415, response.text


# ---- tensor shapes ----------------------------------------------------------------------------

BAD_SHAPES = [
    ([1] * 70, [1.0], "70 dimensions"),
    ([1] * 33, [1.0], "33 dimensions"),
    ([2**32, 2**32, 0], [], "declares more than"),
    ([2**62, 4], [], "declares more than"),  # the product overflows int64
    ([2**63, 2], [], "declares more than"),  # a dimension beyond int64 itself
    ([3037000500, 3037000500], [], "declares more than"),  # product just above 2**63
    ([-1, 4], [1.0] * 4, "cannot be negative"),
    ([1.5, 4], [1.0] * 6, "got 1.5"),
    ([True, 4], [1.0] * 4, "got true"),
    (["2", 2], [1.0] * 4, "got a string"),
    ([None], [1.0], "got null"),
    ([[2], 2], [1.0] * 4, "got a list"),
    ("2,2", [1.0] * 4, "must be a list"),
    ([2, 2], [1.0] * 3, "needs 4"),
    ([2**40], [1.0], "needs 1099511627776"),
]


@pytest.mark.parametrize(("shape", "values", "says"), BAD_SHAPES)
def test_bad_seldon_tensor_shapes_are_400(server, shape, values, says):
    response = server.post({"data": {"tensor": {"shape": shape, "values": values}}})
    assert response.status_code == 400, response.text
    assert "data.tensor.shape" in message(response)
    assert says in message(response)


@pytest.mark.parametrize(("shape", "values", "says"), BAD_SHAPES)
def test_bad_v2_tensor_shapes_are_400(server, shape, values, says):
    for datatype in ("FP64", "BYTES"):
        data = values if datatype == "FP64" else ["a"] * len(values)
        tensor = {"name": "x", "shape": shape, "datatype": datatype, "data": data}
        response = server.post({"inputs": [tensor]}, path=INFER)
        assert response.status_code == 400, response.text
        # The field is named: `needs N values` messages name the input instead.
        assert "inputs[0].shape" in message(response) or "input 'x'" in message(response)
        assert says in message(response)


def test_binary_v2_tensor_with_overflowing_shape_is_400(server):
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2**33, 2**33],
                    "datatype": "UINT8",
                    "parameters": {"binary_data_size": 4},
                }
            ]
        }
    ).encode()
    response = server.post(
        data=header + b"\x00" * 4,
        path=INFER,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 400, response.text
    assert "inputs[0].shape" in message(response)


def test_server_still_answers_after_bad_shapes(server, iris):
    X, model = iris
    response = server.post(data=seldon_body(X))
    assert response.status_code == 200, response.text
    assert np.allclose(response.json()["data"]["ndarray"], model.predict_proba(X[:3]))
    assert "Traceback" not in server.log()  # every refusal above was a 4xx, not a crash


# ---- deep nesting -----------------------------------------------------------------------------


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


@pytest.mark.parametrize("depth", [33, 40, 64, 65, 70, 1000, 5000])
def test_deep_ndarray_is_400(server, depth):
    response = server.post(data=f'{{"data": {{"ndarray": {nested(depth)}}}}}')
    assert response.status_code == 400, response.text
    assert "levels deep" in message(response) or "depth limit" in message(response)


@pytest.mark.parametrize("depth", [33, 70, 5000])
def test_deep_v2_data_is_400(server, depth):
    tensor = f'{{"name": "x", "shape": [1], "datatype": "FP64", "data": {nested(depth)}}}'
    body = f'{{"inputs": [{tensor}]}}'
    response = server.post(data=body, path=INFER)
    assert response.status_code == 400, response.text
    assert "levels deep" in message(response) or "depth limit" in message(response)


def test_deep_json_data_and_meta_are_400(server):
    deep_object = '{"a":' * 5000 + "1" + "}" * 5000
    for body in (
        f'{{"jsonData": {nested(5000)}}}',
        f'{{"jsonData": {deep_object}}}',
        f'{{"strData": "x", "meta": {{"tags": {deep_object}}}}}',
    ):
        response = server.post(data=body)
        assert response.status_code == 400, response.text
        assert "not valid JSON" in message(response)
    # Deep enough to pass the parser but too deep to echo back in the answer's meta.
    tags = '{"a":' * 300 + "1" + "}" * 300
    for path, body in (
        (PREDICT, f'{{"data": {{"ndarray": [[1, 2, 3, 4]]}}, "meta": {{"tags": {tags}}}}}'),
        ("/api/v1.0/feedback", f'{{"request": {{"meta": {{"tags": {tags}}}}}, "reward": 1}}'),
    ):
        response = server.post(data=body, path=path)
        assert response.status_code == 400, response.text
        assert "levels deep" in message(response)


# ---- an unwritable log file -------------------------------------------------------------------

DROPPED = "primehub_log_lines_dropped_total"


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=60).status_code == 200
    except requests.RequestException:
        return False


def dropped(server) -> float:
    return metric_value(server.metrics(), DROPPED)


def test_full_log_file_drops_counted_lines_and_reports_them_when_writable(iris, tmp_path):
    """RLIMIT_FSIZE makes every write past the file's size fail (EFBIG), as a full disk does."""
    X, model = iris
    bundle = package(model, tmp_path / "bundle", name=MODEL)
    server = ModelServer.on_port(bundle, tmp_path / "server", "--deployment", "iris-log")
    try:
        assert dropped(server) == 0
        size = server.log_file.stat().st_size
        _, hard = resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (size, hard))
        for _ in range(20):  # each answer is one access log line the file cannot take
            response = server.post(data=seldon_body(X))
            assert response.status_code == 200, response.text
            assert np.allclose(response.json()["data"]["ndarray"], model.predict_proba(X[:3]))
        wait_for(lambda: dropped(server) >= 20, "20 dropped lines counted on /metrics")
        samples = server.metrics()
        assert any(
            name == DROPPED and labels.get("deployment_name") == "iris-log"
            for name, labels, _ in samples
        )
        assert server.log_file.stat().st_size == size  # nothing got through, not even a part

        resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (hard, hard))
        notice = wait_for(
            lambda: re.search(
                r"log: (\d+) lines were dropped because the log file could not "
                r"be written \(File too large\)",
                server.log(),
            ),
            "the line reporting the dropped lines",
        )
        assert int(notice.group(1)) == dropped(server) >= 20
        request_id = server.post(data=seldon_body(X)).headers["Request-ID"]
        wait_for(lambda: request_id in server.log(), "logging to resume")
        assert server.log().index(notice.group(0)) < server.log().index(request_id)
    finally:
        assert server.stop() == 0
        server.kill()


def test_log_file_on_a_full_device_keeps_the_server_serving(iris, tmp_path):
    """/dev/full answers every write with ENOSPC: the server serves and counts what it loses.

    Two workers: the supervisor counts, whichever worker answers /metrics reports the count.
    """
    X, model = iris
    bundle = package(model, tmp_path / "bundle", name=MODEL)
    server = ModelServer(bundle, tmp_path / "server", workers=2)
    index = server.args.index("--log-file")
    server.args[index + 1] = "/dev/full"
    server.log_file = tmp_path / "no-log"  # what log() reads on failure (never /dev/full)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    server.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    server.args += ["--fd", str(listener.fileno())]
    server.pass_fds = (listener.fileno(),)
    try:
        server._start()
        listener.close()
        # The socket listens before the model is loaded: the first ping waits for the load.
        wait_for(lambda: answers(server.url + "/health/ping"), "the server to answer")
        before = dropped(server)
        assert before > 0  # the startup lines were lost already
        for _ in range(10):
            response = server.post(data=seldon_body(X))
            assert response.status_code == 200, response.text
        wait_for(lambda: dropped(server) >= before + 10, "10 more dropped lines")
        assert server.stop() == 0
    finally:
        listener.close()
        server.kill()


def test_request_log_write_failures_are_counted(iris, tmp_path):
    """With every file at its size limit, predictions go on and lost records are counted."""
    X, model = iris
    bundle = package(model, tmp_path / "bundle", name=MODEL)
    requests_dir = tmp_path / "requests"
    server = ModelServer.on_port(
        bundle,
        tmp_path / "server",
        "--request-log-dir",
        str(requests_dir),
        "--request-log-fsync-seconds",
        "0",
    )
    try:
        assert server.post(data=seldon_body(X)).status_code == 200
        logged = wait_for(lambda: list(requests_dir.rglob("*.jsonl")), "the first record")
        size = logged[0].stat().st_size
        _, hard = resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (1, hard))
        for _ in range(5):
            assert server.post(data=seldon_body(X)).status_code == 200
        name = "primehub_request_log_records_dropped_total"
        wait_for(lambda: metric_value(server.metrics(), name) >= 5, "5 dropped records on /metrics")
        assert logged[0].stat().st_size == size
        resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (hard, hard))
    finally:
        assert server.stop() == 0
        server.kill()
