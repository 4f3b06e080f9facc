"""Batch job files: chunked readers (CSV, JSONL, Parquet; local or http) and output writers."""

from __future__ import annotations

import os
import re
import shutil
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import orjson

if TYPE_CHECKING:
    import pandas as pd

#: Seconds an http(s) input may stay silent before the job fails.
HTTP_TIMEOUT = 60.0
_SKIPPED = re.compile(r"Skipping line (\d+): ([^\n]*)")


class InputError(Exception):
    """The input cannot be read (missing, unreadable, not the format it claims)."""


@dataclass
class Chunk:
    """Rows read from the input: the good ones as a frame, each with its line in the file."""

    frame: pd.DataFrame
    #: 1-based line of each row of `frame` in the input (CSV counts its header as line 1).
    lines: np.ndarray
    #: (line, reason) of lines that are not a row at all (wrong field count, not JSON).
    malformed: list[tuple[int, str]] = field(default_factory=list)
    #: Share of the input read after this chunk, when the size is known.
    progress: float | None = None
    #: CSV read with `raw_lines`: the chunk's lines as bytes (no line end), from `raw_first`
    #: on, and the header line; None when a record may span lines (then nothing is kept).
    raw: list[bytes] | None = None
    raw_first: int = 2
    raw_header: bytes = b""


def is_url(uri: str) -> bool:
    """Whether the input is an http(s) URL (streamed) rather than a local path."""
    return uri.startswith(("http://", "https://"))


def row_of_line(fmt: str, line: Any) -> Any:
    """The 0-based data row of a 1-based line: CSV skips its header line, the others do not."""
    return line - 2 if fmt == "csv" else line - 1


class _Source:
    """A binary stream of the input and its size in bytes (None when unknown)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.size: int | None
        self.stream: IO[bytes]
        if is_url(uri):
            try:
                response = urllib.request.urlopen(uri, timeout=HTTP_TIMEOUT)
            except (OSError, ValueError) as exc:
                raise InputError(f"cannot read the input {uri}: {exc}") from None
            length = response.headers.get("Content-Length")
            self.size = int(length) if length and length.isdigit() else None
            self.stream = response
        else:
            try:
                self.stream = open(uri, "rb")  # noqa: SIM115 - closed by close()
            except OSError as exc:
                raise InputError(f"cannot read the input {uri}: {exc.strerror}") from None
            self.size = os.fstat(self.stream.fileno()).st_size

    def progress(self, consumed: int) -> float | None:
        if not self.size:
            return None
        return min(1.0, consumed / self.size)

    def close(self) -> None:
        self.stream.close()


# ---- readers ----------------------------------------------------------------------------------


def read_chunks(
    uri: str,
    fmt: str,
    chunk_rows: int,
    *,
    text_columns: tuple[str, ...] = (),
    workdir: Path | None = None,
    raw_lines: bool = False,
) -> Iterator[Chunk]:
    """The input in chunks of at most `chunk_rows` rows, in order.

    `text_columns` are read as text (a CSV column of codes like 007 stays "007"). Parquet
    from http(s) is copied into `workdir` first (Parquet needs random access). `raw_lines`
    (a local CSV): each chunk also carries its lines as bytes (`Chunk.raw`) while every
    record is one line.
    """
    if fmt == "csv":
        raw = _RawLines(uri) if raw_lines and not is_url(uri) else None
        return _csv_chunks(uri, chunk_rows, text_columns, raw)
    if fmt == "jsonl":
        return _jsonl_chunks(uri, chunk_rows)
    if fmt == "parquet":
        return _parquet_chunks(_local_parquet(uri, workdir), chunk_rows)
    raise InputError(f"unknown input format {fmt!r}: use csv, jsonl or parquet")


def input_columns(uri: str, fmt: str, *, workdir: Path | None = None) -> list[str]:
    """The column names of the input (CSV header, Parquet schema, keys of JSONL's first rows)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.ParquetFile(_local_parquet(uri, workdir)).schema_arrow.names)
        except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
            raise InputError(f"{uri} is not a Parquet file: {exc}") from None
    source = _Source(uri)
    try:
        if fmt == "csv":
            import pandas as pd

            try:
                return [str(c) for c in pd.read_csv(source.stream, nrows=0).columns]
            except (ValueError, UnicodeDecodeError) as exc:  # EmptyDataError, ParserError
                raise InputError(f"{uri} has no CSV header: {exc}") from None
        names: dict[str, None] = {}
        for number, raw in enumerate(source.stream, 1):
            if number > 100:
                break
            try:
                record = orjson.loads(raw) if raw.strip() else None
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict):
                names.update(dict.fromkeys(record))
        return list(names)
    finally:
        source.close()


def _csv_chunks(
    uri: str, chunk_rows: int, text_columns: tuple[str, ...], raw: _RawLines | None
) -> Iterator[Chunk]:
    import pandas as pd

    source = _Source(uri)
    counted = _Counting(source.stream)
    # Lines pandas skipped (wrong field count), known once the tokenizer passed them.
    pending: list[tuple[int, str]] = []
    next_line = 2  # the header is line 1
    columns: list[Any] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            reader = pd.read_csv(
                counted,
                chunksize=chunk_rows,
                on_bad_lines="warn",
                # A blank line is a row of missing values, so rows keep their line numbers.
                skip_blank_lines=False,
                dtype=dict.fromkeys(text_columns, str) or None,
            )
            iterator = iter(reader)
            while True:
                try:
                    frame = next(iterator)
                except StopIteration:
                    break
                except (ValueError, UnicodeDecodeError) as exc:  # ParserError is a ValueError
                    raise InputError(f"{uri} is not a CSV file pandas can read: {exc}") from None
                pending.extend(_skipped(caught))
                first = next_line
                lines, malformed, next_line = _number_rows(len(frame), next_line, pending)
                frame.index = pd.RangeIndex(len(frame))
                columns = list(frame.columns)
                chunk = Chunk(frame, lines, malformed, source.progress(counted.consumed))
                if raw is not None:
                    chunk.raw = raw.take(next_line - first)
                    chunk.raw_first = first
                    chunk.raw_header = raw.header
                yield chunk
            pending.extend(_skipped(caught))
            if pending:  # malformed lines after the last row
                empty = pd.DataFrame(columns=columns)
                yield Chunk(empty, np.empty(0, dtype=np.int64), sorted(pending), 1.0)
    finally:
        source.close()
        if raw is not None:
            raw.close()


class _RawLines:
    """A local CSV's lines, read in step with pandas while each record is one line.

    A line whose quotes do not close on it (a quoted field going on to the next line) or a
    line end other than \\n or \\r\\n ends it for good: from there `take` answers None.
    """

    def __init__(self, path: str) -> None:
        self._file: IO[bytes] | None = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._buffer = b""
        self._ended = False
        header = self._lines(1)
        self.header = header[0][:-1] if header is not None else b""

    def take(self, count: int) -> Any:
        """The next `count` lines as an Arrow string array, each line ending in "," instead of
        its line end (the output row goes on after it); None from a line on that breaks."""
        if self._file is None:
            return None
        lines = self._lines(count)
        if lines is None:
            return None
        import pyarrow as pa

        data, ends = lines
        offsets = np.empty(count + 1, dtype=np.int32)
        offsets[0] = 0
        offsets[1:] = ends + 1
        return pa.StringArray.from_buffers(
            count, pa.py_buffer(offsets), pa.py_buffer(data.replace(b"\n", b","))
        )

    def _lines(self, count: int) -> tuple[bytes, np.ndarray] | None:
        """The next `count` lines (each ending in \\n) and where their \\n are; None when
        they break the one-record-per-line rule or the file ends first."""
        assert self._file is not None
        ends = np.flatnonzero(np.frombuffer(self._buffer, dtype=np.uint8) == 10)
        while len(ends) < count and not self._ended:
            more = self._file.read(1 << 20)
            if not more:
                self._ended = True
                if self._buffer and not self._buffer.endswith(b"\n"):
                    more = b"\n"  # the last line without a line end
            self._buffer += more
            ends = np.flatnonzero(np.frombuffer(self._buffer, dtype=np.uint8) == 10)
        if len(ends) < count:
            self.close()
            return None
        cut = int(ends[count - 1]) + 1
        data, self._buffer = self._buffer[:cut], self._buffer[cut:]
        ends = ends[:count]
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
            ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
        if b"\r" in data or (b'"' in data and not _quotes_close(data)):
            self.close()
            return None
        return data, ends

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _quotes_close(data: bytes) -> bool:
    """Whether every quoted field opened on a line is closed on the same line."""
    import csv

    try:
        for line in data.split(b"\n"):
            if b'"' in line:
                next(csv.reader([line.decode("utf-8", "replace")], strict=True))
    except csv.Error:
        return False
    return True


def _skipped(caught: list[warnings.WarningMessage]) -> list[tuple[int, str]]:
    found = []
    for message in caught:
        for match in _SKIPPED.finditer(str(message.message)):
            found.append((int(match.group(1)), match.group(2).strip()))
    caught.clear()
    return found


def _number_rows(
    count: int, next_line: int, pending: list[tuple[int, str]]
) -> tuple[np.ndarray, list[tuple[int, str]], int]:
    """Lines of `count` rows starting at `next_line`, stepping over skipped lines."""
    pending.sort()
    skipped = {line for line, _ in pending}
    lines = np.arange(next_line, next_line + count + len(skipped), dtype=np.int64)
    if skipped:
        lines = lines[~np.isin(lines, list(skipped))]
    lines = lines[:count]
    last = int(lines[-1]) if count else next_line - 1
    malformed = [item for item in pending if item[0] <= last]
    del pending[: len(malformed)]
    return lines, malformed, last + 1


class _Counting:
    """A read-only binary stream that counts the bytes handed out (progress of a URL)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.consumed = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.consumed += len(data)
        return data

    def readable(self) -> bool:
        return True

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._stream)


def _jsonl_chunks(uri: str, chunk_rows: int) -> Iterator[Chunk]:
    import pandas as pd

    source = _Source(uri)
    consumed = 0
    line = 0
    try:
        while True:
            records: list[dict[str, Any]] = []
            lines: list[int] = []
            malformed: list[tuple[int, str]] = []
            ended = True
            for raw in source.stream:
                line += 1
                consumed += len(raw)
                if not raw.strip():
                    continue
                try:
                    record = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    malformed.append((line, f"not JSON: {exc}"))
                    continue
                if not isinstance(record, dict):
                    malformed.append((line, "not a JSON object ({column: value, ...})"))
                    continue
                records.append(record)
                lines.append(line)
                if len(records) >= chunk_rows:
                    ended = False
                    break
            if records or malformed:
                frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
                yield Chunk(
                    frame, np.array(lines, dtype=np.int64), malformed, source.progress(consumed)
                )
            if ended:
                return
    finally:
        source.close()


def _local_parquet(uri: str, workdir: Path | None) -> str:
    if not is_url(uri):
        return uri
    import hashlib

    digest = hashlib.sha256(uri.encode()).hexdigest()[:12]
    target = (workdir or Path(".")) / f"input-{digest}.parquet"
    if not target.exists():
        source = _Source(uri)
        partial = target.with_suffix(".partial")
        try:
            with open(partial, "wb") as out:
                shutil.copyfileobj(source.stream, out, 1 << 20)
        finally:
            source.close()
        os.replace(partial, target)
    return str(target)


def _parquet_chunks(path: str, chunk_rows: int) -> Iterator[Chunk]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except OSError as exc:
        raise InputError(f"cannot read the input {path}: {exc}") from None
    except ValueError as exc:
        raise InputError(f"{path} is not a Parquet file: {exc}") from None
    total = parquet.metadata.num_rows
    done = 0
    with parquet:
        for batch in parquet.iter_batches(batch_size=chunk_rows):
            frame = batch.to_pandas()
            lines = np.arange(done + 1, done + 1 + len(frame), dtype=np.int64)
            done += len(frame)
            yield Chunk(frame, lines, [], done / total if total else 1.0)


def parquet_rows(uri: str, workdir: Path | None = None) -> int | None:
    """Rows of a Parquet input from its metadata (None for other formats)."""
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(_local_parquet(uri, workdir)).metadata.num_rows)


# ---- writers ----------------------------------------------------------------------------------


def to_arrow(frame: pd.DataFrame) -> Any:
    """An Arrow table of `frame`; object columns of mixed values become text (JSON for lists)."""
    import pyarrow as pa

    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        fixed = frame.copy()
        for name in fixed.columns:
            if fixed[name].dtype == object:
                fixed[name] = [_text(v) for v in fixed[name].tolist()]
        return pa.Table.from_pandas(fixed, preserve_index=False)


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return str(value)


def _json_default(value: Any) -> Any:
    if _missing_value(value):
        return None
    return str(value)


def _missing_value(value: Any) -> bool:
    try:
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


@dataclass
class RawRows:
    """CSV output rows to format on the writer thread: the input's header line, the rows' input
    lines (an Arrow string array, each line ending in ",") and their predictions (a table)."""

    header: bytes
    lines: Any
    predictions: Any


def raw_csv_rows(header: bytes, lines: Any, predictions: Any) -> tuple[bytes, bytes]:
    """The header line and the rows (each ending in \\n): input lines (an Arrow string array,
    each line ending in ",") copied verbatim, each followed by its row of the Arrow table
    `predictions` (numbers cast to text by Arrow, as its CSV writer formats them: floats read
    back exactly)."""
    import io

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    options = pcsv.WriteOptions(include_header=True, quoting_style="needed")
    buffer = io.BytesIO()
    pcsv.write_csv(predictions.slice(0, 0), buffer, options)
    names = buffer.getvalue()
    texts = []
    for column in predictions.columns:
        kind = column.type
        if pa.types.is_string(kind) and pc.any(pc.match_substring_regex(column, _SPECIAL)).as_py():
            return _quoted_rows(header, lines, predictions, names)
        if not (
            pa.types.is_floating(kind)
            or pa.types.is_integer(kind)
            or pa.types.is_boolean(kind)
            or pa.types.is_string(kind)
        ):
            return _quoted_rows(header, lines, predictions, names)
        texts.append(pc.cast(column, pa.string()))
    fields = pc.binary_join_element_wise(*texts, ",", null_handling="replace", null_replacement="")
    rows = pc.binary_join_element_wise(lines, fields, "\n", "")
    if isinstance(rows, pa.ChunkedArray):
        rows = rows.combine_chunks()
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32)[rows.offset :][: len(rows) + 1]
    body = rows.buffers()[2].to_pybytes()[int(offsets[0]) : int(offsets[-1])] if len(rows) else b""
    return header + b"," + names, body


#: Characters a CSV field must be quoted for.
_SPECIAL = '[",\r\n]'


def _quoted_rows(header: bytes, lines: Any, predictions: Any, names: bytes) -> tuple[bytes, bytes]:
    """`raw_csv_rows` for predictions that need quoting: pyarrow's CSV writer formats them."""
    import io

    import pyarrow.csv as pcsv

    buffer = io.BytesIO()
    pcsv.write_csv(predictions, buffer, pcsv.WriteOptions(include_header=False))
    fields = buffer.getvalue().split(b"\n")[: len(lines)]
    texts = [line.encode() for line in lines.to_pylist()]
    body = b"".join(b"".join(pair) + b"\n" for pair in zip(texts, fields, strict=True))
    return header + b"," + names, body


class TextWriter:
    """CSV or JSONL output appended chunk by chunk; `truncate` rolls back to a checkpoint."""

    def __init__(self, path: str, fmt: str, offset: int) -> None:
        self.path = path
        self.fmt = fmt
        mode = "r+b" if os.path.exists(path) else "wb"
        self._file = open(path, mode)  # noqa: SIM115 - closed by close()
        self._file.truncate(offset)
        self._file.seek(offset)

    def write(self, table: Any, header: bool) -> int:
        """Append an Arrow table of rows (or `RawRows`); returns the file's size after them."""
        if isinstance(table, RawRows):
            # Formatted here, on the writer thread, while the next chunk is read and scored.
            names, body = raw_csv_rows(table.header, table.lines, table.predictions)
            if header:
                self._file.write(names)
            self._file.write(body)
        elif self.fmt == "csv":
            import pyarrow.csv as pcsv

            options = pcsv.WriteOptions(include_header=header, quoting_style="needed")
            pcsv.write_csv(table, self._file, options)
        else:
            # orjson writes floats that read back exactly (pandas' to_json rounds them).
            options = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
            self._file.write(
                b"".join(
                    orjson.dumps(record, default=_json_default, option=options) + b"\n"
                    for record in table.to_pylist()
                )
            )
        self._file.flush()
        return self._file.tell()

    def close(self) -> None:
        self._file.close()


class ErrorsWriter:
    """The errors file: one JSON line {"line", "row", "reason"} per failed row."""

    def __init__(self, path: str, offset: int) -> None:
        mode = "r+b" if os.path.exists(path) else "wb"
        self._file = open(path, mode)  # noqa: SIM115 - closed by close()
        self._file.truncate(offset)
        self._file.seek(offset)

    def write(self, failures: list[tuple[int, int, str]]) -> int:
        """Append (line, row, reason) entries; returns the file's size after them."""
        for line, row, reason in failures:
            entry = {"line": line, "row": row, "reason": reason}
            self._file.write(orjson.dumps(entry) + b"\n")
        self._file.flush()
        return self._file.tell()

    def close(self) -> None:
        self._file.close()


class ParquetParts:
    """Parquet output as one part file per chunk in `directory`, joined into one at the end."""

    def __init__(self, directory: Path, chunks_done: int) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        for part in directory.glob("part-*"):  # chunks a killed run wrote past its checkpoint
            if not part.name.endswith(".parquet") or self._index(part) >= chunks_done:
                part.unlink()

    @staticmethod
    def _index(part: Path) -> int:
        return int(part.stem.split("-")[1])

    def write(self, index: int, table: Any) -> None:
        """Write chunk `index`, an Arrow table (atomically: a kill leaves no part behind)."""
        import pyarrow.parquet as pq

        target = self.directory / f"part-{index:06d}.parquet"
        partial = self.directory / f"part-{index:06d}.tmp"
        pq.write_table(table, partial)
        os.replace(partial, target)

    def assemble(self, output: str) -> None:
        """Join the parts, in order, into `output` (one row group per part; atomic replace)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        parts = sorted(self.directory.glob("part-*.parquet"), key=self._index)
        schemas = [pq.read_schema(part) for part in parts]
        # A column may be int64 in one chunk and double (a missing value) in the next.
        schema = (
            pa.unify_schemas(schemas, promote_options="permissive") if schemas else pa.schema([])
        )
        partial = f"{output}.partial"
        with pq.ParquetWriter(partial, schema) as writer:
            for part in parts:
                table = pq.read_table(part)
                writer.write_table(_conform(table, schema))
        os.replace(partial, output)
        shutil.rmtree(self.directory, ignore_errors=True)

    def close(self) -> None:
        """Nothing stays open between parts."""


def _conform(table: Any, schema: Any) -> Any:
    import pyarrow as pa

    columns = []
    for schema_field in schema:
        if schema_field.name in table.column_names:
            columns.append(table.column(schema_field.name).cast(schema_field.type))
        else:
            columns.append(pa.nulls(len(table), schema_field.type))
    return pa.Table.from_arrays(columns, schema=schema)
