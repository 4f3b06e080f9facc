"""Column tables: signatures from DataFrames, and requests decoded into typed DataFrames."""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from .errors import PayloadError

if TYPE_CHECKING:
    import pandas as pd

    from .descriptor import TensorSpec

_TEXT = ("object", "str", "string")


def column_kind(dtype: str) -> str:
    """Which coercion a column's pandas dtype name needs."""
    if dtype == "bool":
        return "bool"
    if dtype.startswith(("int", "uint", "Int", "UInt")):
        return "int"
    if dtype.startswith(("float", "Float")):
        return "float"
    if dtype == "category":
        return "category"
    if dtype.startswith("datetime64"):
        return "datetime"
    return "text"


# ---- signatures -----------------------------------------------------------------------------


def column_specs(frame: pd.DataFrame, categories: dict[str, list[Any]]) -> list[TensorSpec]:
    """One TensorSpec per column of `frame` (name, wire datatype, pandas dtype, categories)."""
    from .descriptor import TensorSpec

    specs = []
    for name in frame.columns:
        series = frame[name]
        dtype = str(series.dtype)
        kind = column_kind(dtype)
        known = categories.get(str(name))
        if kind == "category":
            datatype = "BYTES"
            if known is None:
                known = [_plain(v) for v in series.cat.categories.tolist()]
        elif kind == "bool":
            datatype = "BOOL"
        elif kind == "int":
            datatype = "INT64"
        elif kind == "float":
            datatype = "FP64"
        else:
            datatype = "BYTES"
        specs.append(
            TensorSpec(
                name=str(name),
                datatype=datatype,
                shape=[-1],
                dtype=dtype,
                categories=known,
            )
        )
    return specs


def encoder_categories(model: Any) -> dict[str, list[Any]]:
    """Column -> the categories a fitted OneHotEncoder/OrdinalEncoder inside `model` knows."""
    found: dict[str, list[Any]] = {}
    for encoder, columns in _encoders(model, None):
        cats = getattr(encoder, "categories_", None)
        if cats is None or columns is None or len(columns) != len(cats):
            continue
        for column, values in zip(columns, cats, strict=True):
            found[str(column)] = [_plain(v) for v in values if not _missing(v)]
    return found


def _encoders(model: Any, columns: list[str] | None) -> list[tuple[Any, list[str] | None]]:
    """(encoder, the input columns it sees) for encoders in pipelines and column transformers."""
    result: list[tuple[Any, list[str] | None]] = []
    if hasattr(model, "categories_"):
        names = getattr(model, "feature_names_in_", None)
        result.append((model, [str(n) for n in names] if names is not None else columns))
    for _, step in getattr(model, "steps", []) or []:
        result.extend(_encoders(step, columns))
        break  # only the first step sees the raw columns
    for _, transformer, cols in getattr(model, "transformers_", []) or []:
        if isinstance(transformer, str):
            continue
        chosen = [str(c) for c in cols] if isinstance(cols, (list, tuple)) else None
        if chosen is not None and all(isinstance(c, str) for c in cols):
            result.extend(_encoders(transformer, chosen))
    return result


def sample_frame(specs: list[TensorSpec]) -> pd.DataFrame:
    """One synthesized row the model accepts: a known category, 0, False, 1970-01-01, "a"."""

    row: dict[str, Any] = {}
    for spec in specs:
        kind = column_kind(spec.dtype or "object")
        if spec.categories:
            row[spec.name] = spec.categories[0]
        elif kind == "bool":
            row[spec.name] = False
        elif kind in ("int", "float"):
            row[spec.name] = 0
        elif kind == "datetime":
            row[spec.name] = "1970-01-01T00:00:00"
        else:
            row[spec.name] = "a"
    return Table(specs).frame({k: [v] for k, v in row.items()})


def request_rows(frame: pd.DataFrame) -> dict[str, Any]:
    """A Seldon v1 data document for a DataFrame: names and rows of JSON values (NaN -> null)."""
    rows = [[_json_value(v) for v in row] for row in frame.itertuples(index=False, name=None)]
    return {"names": [str(c) for c in frame.columns], "ndarray": rows}


def _json_value(value: Any) -> Any:
    if _missing(value):
        return None
    if isinstance(value, (datetime, date, np.datetime64)):
        import pandas as pd

        return pd.Timestamp(value).isoformat()
    return _plain(value)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        import pandas as pd

        return bool(pd.isna(value)) if np.ndim(value) == 0 else False
    except (TypeError, ValueError):
        return False


# ---- requests -------------------------------------------------------------------------------


class Table:
    """The recorded columns of a table signature; turns request values into a typed DataFrame."""

    def __init__(self, specs: list[TensorSpec]) -> None:
        self.specs = specs
        self.columns = [s.name for s in specs]
        self._by_name = {s.name: s for s in specs}

    def frame(self, values: dict[str, list[Any]]) -> pd.DataFrame:
        """A DataFrame in signature order from column -> values; PayloadError names the column."""
        import pandas as pd

        unknown = [name for name in values if name not in self._by_name]
        if unknown:
            raise PayloadError(
                f"unknown column {unknown[0]!r}; the model takes {', '.join(self.columns)}"
            )
        missing = [name for name in self.columns if name not in values]
        if missing:
            raise PayloadError(f"column {missing[0]!r} is missing from the request")
        lengths = {len(v) for v in values.values()}
        if len(lengths) != 1:
            raise PayloadError("every column must have the same number of rows")
        if not lengths or 0 in lengths:
            raise PayloadError("the request holds no rows to predict")
        # copy=False: every column is a fresh array of this request; copying it again was a
        # quarter of the frame's construction, on every request.
        columns = {s.name: self._series(s, values[s.name]) for s in self.specs}
        return pd.DataFrame(columns, copy=False)

    def from_rows(self, names: list[str] | None, rows: Any, where: str) -> pd.DataFrame:
        """Rows of values (a JSON list of lists) under `names` (default: the signature order)."""
        if not isinstance(rows, list) or not rows:
            raise PayloadError(f'"{where}" must be a non-empty list of rows')
        if not isinstance(rows[0], list):
            rows = [rows]  # a single flat row
        names = names or self.columns
        width = len(names)
        for index, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != width:
                raise PayloadError(
                    f'"{where}" row {index} must be a list of {width} values ({", ".join(names)})'
                )
        if len(set(names)) != width:
            raise PayloadError("column names must be unique")
        return self.frame({name: [row[i] for row in rows] for i, name in enumerate(names)})

    def from_records(self, records: Any, where: str) -> pd.DataFrame:
        """A list of {column: value} objects (or one such object, or {column: [values]})."""
        if isinstance(records, dict):
            if records and all(isinstance(v, list) for v in records.values()):
                return self.frame(records)
            records = [records]
        if not isinstance(records, list) or not records:
            raise PayloadError(f'"{where}" must be a non-empty list of {{column: value}} objects')
        if not all(isinstance(r, dict) for r in records):
            raise PayloadError(f'"{where}" must be a list of {{column: value}} objects')
        names = list(dict.fromkeys(k for r in records for k in r))
        for name in self.columns:
            if name not in names:
                raise PayloadError(f"column {name!r} is missing from the request")
        return self.frame({name: [r.get(name) for r in records] for name in names})

    def from_v2(self, inputs: list[dict[str, Any]]) -> pd.DataFrame:
        """KServe V2 inputs, one per column (MLServer's PandasCodec.encode_request layout)."""
        values: dict[str, list[Any]] = {}
        for index, raw in enumerate(inputs):
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise PayloadError(f'inputs[{index}] must be an object with a "name"')
            name = raw["name"]
            if "data" not in raw:
                raise PayloadError(f'input {name!r}: needs "data"')
            data = raw["data"]
            flat = _flatten(data if isinstance(data, list) else [data])
            parameters = raw.get("parameters") or {}
            if isinstance(parameters, dict) and parameters.get("content_type") == "pd_json":
                try:
                    flat = [orjson.loads(v) if isinstance(v, str) else v for v in flat]
                except orjson.JSONDecodeError:
                    raise PayloadError(f"column {name!r}: a pd_json value is not JSON") from None
            values[name] = flat
        return self.frame(values)

    # ---- one column ----

    def _series(self, spec: TensorSpec, values: list[Any]) -> Any:
        import pandas as pd

        dtype = spec.dtype or "object"
        kind = column_kind(dtype)
        # numpy arrays, not Series, where the dtype allows: a DataFrame built from arrays
        # costs a third of one built from Series, on every request.
        if kind == "float":
            return _array(_numbers(spec.name, values, integers=False), dtype)
        if kind == "int":
            numbers = _numbers(spec.name, values, integers=True)
            if any(v is None for v in numbers):  # a missing integer makes the column float
                return np.array([np.nan if v is None else v for v in numbers], dtype=np.float64)
            try:
                return _array(numbers, dtype)
            except (OverflowError, ValueError, TypeError):
                raise PayloadError(f"column {spec.name!r}: a value is out of range") from None
        if kind == "bool":
            for value in values:
                if not isinstance(value, bool):
                    raise PayloadError(f"column {spec.name!r} takes true/false, got {_show(value)}")
            return np.array(values, dtype=np.bool_)
        if kind == "datetime":
            return self._datetimes(spec, values)
        texts = [self._text(spec, value) for value in values]
        if kind == "category":
            known = list(spec.categories or [])
            # Values the model did not see stay values (appended, so known codes do not move):
            # the model decides whether it takes them.
            extra = [v for v in dict.fromkeys(texts) if not _missing(v) and v not in known]
            return pd.Series(pd.Categorical(texts, categories=known + extra))
        if dtype in ("str", "string"):  # pandas infers its string dtype from an object array
            array = np.empty(len(texts), dtype=object)
            array[:] = texts
            return array
        try:
            return pd.Series(texts, dtype=dtype)
        except (TypeError, ValueError):
            return pd.Series(texts, dtype=object)

    def _text(self, spec: TensorSpec, value: Any) -> Any:
        if value is None:  # missing, as pandas writes it in a text column
            return np.nan
        if isinstance(value, str):
            return value
        known = spec.categories or []
        # Categories that are numbers (an encoder fitted on integer codes) take numbers.
        if not isinstance(value, (dict, list)) and value in known:
            return value
        raise PayloadError(f"column {spec.name!r} takes text, got {_show(value)}")

    def _datetimes(self, spec: TensorSpec, values: list[Any]) -> Any:
        import pandas as pd

        for value in values:
            if value is not None and not isinstance(value, str):
                raise PayloadError(
                    f"column {spec.name!r} takes ISO 8601 date-times as text, got {_show(value)}"
                )
        try:
            parsed = pd.to_datetime(pd.Series(values, dtype=object), format="ISO8601")
        except (ValueError, TypeError, OverflowError):
            raise PayloadError(
                f"column {spec.name!r} takes ISO 8601 date-times (e.g. 2024-01-31T12:00:00)"
            ) from None
        try:
            return parsed.astype(spec.dtype or "datetime64[ns]")
        except (ValueError, TypeError):
            return parsed

    def unknown_category(self, frame: pd.DataFrame) -> str | None:
        """A message naming the first column holding a value outside its known categories."""
        for spec in self.specs:
            if not spec.categories or spec.name not in frame:
                continue
            known = set(spec.categories)
            for value in frame[spec.name].tolist():
                if not _missing(value) and value not in known:
                    shown = ", ".join(map(str, spec.categories[:10]))
                    return (
                        f"column {spec.name!r}: unknown category {value!r}; the model knows "
                        f"{shown}{', ...' if len(spec.categories) > 10 else ''}"
                    )
        return None


def _array(values: list[Any], dtype: str) -> Any:
    """A numpy array of a numpy dtype name; a Series for pandas' own (Int64, Float64)."""
    try:
        numpy_dtype = np.dtype(dtype)
    except TypeError:
        import pandas as pd

        return pd.Series(values, dtype=dtype)
    return np.array(values, dtype=numpy_dtype)


def _numbers(column: str, values: list[Any], *, integers: bool) -> list[Any]:
    result: list[Any] = []
    for value in values:
        if value is None:
            result.append(None if integers else math.nan)
        elif not isinstance(value, (int, float)):  # true/false are 1/0, as numpy reads them
            wanted = "integers" if integers else "numbers"
            raise PayloadError(f"column {column!r} takes {wanted}, got {_show(value)}")
        elif integers and isinstance(value, float) and not value.is_integer():
            raise PayloadError(f"column {column!r} takes integers, got {value!r}")
        else:
            result.append(int(value) if integers else float(value))
    return result


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list):
            flat.extend(_flatten(item))
        else:
            flat.append(item)
    return flat


def _show(value: Any) -> str:
    try:
        text = orjson.dumps(value, default=str).decode()
    except TypeError:  # integers beyond 64 bits
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
