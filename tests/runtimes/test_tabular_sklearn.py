"""A scikit-learn Pipeline fitted on a mixed-type DataFrame, served over every protocol."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from primehub_jupyter.serving.packaging import package

from .helpers import descriptor, serve

pd = pytest.importorskip("pandas")

COLUMNS = ["age", "income", "city", "tier", "member", "joined"]


def _frame(n: int = 80) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),
            "income": rng.normal(5000, 1000, n),
            "city": rng.choice(["Paris", "Rome", "Oslo"], n),
            "tier": pd.Categorical(rng.choice(["gold", "silver"], n)),
            "member": rng.choice([True, False], n),
            "joined": pd.to_datetime("2020-01-01") + pd.to_timedelta(rng.integers(0, 900, n), "D"),
        }
    )
    frame.loc[3, "income"] = np.nan
    return frame


def days(frame):
    """Days since 2020 of datetime columns (pickled by reference: the server imports it)."""
    return (frame - pd.Timestamp("2020-01-01")).apply(lambda c: c.dt.days).to_numpy(float)


@pytest.fixture(scope="module")
def fitted():
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    frame = _frame()
    y = np.where(frame["age"] > 45, "senior", "junior")
    numbers = Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())])
    prep = ColumnTransformer(
        [
            ("num", numbers, ["age", "income"]),
            ("city", OneHotEncoder(), ["city"]),  # refuses unknown cities
            ("tier", OneHotEncoder(handle_unknown="ignore"), ["tier"]),
            ("member", "passthrough", ["member"]),
            ("joined", FunctionTransformer(days), ["joined"]),
        ]
    )
    pipe = Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=500))]).fit(frame, y)
    return frame, pipe


@pytest.fixture(scope="module")
def bundle(fitted, tmp_path_factory):
    frame, pipe = fitted
    return package(pipe, tmp_path_factory.mktemp("tabular") / "credit", sample_input=frame.head(2))


@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory):
    yield from serve(bundle, tmp_path_factory.mktemp("tabular-server"))


def _rows(frame: pd.DataFrame) -> list[list]:
    rows = []
    for row in frame.itertuples(index=False, name=None):
        rows.append(
            [
                None if (isinstance(v, float) and math.isnan(v)) else v
                for v in (x.isoformat() if isinstance(x, pd.Timestamp) else x for x in row)
            ]
        )
    return [[v.item() if isinstance(v, np.generic) else v for v in row] for row in rows]


def test_the_signature_records_each_column(bundle):
    signature = descriptor(bundle)["signature"]
    assert signature["contentType"] == "pd"
    inputs = {spec["name"]: spec for spec in signature["inputs"]}
    assert [spec["name"] for spec in signature["inputs"]] == COLUMNS
    assert inputs["age"]["datatype"] == "INT64" and inputs["age"]["shape"] == [-1]
    assert inputs["income"]["datatype"] == "FP64"
    assert inputs["city"]["datatype"] == "BYTES"
    assert inputs["city"]["categories"] == ["Oslo", "Paris", "Rome"]
    assert inputs["tier"]["dtype"] == "category"
    assert inputs["tier"]["categories"] == ["gold", "silver"]
    assert inputs["member"]["datatype"] == "BOOL"
    assert inputs["joined"]["dtype"].startswith("datetime64")
    sample = descriptor(bundle)["sample"]["request"]["data"]
    assert sample["names"] == COLUMNS
    assert len(sample["ndarray"]) == 2


def test_without_a_sample_one_row_is_synthesized_from_the_encoders(fitted, tmp_path):
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame, _ = fitted
    y = frame["member"].to_numpy()
    prep = ColumnTransformer(
        [("num", "passthrough", ["age", "income"]), ("cat", OneHotEncoder(), ["city"])]
    )
    data = frame[["age", "income", "city"]].fillna(0)
    pipe = Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=500))]).fit(data, y)
    bundle = package(pipe, tmp_path / "b")
    doc = descriptor(bundle)
    assert doc["signature"]["contentType"] == "pd"
    row = doc["sample"]["request"]["data"]["ndarray"][0]
    assert row[2] in ("Oslo", "Paris", "Rome")  # a city the encoder knows


def test_seldon_names_and_mixed_ndarray_equal_the_model(fitted, server):
    frame, pipe = fitted
    rows = frame.iloc[:8]
    answer = server.post({"data": {"names": COLUMNS, "ndarray": _rows(rows)}})
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert data["names"] == ["junior", "senior"]
    assert np.allclose(data["ndarray"], pipe.predict_proba(rows), atol=1e-9)


def test_columns_may_come_in_any_order_and_nan_is_null(fitted, server):
    frame, pipe = fitted
    rows = frame.iloc[[3]]  # income is NaN: sent as null, imputed by the model
    order = list(reversed(COLUMNS))
    answer = server.post({"data": {"names": order, "ndarray": _rows(rows[order])}})
    assert answer.status_code == 200, answer.text
    assert np.allclose(answer.json()["data"]["ndarray"], pipe.predict_proba(rows), atol=1e-9)


def test_json_data_records(fitted, server):
    frame, pipe = fitted
    rows = frame.iloc[:3]
    records = [dict(zip(COLUMNS, row, strict=True)) for row in _rows(rows)]
    answer = server.post({"jsonData": records})
    assert answer.status_code == 200, answer.text
    assert np.allclose(answer.json()["data"]["ndarray"], pipe.predict_proba(rows), atol=1e-9)


def test_an_unseen_category_the_encoder_ignores_is_served(fitted, server):
    frame, pipe = fitted
    rows = frame.iloc[:1].copy()
    rows["tier"] = pd.Categorical(["platinum"], categories=["gold", "silver", "platinum"])
    answer = server.post({"data": {"names": COLUMNS, "ndarray": _rows(rows)}})
    assert answer.status_code == 200, answer.text
    assert np.allclose(answer.json()["data"]["ndarray"], pipe.predict_proba(rows), atol=1e-9)


def test_odahu_invoke(fitted, server):
    frame, pipe = fitted
    rows = frame.iloc[:4]
    answer = server.post({"columns": COLUMNS, "data": _rows(rows)}, path="/api/model/invoke")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["columns"] == ["junior", "senior"]
    assert np.allclose(body["prediction"], pipe.predict_proba(rows), atol=1e-9)


def _v2_pandas(rows: pd.DataFrame) -> dict:
    """What MLServer's PandasCodec.encode_request(df) sends as JSON (one input per column)."""
    inputs = []
    for name, row_values in zip(COLUMNS, zip(*_rows(rows), strict=True), strict=True):
        values = list(row_values)
        spec = {"name": name, "shape": [len(values), 1], "data": values}
        if name in ("city", "tier", "joined"):
            spec.update(datatype="BYTES", parameters={"content_type": "str"})
        elif name == "member":
            spec["datatype"] = "BOOL"
        elif name == "age":
            spec["datatype"] = "INT64"
        else:
            spec["datatype"] = "FP64"
        inputs.append(spec)
    return {"parameters": {"content_type": "pd"}, "inputs": inputs}


def test_v2_pandas_encoding(fitted, server):
    frame, pipe = fitted
    rows = frame.iloc[:5]  # row 3 has a null income
    answer = server.post(_v2_pandas(rows), path="/v2/models/credit/infer")
    assert answer.status_code == 200, answer.text
    output = answer.json()["outputs"][0]
    got = np.asarray(output["data"]).reshape(output["shape"])
    assert np.allclose(got, pipe.predict_proba(rows), atol=1e-9)


@pytest.mark.parametrize(
    ("change", "column"),
    [
        (lambda d: d.pop("city"), "city"),
        (lambda d: d.update(colour=["red"]), "colour"),
        (lambda d: d.update(age=["old"]), "age"),
        (lambda d: d.update(member=["yes"]), "member"),
        (lambda d: d.update(joined=["not a date"]), "joined"),
        (lambda d: d.update(city=["Lima"]), "city"),  # OneHotEncoder() refuses it
    ],
    ids=["missing", "unknown", "wrong-int", "wrong-bool", "wrong-date", "refused-category"],
)
def test_bad_input_is_a_400_naming_the_column(fitted, server, change, column):
    frame, _ = fitted
    record = {name: [value] for name, value in zip(COLUMNS, _rows(frame.iloc[:1])[0], strict=True)}
    change(record)
    names = list(record)
    rows = [[record[n][0] for n in names]]
    for path, payload in (
        ("/api/v1.0/predictions", {"data": {"names": names, "ndarray": rows}}),
        ("/api/model/invoke", {"columns": names, "data": rows}),
        (
            "/v2/models/credit/infer",
            {
                "parameters": {"content_type": "pd"},
                "inputs": [
                    {"name": n, "shape": [1, 1], "datatype": "BYTES", "data": record[n]}
                    for n in names
                ],
            },
        ),
    ):
        answer = server.post(payload, path=path)
        assert answer.status_code == 400, (path, answer.text)
        body = answer.json()
        message = body.get("message") or body.get("error")
        assert repr(column) in message, (path, message)


# --- MLServer's own PandasCodec, from its own virtual environment -------------------------------

MLSERVER_PACKAGES = ["mlserver==1.7.1", "pandas<3"]  # 1.7.1 cannot encode pandas 3 text columns
MLSERVER_VENV = Path(os.environ.get("PRIMEHUB_TEST_VENVS", "/tmp/primehub-test-venvs")) / "mlserver"
# Strings as object columns and datetimes as ISO text: MLServer's codec has no datatype for
# pandas categories or datetime64 (KeyError), so that is how its users send them.
ENCODE_SCRIPT = r"""
import json, sys
import pandas as pd
from mlserver.codecs import PandasCodec
frame = pd.DataFrame(json.loads(sys.stdin.read()))
frame["income"] = frame["income"].astype("float64")
print(PandasCodec.encode_request(frame).model_dump_json())
"""


@pytest.fixture(scope="session")
def mlserver_python():
    """A venv with mlserver (never the project's own venv: it pins its own libraries)."""
    python = MLSERVER_VENV / "bin" / "python"
    marker = MLSERVER_VENV / ".installed"
    wanted = " ".join(MLSERVER_PACKAGES)
    if not marker.exists() or marker.read_text().strip() != wanted:
        shutil.rmtree(MLSERVER_VENV, ignore_errors=True)
        MLSERVER_VENV.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        done = subprocess.run(
            [*pip, *MLSERVER_PACKAGES], capture_output=True, text=True, timeout=900
        )
        if done.returncode != 0:
            output = done.stdout + done.stderr
            unreachable = ("NewConnectionError", "Could not fetch URL", "Temporary failure in name")
            if any(word in output for word in unreachable):
                pytest.skip(f"the package index is unreachable, cannot install mlserver: {output}")
            pytest.fail(f"pip install mlserver failed:\n{output[-3000:]}")
        marker.write_text(wanted + "\n")
    return python


@pytest.mark.slow
def test_mlserver_pandas_codec_requests_work_unchanged(fitted, server, mlserver_python):
    frame, pipe = fitted
    rows = frame.iloc[:6]  # row 3: income is NaN, which the codec sends as null
    columns = {name: [row[i] for row in _rows(rows)] for i, name in enumerate(COLUMNS)}
    done = subprocess.run(
        [str(mlserver_python), "-c", ENCODE_SCRIPT],
        input=json.dumps(columns),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    request = json.loads(done.stdout)
    assert request["parameters"] == {"content_type": "pd"}
    assert [i["datatype"] for i in request["inputs"]] == [
        "INT64",
        "FP64",
        "BYTES",
        "BYTES",
        "BOOL",
        "BYTES",
    ]
    answer = server.post(request, path="/v2/models/credit/infer")
    assert answer.status_code == 200, answer.text
    output = answer.json()["outputs"][0]
    got = np.asarray(output["data"]).reshape(output["shape"])
    assert np.allclose(got, pipe.predict_proba(rows), atol=1e-9)


def test_rows_of_mixed_values_are_a_sample_too(fitted, tmp_path):
    frame, pipe = fitted
    bundle = package(pipe, tmp_path / "rows", sample_input=_rows(frame.iloc[:2]))
    doc = descriptor(bundle)
    assert doc["signature"]["contentType"] == "pd"
    assert doc["sample"]["request"]["data"]["ndarray"] == _rows(frame.iloc[:2])


def test_odahu_invoke_on_a_numeric_model(tmp_path):
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    bundle = package(model, tmp_path / "iris")
    assert "contentType" not in descriptor(bundle)["signature"]  # numbers stay a tensor
    for server in serve(bundle, tmp_path / "server"):
        rows = X.iloc[:3]
        answer = server.post(
            {"columns": list(X.columns), "data": rows.to_numpy().tolist()},
            path="/api/model/invoke",
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["columns"] == ["0", "1", "2"]
        assert np.allclose(answer.json()["prediction"], model.predict_proba(rows))
        bad = server.post({"columns": ["a"], "data": [["x"]]}, path="/api/model/invoke")
        assert bad.status_code == 400, bad.text


def test_v2_metadata_marks_the_table(server):
    import requests

    document = requests.get(server.url + "/v2/models/credit", timeout=30).json()
    assert document["parameters"] == {"content_type": "pd"}
    assert [(i["name"], i["datatype"]) for i in document["inputs"]][:3] == [
        ("age", "INT64"),
        ("income", "FP64"),
        ("city", "BYTES"),
    ]


def test_v2_binary_columns(fitted, server):
    import struct

    import requests

    frame, pipe = fitted
    rows = frame.iloc[:2]
    request = _v2_pandas(rows)
    blobs = []
    for spec in request["inputs"]:
        values = spec.pop("data")
        if spec["datatype"] == "BYTES":
            raw = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
        elif spec["datatype"] == "BOOL":
            raw = np.asarray(values, dtype=np.bool_).tobytes()
        elif spec["datatype"] == "INT64":
            raw = np.asarray(values, dtype="<i8").tobytes()
        else:
            raw = np.asarray(values, dtype="<f8").tobytes()
        spec["parameters"] = {**spec.get("parameters", {}), "binary_data_size": len(raw)}
        blobs.append(raw)
    header = json.dumps(request).encode()
    answer = requests.post(
        server.url + "/v2/models/credit/infer",
        data=header + b"".join(blobs),
        headers={"Inference-Header-Content-Length": str(len(header))},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    output = answer.json()["outputs"][0]
    got = np.asarray(output["data"]).reshape(output["shape"])
    assert np.allclose(got, pipe.predict_proba(rows), atol=1e-9)


def test_a_null_the_model_cannot_take_is_a_400_naming_the_column(fitted, server):
    frame, _ = fitted
    row = _rows(frame.iloc[:1])[0]
    row[COLUMNS.index("joined")] = None  # NaT -> NaN days, which LogisticRegression refuses
    answer = server.post({"data": {"names": COLUMNS, "ndarray": [row]}})
    assert answer.status_code == 400, answer.text
    assert "'joined'" in answer.json()["message"]


def test_seldon_metadata_names_the_columns(server):
    import requests

    document = requests.get(server.url + "/api/v1.0/metadata", timeout=30).json()
    assert document["inputs"] == [
        {"messagetype": "tensor", "schema": {"names": COLUMNS, "shape": [len(COLUMNS)]}}
    ]
