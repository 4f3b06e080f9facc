"""Batch job rows: chunks decoded as the model server decodes requests, failing rows isolated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import PayloadError
from .protocols import seldon
from .tables import Table, _show, column_kind

if TYPE_CHECKING:
    import pandas as pd

    from .descriptor import BundleDescriptor, TensorSpec
    from .runtimes.base import Runtime


class ColumnsError(Exception):
    """The input lacks columns the model needs (or cannot tell which columns to use)."""


@dataclass
class Scored:
    """A chunk's outcome: positions (in the chunk) scored, their outputs, and failed positions."""

    positions: np.ndarray
    output: np.ndarray
    failures: dict[int, str]


def feature_names(descriptor: BundleDescriptor) -> list[str] | None:
    """The columns a tensor model takes, by name, when the bundle records them."""
    sample = descriptor.sample.request if descriptor.sample is not None else {}
    data = sample.get("data") if isinstance(sample, dict) else None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
        return list(names)
    return None


def needed_columns(descriptor: BundleDescriptor, available: list[str]) -> list[str]:
    """The input columns the model reads, in its order; ColumnsError says what is missing.

    Tables: the signature's columns. Tensors: the feature names the bundle's sample records,
    else every column of the input when their count is the model's width (or it has none).
    """
    signature = descriptor.signature
    if signature is not None and signature.is_table:
        wanted = [spec.name for spec in signature.inputs]
    else:
        named = feature_names(descriptor)
        width = _tensor_width(descriptor)
        if named is not None:
            wanted = named
        elif width is None or width == len(available):
            return list(available)
        else:
            raise ColumnsError(
                f"the model takes {width} unnamed features per row but the input has "
                f"{len(available)} columns ({', '.join(available[:12])}); "
                f"give a file with just the {width} feature columns, in the model's order"
            )
    missing = [name for name in wanted if name not in available]
    if missing:
        raise ColumnsError(
            f"the input lacks the column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(map(repr, missing))} the model needs (it has {', '.join(available[:12])})"
        )
    return wanted


def text_columns(descriptor: BundleDescriptor) -> tuple[str, ...]:
    """Table columns read as text from CSV (strings, categories, date-times)."""
    signature = descriptor.signature
    if signature is None or not signature.is_table:
        return ()
    return tuple(
        s.name
        for s in signature.inputs
        if column_kind(s.dtype or "object") in ("text", "category", "datetime")
    )


def _tensor_width(descriptor: BundleDescriptor) -> int | None:
    signature = descriptor.signature
    inputs = signature.inputs if signature is not None else []
    if inputs and len(inputs[0].shape) == 2 and inputs[0].shape[1] > 0:
        return inputs[0].shape[1]
    return None


class Scorer:
    """Scores chunks with the loaded runtime, as the model server would score their rows."""

    def __init__(
        self,
        runtime: Runtime,
        descriptor: BundleDescriptor,
        columns: list[str],
        *,
        text_input: bool = False,
    ) -> None:
        self.runtime = runtime
        self.columns = columns
        # CSV holds only text: a number or true/false there is what a JSON client would send
        # as a number or a boolean (JSONL and Parquet values keep their own types).
        self.text_input = text_input
        signature = descriptor.signature
        self.table = Table(signature.inputs) if signature and signature.is_table else None
        self._names = feature_names(descriptor) if self.table is None else None
        outputs = signature.outputs if signature is not None else []
        self._output_name = outputs[0].name if outputs else "output-0"
        self.output_columns: list[str] | None = None

    def score(self, frame: pd.DataFrame) -> Scored:
        """Decode and predict the rows of `frame`; rows that fail are isolated, not fatal."""
        if not len(frame):
            return Scored(np.empty(0, dtype=np.int64), np.empty((0, 0)), {})
        if self.table is not None:
            X, positions, failures = self._decode_table(frame)
        else:
            X, positions, failures = self._decode_tensor(frame)
        if X is None or not len(positions):
            return Scored(np.empty(0, dtype=np.int64), np.empty((0, 0)), failures)
        output, refused = self._predict(X, np.arange(len(positions)))
        if refused:
            for index, reason in refused.items():
                failures[int(positions[index])] = reason
            kept = np.array(sorted(set(range(len(positions))) - set(refused)), dtype=np.int64)
            positions = positions[kept]
        return Scored(positions, output, failures)

    def names_of(self, output: np.ndarray) -> list[str]:
        """Prediction column names: the model's classes or outputs, as the server names them."""
        if self.output_columns is None:
            if output.ndim >= 2:
                flat = output.reshape(len(output), -1)
                if output.ndim == 2:
                    self.output_columns = list(seldon.output_names(flat, self.runtime.class_names))
                else:
                    self.output_columns = [f"t:{i}" for i in range(flat.shape[1])]
            else:
                self.output_columns = [self._output_name]
        return self.output_columns

    # ---- decoding ----------------------------------------------------------------------------

    def _decode_tensor(self, frame: pd.DataFrame) -> tuple[Any, np.ndarray, dict[int, str]]:
        import pandas as pd

        failures: dict[int, str] = {}
        arrays = []
        for name in self.columns:
            column = frame[name] if name in frame else pd.Series([None] * len(frame))
            if column.dtype.kind in "fiub" and isinstance(column.dtype, np.dtype):
                values = column.to_numpy(dtype=np.float64)
            else:
                values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
            for position in np.flatnonzero(np.isnan(values)).tolist():
                if position not in failures:
                    raw = column.iloc[position]
                    failures[position] = (
                        f"column {name!r} has no value"
                        if _missing(raw)
                        else f"column {name!r} takes numbers, got {_show(_plain(raw))}"
                    )
            arrays.append(values)
        positions = _kept(len(frame), failures)
        X = np.column_stack(arrays)[positions] if arrays else np.empty((len(positions), 0))
        X = X.astype(self.runtime.input_dtype, copy=False)
        try:
            X = self.runtime.check_input(X, self._names)
        except PayloadError as exc:  # the same for every row: the file does not fit the model
            return None, positions[:0], {p: str(exc) for p in positions.tolist()} | failures
        return X, positions, failures

    def _decode_table(self, frame: pd.DataFrame) -> tuple[Any, np.ndarray, dict[int, str]]:
        import pandas as pd

        table = self.table
        assert table is not None
        count = len(frame)
        ready: dict[str, Any] = {}
        slow_specs: list[TensorSpec] = []
        slow: dict[str, list[Any]] = {}
        for spec in table.specs:
            column = frame[spec.name] if spec.name in frame else pd.Series([None] * count)
            array = _fast_column(spec, column)
            if array is not None:
                ready[spec.name] = array
            else:
                slow_specs.append(spec)
                slow[spec.name] = _json_values(spec, column, self.text_input)
        failures: dict[int, str] = {}
        positions = np.arange(count, dtype=np.int64)
        decoded = None
        if slow_specs:
            # The columns that are not already what Table would make go through Table itself.
            part = Table(slow_specs)
            try:
                decoded = part.frame(slow)
            except PayloadError as exc:
                failures = _failing_rows(part, slow, list(range(count))) or dict.fromkeys(
                    range(count), str(exc)
                )
                positions = _kept(count, failures)
                if not len(positions):
                    return None, positions, failures
                index = positions.tolist()
                decoded = part.frame({k: [v[i] for i in index] for k, v in slow.items()})
                ready = {k: _take(v, positions) for k, v in ready.items()}
        columns = {
            spec.name: ready[spec.name] if spec.name in ready else decoded[spec.name]  # type: ignore[index]
            for spec in table.specs
        }
        return pd.DataFrame(columns, copy=False), positions, failures

    # ---- predicting --------------------------------------------------------------------------

    def _predict(self, X: Any, index: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
        """Outputs of the rows of X that the model takes, and why it refused the others.

        The whole chunk first; on an error, halves, down to the rows that fail alone.
        """
        try:
            output = np.asarray(self.runtime.predict(X, self._frame_names(X), {}))
            if output.ndim == 0 or len(output) != len(index):
                raise ValueError(
                    f"the model answered {output.shape} for {len(index)} rows; batch jobs need "
                    "one output per row"
                )
            return output, {}
        except Exception as exc:
            if len(index) == 1:
                return np.empty(0), {int(index[0]): self._reason(X, exc)}
        half = len(index) // 2
        first, refused = self._predict(_rows(X, 0, half), index[:half])
        second, more = self._predict(_rows(X, half, len(index)), index[half:])
        refused.update(more)
        parts = [o for o in (first, second) if len(o)]
        output = np.concatenate(parts) if parts else np.empty(0)
        return output, refused

    def _frame_names(self, X: Any) -> list[str] | None:
        return list(X.columns) if self.table is not None else self._names

    def _reason(self, X: Any, exc: Exception) -> str:
        if isinstance(exc, PayloadError):
            return str(exc)
        if self.table is not None:
            from .table_endpoints import _missing_values

            problem = self.table.unknown_category(X)
            if problem is None and "nan" in str(exc).lower():
                problem = _missing_values(X)
            if problem is not None:
                return problem
        return f"{type(exc).__name__}: {exc}"


def _rows(X: Any, start: int, stop: int) -> Any:
    return X.iloc[start:stop] if hasattr(X, "iloc") else X[start:stop]


def _kept(count: int, failures: dict[int, str]) -> np.ndarray:
    if not failures:
        return np.arange(count, dtype=np.int64)
    mask = np.ones(count, dtype=bool)
    mask[list(failures)] = False
    return np.flatnonzero(mask)


def _take(values: Any, positions: np.ndarray) -> Any:
    if isinstance(values, np.ndarray):
        return values[positions]
    taken = values.take(positions)
    return taken.reset_index(drop=True) if hasattr(taken, "reset_index") else taken


def _failing_rows(table: Table, values: dict[str, list[Any]], rows: list[int]) -> dict[int, str]:
    """Rows that Table refuses, found by halving (rows decode independently of each other)."""
    try:
        table.frame({k: [v[i] for i in rows] for k, v in values.items()})
        return {}
    except PayloadError as exc:
        if len(rows) == 1:
            return {rows[0]: str(exc)}
    half = len(rows) // 2
    return _failing_rows(table, values, rows[:half]) | _failing_rows(table, values, rows[half:])


def _fast_column(spec: TensorSpec, column: pd.Series) -> Any:
    """The column as Table would decode it, when pandas already read it in that form; None
    when it must go through Table (mixed values, other dtypes, date-times)."""
    import pandas as pd

    dtype_name = spec.dtype or "object"
    kind = column_kind(dtype_name)
    read = column.dtype
    numpy_read = isinstance(read, np.dtype)
    if kind == "float":
        try:
            wanted = np.dtype(dtype_name)
        except TypeError:
            return None
        return column.to_numpy(dtype=wanted) if numpy_read and read.kind in "fiub" else None
    if kind == "int":
        if numpy_read and _numpy_name(dtype_name) and read == np.dtype(dtype_name):
            return column.to_numpy()
        if numpy_read and read.kind == "f":
            # Missing integers: Table makes the column float64 with NaN, as here.
            values = column.to_numpy()
            missing = np.isnan(values)
            given = values[~missing]
            if missing.any() and np.isfinite(given).all() and (given == np.floor(given)).all():
                return values.astype(np.float64, copy=False)
        return None
    if kind == "bool":
        return column.to_numpy() if numpy_read and read == np.bool_ else None
    if kind not in ("text", "category"):
        return None
    if not (
        isinstance(read, pd.StringDtype)
        or (read is np.dtype(object) and pd.api.types.infer_dtype(column, skipna=True) in _TEXTS)
    ):
        return None
    if dtype_name in ("str", "string") and read == _inferred_text_dtype():
        return column.array  # what pandas makes of Table's object array of texts anyway
    texts = column.to_numpy(dtype=object, na_value=np.nan)
    if kind == "category":
        known = list(spec.categories or [])
        seen = set(known)
        extra = [v for v in pd.unique(texts) if isinstance(v, str) and v not in seen]
        return pd.Categorical(texts, categories=known + extra)
    if dtype_name == "object":  # Table keeps it object; a bare object array would become str
        return pd.Series(texts, dtype=object)
    if dtype_name in ("str", "string"):
        return texts
    return None


def _inferred_text_dtype() -> Any:
    """The dtype pandas gives a column built from an object array of str (str in pandas 3)."""
    import pandas as pd

    return pd.DataFrame({"a": np.array(["a"], dtype=object)}, copy=False)["a"].dtype


def _numpy_name(name: str) -> bool:
    try:
        np.dtype(name)
    except TypeError:
        return False
    return True


def _json_values(spec: TensorSpec, column: pd.Series, text_input: bool) -> list[Any]:
    """The column as JSON values: missing -> None, numpy scalars -> Python, times -> ISO text.

    From text input, numbers and true/false written as text in a numeric or boolean column
    become numbers and booleans; anything else stays text for Table to refuse, naming it.
    """
    import pandas as pd

    values = column.tolist()
    kind = column_kind(spec.dtype or "object")
    textual = not (isinstance(column.dtype, np.dtype) and column.dtype.kind in "fiub")
    if text_input and textual and kind in ("int", "float"):
        numbers = pd.to_numeric(column, errors="coerce").tolist()
        values = [n if n == n else v for n, v in zip(numbers, values, strict=True)]
    elif text_input and textual and kind == "bool":
        values = [_BOOLEANS.get(v, v) if isinstance(v, str) else v for v in values]
    for i, value in enumerate(values):
        if _missing(value):
            values[i] = None
        elif hasattr(value, "isoformat"):
            values[i] = value.isoformat()
        elif isinstance(value, np.generic):
            values[i] = value.item()
    return values


_TEXTS = ("string", "empty")
_BOOLEANS = {
    "True": True,
    "TRUE": True,
    "true": True,
    "False": False,
    "FALSE": False,
    "false": False,
}


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return value != value
    try:
        import pandas as pd

        return value is pd.NA or value is pd.NaT
    except ImportError:  # pragma: no cover
        return False


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
