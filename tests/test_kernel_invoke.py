"""A pipeline fitted on a mixed-type DataFrame, deployed on the local engine and invoked from
Python (`Deployment.invoke`), from `%phdeploy invoke` and with the example every view shows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from primehub_jupyter.cli.output import example
from primehub_jupyter.kernel.client import Client
from primehub_jupyter.kernel.deployment import Deployment, from_response, to_payload
from primehub_jupyter.kernel.display import esc
from primehub_jupyter.kernel.examples import NO_SAMPLE, curl_example
from primehub_jupyter.serving.packaging import package

from .conftest import GROUPS, OWNER
from .serve_helpers import Serve, deployment_spec

pd = pytest.importorskip("pandas")
pytest.importorskip("sklearn")

COLUMNS = ["age", "income", "city", "tier", "member"]


def _frame(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),
            "income": rng.normal(5000, 1000, n),
            "city": rng.choice(["Paris", "Rome", "Oslo"], n),
            "tier": pd.Categorical(rng.choice(["gold", "silver"], n)),
            "member": rng.choice([True, False], n),
        },
        index=[f"r{i}" for i in range(n)],  # not 0..n-1: the answer must keep it
    )
    frame.loc["r3", "income"] = np.nan
    return frame


@pytest.fixture(scope="module")
def fitted():
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = _frame()
    y = np.where(frame["age"] > 45, "senior", "junior")
    prep = ColumnTransformer(
        [
            ("num", Pipeline([("fill", SimpleImputer()), ("scale", StandardScaler())]),
             ["age", "income"]),
            ("city", OneHotEncoder(handle_unknown="ignore"), ["city"]),
            ("tier", OneHotEncoder(), ["tier"]),
            ("member", "passthrough", ["member"]),
        ]
    )  # fmt: skip
    pipe = Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=500))]).fit(frame, y)
    return frame, pipe


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    server = Serve.with_groups(tmp_path_factory.mktemp("invoke"), GROUPS, OWNER)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def deployed(served: Serve, fitted, tmp_path_factory: pytest.TempPathFactory):
    """Two deployments of the pipeline: predict_proba (created through the API) and predict
    (created with `primehub-deploy create --wait`, whose output is kept)."""
    frame, pipe = fitted
    root = tmp_path_factory.mktemp("bundles")
    proba = package(pipe, root / "proba", name="credit", sample_input=frame.head(2))
    labels = package(
        pipe, root / "labels", name="credit", sample_input=frame.head(2), predict_method="predict"
    )
    client = Client(served.url, served.token)
    first = Deployment(client.create(deployment_spec(proba)), client)
    spec_file = root / "labels.yaml"
    spec_file.write_text(yaml.safe_dump(deployment_spec(labels, displayName="Credit labels")))
    created = served.cli("create", "-f", str(spec_file), "--wait")
    first.wait(progress=False)
    listed = {d["spec"]["displayName"]: d for d in client.list()}
    second = Deployment(listed["Credit labels"], client)
    yield {"proba": first, "labels": second, "cli": created.stdout, "bundle": proba}
    for deployment in (first, second):
        deployment.delete()


def _sample(bundle: Path) -> dict:
    return yaml.safe_load((bundle / "bundle.yaml").read_text())["sample"]["request"]


def test_invoke_with_a_dataframe_answers_the_pipelines_own_predictions(deployed, fitted):
    frame, pipe = fitted
    rows = frame.loc[["r3", "r0", "r7"]]  # r3 holds a missing income
    assert rows["income"].isna().any()

    got = deployed["proba"].invoke(rows)
    assert isinstance(got, pd.DataFrame)
    assert list(got.columns) == [str(c) for c in pipe.classes_] == ["junior", "senior"]
    assert list(got.index) == ["r3", "r0", "r7"]
    assert np.allclose(got.to_numpy(dtype=float), pipe.predict_proba(rows))

    # predict answers one label per row: no column names, so a numpy array as before.
    labels = deployed["labels"].invoke(rows)
    assert isinstance(labels, np.ndarray)
    assert labels.tolist() == pipe.predict(rows).tolist()

    # ODAHU's route answers the same, its columns named by the classes.
    odahu = deployed["proba"].invoke(rows, path="api/model/invoke")
    assert list(odahu.columns) == ["junior", "senior"]
    assert np.allclose(odahu.to_numpy(dtype=float), pipe.predict_proba(rows))

    # Plain rows (in the signature's column order) keep answering numpy.
    plain = to_payload(rows)["data"]["ndarray"]
    assert isinstance(deployed["proba"].invoke(plain), np.ndarray)
    assert np.allclose(deployed["proba"].invoke(plain), pipe.predict_proba(rows))


def test_magic_invoke_evaluates_a_dataframe_expression(deployed, fitted, served, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    from primehub_jupyter.kernel.magics import DeploymentMagics

    frame, pipe = fitted
    monkeypatch.setenv("PRIMEHUB_API_URL", served.url)
    monkeypatch.setenv("PRIMEHUB_API_TOKEN", served.token)
    shell = InteractiveShell.instance()
    shell.register_magics(DeploymentMagics(shell))
    shell.user_ns["df"] = frame
    target = deployed["proba"].id
    # The expression as typed (quotes and spaces kept), options after it.
    cell = shell.run_cell(f"got = %phdeploy invoke {target} df[df.city == 'Paris'].head(3)")
    assert cell.error_in_exec is None and cell.error_before_exec is None
    expected = frame[frame.city == "Paris"].head(3)
    got = shell.user_ns["got"]
    assert list(got.columns) == ["junior", "senior"] and list(got.index) == list(expected.index)
    assert np.allclose(got.to_numpy(dtype=float), pipe.predict_proba(expected))

    # Displayed as the frame (an HTML table in Jupyter) when it is the cell's value.
    shown = shell.run_cell(f"%phdeploy invoke {target} df.head(2)")
    assert isinstance(shown.result, pd.DataFrame) and "<table" in shown.result._repr_html_()
    raw = shell.run_cell(f"%phdeploy invoke {target} df.head(1) --raw").result
    assert raw["data"]["names"] == ["junior", "senior"]


def test_every_example_is_the_bundles_sample_rows_with_their_names(deployed):
    deployment = deployed["proba"].refresh()
    sample = _sample(deployed["bundle"])
    assert sample["data"]["names"] == COLUMNS
    assert deployment.status["sampleRequest"] == sample  # the local engine fills it

    body = json.dumps(sample)
    curl = deployment.curl_example()
    assert curl == curl_example(deployment.data) == example(deployment.data)
    assert body in curl and NO_SAMPLE not in curl
    assert esc(curl) in deployment._repr_html_()  # the card

    # `primehub-deploy create --wait` prints the same example for its deployment.
    labels = deployed["labels"].refresh()
    assert labels.status["sampleRequest"]["data"]["names"] == COLUMNS
    assert "Try it:\n" + curl_example(labels.data) in deployed["cli"]

    # The sample is a request the model takes.
    assert isinstance(deployment.invoke(sample), np.ndarray)


def test_without_a_sample_the_example_says_so():
    data = {
        "spec": {"endpoint": {"accessType": "private"}},
        "status": {"endpoint": "http://gw/deployment/x/api/v1.0/predictions"},
    }
    curl = curl_example(data)
    assert curl.splitlines()[0] == f"# {NO_SAMPLE}"
    assert "-d '<request body>'" in curl and "ndarray" not in curl
    assert "-u '<client-name>:<client-token>'" in curl


def test_payload_keeps_names_and_types_and_answers_name_columns():
    frame = pd.DataFrame(
        {
            "n": [1, 2],
            "x": [0.5, np.nan],
            "s": ["a", None],
            "c": pd.Categorical(["u", "v"]),
            "b": [True, False],
            "d": pd.to_datetime(["2024-01-31", None]),
        }
    )
    payload = to_payload(frame)
    assert payload == {
        "data": {
            "names": ["n", "x", "s", "c", "b", "d"],
            "ndarray": [[1, 0.5, "a", "u", True, "2024-01-31T00:00:00"],
                        [2, None, None, "v", False, None]],
        }
    }  # fmt: skip
    json.dumps(payload, allow_nan=False)  # strict JSON: no NaN
    odahu = to_payload(frame, "api/model/invoke")
    assert odahu == {"columns": payload["data"]["names"], "data": payload["data"]["ndarray"]}
    assert to_payload([1, 2], "/api/model/invoke") == {"data": [[1, 2]]}

    named = {"data": {"names": ["no", "yes"], "ndarray": [[0.2, 0.8], [0.6, 0.4]]}}
    got = from_response(named, frame)
    assert list(got.columns) == ["no", "yes"] and list(got.index) == [0, 1]
    assert isinstance(from_response(named, [[1]]), np.ndarray)  # a list in: numpy out
    positional = {"data": {"names": ["t:0", "t:1"], "ndarray": [[1, 2], [3, 4]]}}
    assert isinstance(from_response(positional, frame), np.ndarray)
    odahu = {"prediction": [[0.2, 0.8], [0.6, 0.4]], "columns": ["no", "yes"]}
    assert list(from_response(odahu, frame).columns) == ["no", "yes"]
