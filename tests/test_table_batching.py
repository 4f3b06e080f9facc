"""Adaptive batching of table requests: DataFrames of concurrent callers share a model call."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from primehub_jupyter.serving.packaging import package

try:
    from tests.serving_helpers import ModelServer, metric_value
except ImportError:  # tests/ is on sys.path instead of the repository root
    from serving_helpers import ModelServer, metric_value  # type: ignore[no-redef]

pd = pytest.importorskip("pandas")

INFER = "/v2/models/credit/infer"
BATCH = "primehub_model_server_batch_rows"
CALLERS = 12


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),
            "income": rng.normal(5000, 1000, n).round(2),
            "city": rng.choice(["Paris", "Rome", "Oslo"], n),
            "member": rng.choice([True, False], n),
        }
    )


def _v2(row: pd.Series) -> dict:
    """One row in MLServer's pandas encoding: an input per column, BYTES for text."""
    types = {"age": "INT64", "income": "FP64", "city": "BYTES", "member": "BOOL"}
    inputs = []
    for name, datatype in types.items():
        value = row[name]
        entry = {"name": name, "shape": [1, 1], "datatype": datatype, "data": [value]}
        if datatype == "BYTES":
            entry["parameters"] = {"content_type": "str"}
        else:
            entry["data"] = [value.item()]
        inputs.append(entry)
    return {"parameters": {"content_type": "pd"}, "inputs": inputs}


@pytest.fixture(scope="module")
def fitted():
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = _frame(120, 3)
    y = (frame["age"] > 45).to_numpy()
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), ["age", "income"]),
            ("city", OneHotEncoder(), ["city"]),  # refuses unknown cities
            ("member", "passthrough", ["member"]),
        ]
    )
    pipe = Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=500))]).fit(frame, y)
    return frame, pipe


@pytest.fixture(scope="module")
def server(fitted, tmp_path_factory):
    frame, pipe = fitted
    bundle = package(pipe, tmp_path_factory.mktemp("b") / "credit", sample_input=frame.head(2))
    # A long wait for company, so callers released together land in one batch.
    server = ModelServer.on_port(
        bundle,
        tmp_path_factory.mktemp("s"),
        "--max-batch-size",
        "64",
        "--max-batch-wait-ms",
        "200",
    )
    try:
        yield server
        assert server.stop() == 0
    finally:
        server.kill()


def _together(server: ModelServer, bodies: list[dict]) -> list:
    barrier = threading.Barrier(len(bodies))

    def one(body: dict):
        barrier.wait()
        return server.post(body, path=INFER)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(one, bodies))


def test_concurrent_table_requests_share_model_calls_and_get_their_own_rows(fitted, server):
    _, pipe = fitted
    rows = _frame(CALLERS, 11)
    answers = _together(server, [_v2(rows.iloc[i]) for i in range(CALLERS)])
    for i, answer in enumerate(answers):
        assert answer.status_code == 200, answer.text
        got = answer.json()["outputs"][0]["data"]
        assert np.allclose(got, pipe.predict_proba(rows.iloc[[i]]).ravel(), atol=1e-9)
    samples = server.metrics()
    assert metric_value(samples, BATCH + "_sum") >= CALLERS
    assert metric_value(samples, BATCH + "_count") < metric_value(samples, BATCH + "_sum")


def test_one_callers_unknown_category_fails_only_that_caller(fitted, server):
    _, pipe = fitted
    rows = _frame(CALLERS, 12)
    bad = {2, 7}
    bodies = []
    for i in range(CALLERS):
        body = _v2(rows.iloc[i])
        if i in bad:
            body["inputs"][2]["data"] = ["Atlantis"]
        bodies.append(body)
    answers = _together(server, bodies)
    for i, answer in enumerate(answers):
        if i in bad:
            assert answer.status_code == 400, answer.text
            message = answer.json()["error"]
            assert "'city'" in message and "Atlantis" in message
        else:
            assert answer.status_code == 200, answer.text
            got = answer.json()["outputs"][0]["data"]
            assert np.allclose(got, pipe.predict_proba(rows.iloc[[i]]).ravel(), atol=1e-9)
