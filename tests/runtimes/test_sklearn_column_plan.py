"""The sklearn runtime's step-by-step call of ColumnTransformer pipelines equals the model's own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from primehub_jupyter.serving.bundle import load_bundle
from primehub_jupyter.serving.packaging import package
from primehub_jupyter.serving.registry import load_runtime
from primehub_jupyter.serving.tables import Table

pd = pytest.importorskip("pandas")
pytest.importorskip("sklearn")


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),
            "income": rng.normal(5000, 1500, n).round(2),
            "city": rng.choice(["Paris", "Rome", "Oslo", "Lima"], n),
            "member": rng.random(n) < 0.4,
            "score": rng.normal(0, 1, n),
        }
    )
    return frame


def _pipeline(dense: bool = False, **column_options):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numbers = Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())])
    prep = ColumnTransformer(
        [
            ("num", numbers, ["age", "income"]),
            ("cat", OneHotEncoder(sparse_output=not dense), ["city"]),  # refuses unknown cities
            ("flag", "passthrough", ["member"]),
        ],
        **column_options,
    )
    frame = _frame(300, 0)
    y = (frame["age"] > 45) ^ (frame["city"] == "Oslo")
    return Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=500))]).fit(frame, y)


def _served(model, tmp_path: Path):
    bundle = tmp_path / "bundle"
    package(model, bundle, sample_input=_frame(3, 1))
    descriptor = load_bundle(bundle)
    assert descriptor.signature is not None
    return load_runtime(bundle, descriptor), Table(descriptor.signature.inputs)


def _request_frame(table: Table, frame: pd.DataFrame) -> pd.DataFrame:
    """The DataFrame a table request decodes to (recorded dtypes, NaN for nulls)."""
    values = {c: [None if pd.isna(v) else v for v in frame[c].tolist()] for c in frame}
    return table.frame(
        {c: [v.item() if hasattr(v, "item") else v for v in values[c]] for c in values}
    )


@pytest.mark.parametrize(
    "options",
    [{"remainder": "drop"}, {"remainder": "passthrough"}, {"remainder": "drop", "n_jobs": 2}],
    ids=["drop", "remainder-passthrough", "n_jobs"],
)
def test_answers_equal_the_models_own(tmp_path, options):
    model = _pipeline(**options)
    runtime, table = _served(model, tmp_path)
    assert runtime._plan is not None  # the step-by-step call is in use for this pipeline
    rows = _frame(40, 2)
    rows.loc[[3, 7], "income"] = np.nan  # the imputer fills these
    X = _request_frame(table, rows)
    assert np.array_equal(runtime.predict(X, None, {}), model.predict_proba(X))
    for i in range(5):  # one row at a time, as unbatched requests arrive
        one = X.iloc[[i]].reset_index(drop=True)
        assert np.array_equal(runtime.predict(one, None, {}), model.predict_proba(one))


def test_a_value_the_model_refuses_fails_as_the_model_does(tmp_path):
    model = _pipeline()
    runtime, table = _served(model, tmp_path)
    X = _request_frame(table, _frame(2, 3).assign(city=["Paris", "Tokyo"]))
    with pytest.raises(ValueError) as own:
        model.predict_proba(X)
    with pytest.raises(ValueError) as ours:
        runtime.predict(X, None, {})
    assert str(ours.value) == str(own.value) and "Tokyo" in str(ours.value)


@pytest.mark.parametrize("change", ["sparse", "pandas-output", "weights"])
def test_other_column_transformers_use_the_models_own_call(tmp_path, change):
    options = {
        "sparse": {"sparse_threshold": 1.0},
        "pandas-output": {},
        "weights": {"transformer_weights": {"num": 2.0}},
    }[change]
    model = _pipeline(dense=change == "pandas-output", **options)
    if change == "pandas-output":
        model = model.set_output(transform="pandas").fit(_frame(300, 0), _frame(300, 0)["member"])
    runtime, table = _served(model, tmp_path)
    assert runtime._plan is None
    X = _request_frame(table, _frame(10, 4))
    assert np.array_equal(runtime.predict(X, None, {}), model.predict_proba(X))


def test_a_pandas_na_column_passed_through_fails_as_the_model_does(tmp_path):
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = _frame(200, 0)[["age", "income", "city"]].astype({"age": "Int64"})
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), ["income"]),
            ("age", "passthrough", ["age"]),
            ("cat", OneHotEncoder(), ["city"]),
        ]
    )
    model = Pipeline([("prep", prep), ("clf", LogisticRegression())])
    model.fit(frame, frame["income"] > 5000)
    bundle = tmp_path / "bundle"
    package(model, bundle, sample_input=frame.head(2))
    runtime = load_runtime(bundle, load_bundle(bundle))
    assert runtime._plan is not None
    X = pd.DataFrame(
        {
            "age": pd.array([30, None], dtype="Int64"),
            "income": [4000.0, 6000.0],
            "city": pd.array(["Rome", "Oslo"], dtype=frame["city"].dtype),
        }
    )
    with pytest.raises(ValueError) as own:
        model.predict_proba(X)
    with pytest.raises(ValueError) as ours:
        runtime.predict(X, None, {})
    assert str(ours.value) == str(own.value) and "pandas.NA" in str(ours.value)
    fine = X.fillna({"age": 40})
    assert np.array_equal(runtime.predict(fine, None, {}), model.predict_proba(fine))
