"""serving/tables.Table alone: any JSON value in any column is a DataFrame or a 400 naming it."""

from __future__ import annotations

import pytest

from primehub_jupyter.serving.descriptor import TensorSpec
from primehub_jupyter.serving.errors import PayloadError
from primehub_jupyter.serving.tables import Table

pd = pytest.importorskip("pandas")

DTYPES = {
    "i": "int64",
    "f": "float64",
    "s": "str",
    "o": "object",
    "c": "category",
    "b": "bool",
    "d": "datetime64[us]",
    "u8": "uint8",
}
GOOD = {"i": 1, "f": 1.5, "s": "a", "o": "q", "c": "x", "b": True, "d": "2024-01-01", "u8": 4}
VALUES = [None, 0, -1, 2**63, 2**70, 1e308, 1.5, True, "", "a", "2024-13-45", [], [1], {"a": 1}]


@pytest.fixture(scope="module")
def table():
    specs = [
        TensorSpec(
            name=name,
            datatype="BYTES",
            shape=[-1],
            dtype=dtype,
            categories=["x"] if name == "c" else None,
        )
        for name, dtype in DTYPES.items()
    ]
    return Table(specs)


@pytest.mark.parametrize("column", list(DTYPES))
@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_any_value_is_a_frame_or_a_400_naming_the_column(table, column, value):
    record = {**GOOD, column: value}
    try:
        frame = table.from_records([record], "jsonData")
    except PayloadError as exc:
        assert repr(column) in str(exc)
    else:
        assert list(frame.columns) == list(DTYPES)
        assert str(frame["b"].dtype) == "bool"


def test_dtypes_are_the_recorded_ones(table):
    frame = table.from_rows(None, [list(GOOD.values())], "data.ndarray")
    assert {name: str(frame[name].dtype) for name in DTYPES} == {
        **DTYPES,
        "s": str(pd.Series(["a"], dtype="str").dtype),
    }
    assert frame["c"].cat.categories.tolist() == ["x"]


@pytest.mark.parametrize(
    "rows",
    [[], [[]], "x", [[1] * 8, [1] * 7], [None]],
    ids=["none", "empty", "text", "ragged", "null"],
)
def test_malformed_rows_are_400s(table, rows):
    with pytest.raises(PayloadError):
        table.from_rows(None, rows, "data.ndarray")
