"""XGBoost and LightGBM fitted on DataFrames with pandas categoricals, packaged and served."""

from __future__ import annotations

import numpy as np
import pytest

from primehub_jupyter.serving.errors import PackagingError
from primehub_jupyter.serving.packaging import package

from .helpers import descriptor, serve

pd = pytest.importorskip("pandas")
COLUMNS = ["age", "income", "city", "member"]


def _frame(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),
            "income": rng.normal(5000, 1000, n),
            "city": pd.Categorical(rng.choice(["Paris", "Rome", "Oslo"], n)),
            "member": rng.choice([True, False], n),
        }
    )
    frame.loc[3, "income"] = np.nan
    return frame


def _rows(frame: pd.DataFrame) -> list[list]:
    return [
        [
            None if (isinstance(v, float) and np.isnan(v)) else getattr(v, "item", lambda v=v: v)()
            for v in row
        ]
        for row in frame.astype(object).itertuples(index=False, name=None)
    ]


def _model(framework: str):
    if framework == "xgboost":
        xgboost = pytest.importorskip("xgboost")
        return xgboost.XGBClassifier(n_estimators=8, enable_categorical=True, tree_method="hist")
    lightgbm = pytest.importorskip("lightgbm")
    return lightgbm.LGBMClassifier(n_estimators=8, verbose=-1)


@pytest.fixture(scope="module", params=["xgboost", "lightgbm"])
def served(request, tmp_path_factory):
    frame = _frame()
    y = ((frame["age"] > 40) ^ (frame["city"] == "Rome")).astype(int)
    model = _model(request.param).fit(frame, y)
    bundle = package(
        model, tmp_path_factory.mktemp(request.param) / "credit", sample_input=frame.head(2)
    )
    for server in serve(bundle, tmp_path_factory.mktemp(f"{request.param}-server")):
        yield frame, model, bundle, server


def test_the_signature_keeps_the_categories(served):
    _, _, bundle, _ = served
    signature = descriptor(bundle)["signature"]
    assert signature["contentType"] == "pd"
    city = signature["inputs"][2]
    assert city == {
        "name": "city",
        "datatype": "BYTES",
        "shape": [-1],
        "dtype": "category",
        "categories": ["Oslo", "Paris", "Rome"],
    }


def test_seldon_odahu_and_v2_equal_the_model(served):
    frame, model, _, server = served
    rows = frame.iloc[:6]  # row 3: income is null
    expected = model.predict_proba(rows)
    seldon = server.post({"data": {"names": COLUMNS, "ndarray": _rows(rows)}})
    assert seldon.status_code == 200, seldon.text
    assert np.allclose(seldon.json()["data"]["ndarray"], expected, atol=1e-6)
    invoke = server.post({"columns": COLUMNS, "data": _rows(rows)}, path="/api/model/invoke")
    assert invoke.status_code == 200, invoke.text
    assert np.allclose(invoke.json()["prediction"], expected, atol=1e-6)
    inputs = [
        {"name": name, "shape": [len(rows), 1], "datatype": datatype, "data": list(values)}
        for name, datatype, values in zip(
            COLUMNS,
            ["INT64", "FP64", "BYTES", "BOOL"],
            zip(*_rows(rows), strict=True),
            strict=True,
        )
    ]
    v2 = server.post(
        {"parameters": {"content_type": "pd"}, "inputs": inputs}, path="/v2/models/credit/infer"
    )
    assert v2.status_code == 200, v2.text
    output = v2.json()["outputs"][0]
    assert np.allclose(np.reshape(output["data"], output["shape"]), expected, atol=1e-6)


def test_an_unseen_category_is_taken_as_the_model_takes_it(served):
    frame, model, _, server = served
    rows = frame.iloc[:1].copy()
    answer = server.post(
        {"data": {"names": COLUMNS, "ndarray": [[*_rows(rows)[0][:2], "Lima", _rows(rows)[0][3]]]}}
    )
    assert answer.status_code == 200, answer.text
    rows["city"] = pd.Categorical(["Lima"], categories=["Oslo", "Paris", "Rome", "Lima"])
    assert np.allclose(answer.json()["data"]["ndarray"], model.predict_proba(rows), atol=1e-6)


def test_lightgbm_without_a_sample_reads_its_categories(tmp_path):
    lightgbm = pytest.importorskip("lightgbm")
    frame = _frame()
    model = lightgbm.LGBMClassifier(n_estimators=4, verbose=-1).fit(frame, frame["age"] > 40)
    doc = descriptor(package(model, tmp_path / "b"))
    city = doc["signature"]["inputs"][2]
    assert city["dtype"] == "category" and city["categories"] == ["Oslo", "Paris", "Rome"]
    assert doc["sample"]["request"]["data"]["ndarray"][0][2] == "Oslo"


@pytest.fixture(scope="module", params=["xgboost", "lightgbm"])
def served_without_sample(request, tmp_path_factory):
    frame = _frame()
    y = ((frame["age"] > 40) ^ (frame["city"] == "Rome")).astype(int)
    model = _model(request.param).fit(frame, y)
    bundle = package(model, tmp_path_factory.mktemp(request.param) / "nosample")
    for server in serve(bundle, tmp_path_factory.mktemp(f"{request.param}-nosample-server")):
        yield request.param, frame, model, bundle, server


def test_without_a_sample_the_categories_come_from_the_model(served_without_sample):
    _, frame, model, bundle, server = served_without_sample
    doc = descriptor(bundle)
    city = doc["signature"]["inputs"][2]
    assert city["dtype"] == "category" and city["categories"] == ["Oslo", "Paris", "Rome"]
    # The synthesized row holds a category the model knows, and the server answers it as the
    # model does.
    request = doc["sample"]["request"]["data"]
    assert request["names"] == COLUMNS and request["ndarray"][0][2] == "Oslo"
    answer = server.post({"data": request})
    assert answer.status_code == 200, answer.text
    rows = pd.DataFrame(request["ndarray"], columns=COLUMNS).astype(
        {"city": frame["city"].dtype, "member": bool}
    )
    assert np.allclose(answer.json()["data"]["ndarray"], model.predict_proba(rows), atol=1e-6)


def test_without_a_sample_rows_with_nan_equal_the_model(served_without_sample):
    _, frame, model, _, server = served_without_sample
    rows = frame.iloc[:6]  # row 3: income is null
    expected = model.predict_proba(rows)
    seldon = server.post({"data": {"names": COLUMNS, "ndarray": _rows(rows)}})
    assert seldon.status_code == 200, seldon.text
    assert np.allclose(seldon.json()["data"]["ndarray"], expected, atol=1e-6)
    invoke = server.post({"columns": COLUMNS, "data": _rows(rows)}, path="/api/model/invoke")
    assert invoke.status_code == 200, invoke.text
    assert np.allclose(invoke.json()["prediction"], expected, atol=1e-6)


def test_without_a_sample_an_unseen_category(served_without_sample):
    framework, frame, model, _, server = served_without_sample
    first = _rows(frame.iloc[:1])[0]
    answer = server.post(
        {"data": {"names": COLUMNS, "ndarray": [[*first[:2], "Zurich", first[3]]]}}
    )
    if framework == "lightgbm":  # LightGBM takes it as it takes a missing value
        assert answer.status_code == 200, answer.text
        rows = frame.iloc[:1].copy()
        rows["city"] = pd.Categorical(["Zurich"], categories=["Oslo", "Paris", "Rome", "Zurich"])
        assert np.allclose(answer.json()["data"]["ndarray"], model.predict_proba(rows), atol=1e-6)
    else:  # XGBoost >= 3.1 refuses a category it did not see: the answer names the column
        assert answer.status_code == 400, answer.text
        message = answer.json()["message"]
        assert "'city'" in message and "Zurich" in message and "Oslo" in message


def _xgboost_without_saved_categories(frame: pd.DataFrame, tmp_path):
    """An XGBClassifier as XGBoost < 3.1 saves it: feature types, no categories."""
    import json

    model = _model("xgboost").fit(frame, frame["age"] > 40)
    model.save_model(tmp_path / "full.json")
    doc = json.loads((tmp_path / "full.json").read_text())
    assert doc["learner"]["gradient_booster"]["model"].pop("cats")
    (tmp_path / "old.json").write_text(json.dumps(doc))
    old = type(model)()
    old.load_model(tmp_path / "old.json")
    return old


def test_xgboost_without_saved_categories_asks_for_a_sample(tmp_path):
    frame = _frame()
    model = _xgboost_without_saved_categories(frame, tmp_path)
    with pytest.raises(PackagingError, match=r"categorical columns \(city\).*sample_input=df"):
        package(model, tmp_path / "b")
    # With the user's rows, the categories come from the sample.
    city = descriptor(package(model, tmp_path / "c", sample_input=frame.head(2)))["signature"]
    assert city["inputs"][2]["categories"] == ["Oslo", "Paris", "Rome"]


def test_xgboost_with_text_it_cannot_give_back_asks_for_a_sample(tmp_path):
    frame = _frame()
    frame["city"] = frame["city"].cat.rename_categories({"Oslo": "Zürich"})
    model = _model("xgboost").fit(frame, frame["age"] > 40)
    with pytest.raises(PackagingError, match=r"categorical columns \(city\).*sample_input=df"):
        package(model, tmp_path / "b")
    doc = descriptor(package(model, tmp_path / "c", sample_input=frame.head(2)))
    assert "Zürich" in doc["signature"]["inputs"][2]["categories"]
