"""An MLflow model with a column signature (text, booleans) packaged as a table and served."""

from __future__ import annotations

import numpy as np
import pytest

from primehub_jupyter.serving.packaging import package

from .helpers import descriptor, serve

pd = pytest.importorskip("pandas")
mlflow = pytest.importorskip("mlflow", reason="MLflow is not installed")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, 60),
            "city": rng.choice(["Paris", "Rome"], 60).astype(object),
            "member": rng.choice([True, False], 60),
        }
    )
    y = (frame["age"] > 40).astype(int)
    prep = ColumnTransformer(
        [("city", OneHotEncoder(handle_unknown="ignore"), ["city"])], remainder="passthrough"
    )
    pipe = Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=500))]).fit(frame, y)
    directory = tmp_path_factory.mktemp("mlflow") / "model"
    mlflow.sklearn.save_model(
        pipe,
        str(directory),
        signature=infer_signature(frame, pipe.predict(frame)),
        serialization_format="cloudpickle",
    )
    return frame, pipe, directory


@pytest.fixture(scope="module")
def served(fitted, tmp_path_factory):
    _, _, directory = fitted
    bundle = package(directory, tmp_path_factory.mktemp("mlflow-bundle") / "b")
    for server in serve(bundle, tmp_path_factory.mktemp("mlflow-server")):
        yield bundle, server


def test_the_column_signature_becomes_a_table(served):
    bundle, _ = served
    signature = descriptor(bundle)["signature"]
    assert signature["contentType"] == "pd"
    assert [(s["name"], s["dtype"]) for s in signature["inputs"]] == [
        ("age", "int64"),
        ("city", "object"),
        ("member", "bool"),
    ]


def test_mixed_rows_equal_the_model(fitted, served):
    frame, pipe, _ = fitted
    _, server = served
    rows = [[30, "Rome", True], [55, "Paris", False], [41, "Lima", True]]
    answer = server.post({"data": {"names": ["age", "city", "member"], "ndarray": rows}})
    assert answer.status_code == 200, answer.text
    expected = pipe.predict(pd.DataFrame(rows, columns=frame.columns))
    assert np.array_equal(answer.json()["data"]["ndarray"], expected)
    bad = server.post({"data": {"names": ["age", "city", "member"], "ndarray": [[1, 2, True]]}})
    assert bad.status_code == 400 and "'city'" in bad.json()["message"]


def test_primehub_deploy_package_takes_records_and_its_test_passes(fitted, tmp_path):
    import joblib
    from click.testing import CliRunner

    from primehub_jupyter.cli import cli

    _, pipe, _ = fitted
    model_file = tmp_path / "members.joblib"
    joblib.dump(pipe, model_file)
    out = tmp_path / "members"
    sample = '[{"age": 30, "city": "Rome", "member": true}]'
    result = CliRunner().invoke(
        cli, ["package", str(model_file), "-o", str(out), "--sample", sample]
    )
    assert result.exit_code == 0, result.output
    doc = descriptor(out)
    assert doc["signature"]["contentType"] == "pd"
    assert doc["sample"]["request"]["data"] == {
        "names": ["age", "city", "member"],
        "ndarray": [[30, "Rome", True]],
    }
    checked = CliRunner().invoke(cli, ["package", "test", str(out)])
    assert checked.exit_code == 0, checked.output


def test_a_null_in_an_integer_column_is_a_400(served):
    _, server = served
    answer = server.post(
        {"data": {"names": ["age", "city", "member"], "ndarray": [[None, "Rome", True]]}}
    )
    assert answer.status_code == 400, answer.text
    assert "'age'" in answer.json()["message"]
