"""A batch job's files as the kernel sees them: paths resolved, a DataFrame written, output read."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SUFFIXES = {"parquet": ".parquet", "csv": ".csv", "jsonl": ".jsonl"}


def local_uri(uri: str | Path) -> str:
    """A path as the server must see it: relative paths resolved against the kernel's working
    directory (as modelURI is), `~` expanded; URIs with a scheme (s3://, pvc://) as given."""
    text = str(uri)
    if "://" in text:
        return text
    return str(Path(text).expanduser().resolve())


def default_output(input_uri: str) -> str:
    """`data.csv` -> `data.scored.csv` beside the input."""
    stem, dot, suffix = input_uri.rpartition(".")
    if not dot or "/" in suffix:
        return input_uri + ".scored"
    return f"{stem}.scored.{suffix}"


def has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def job_folder(deployment_id: str) -> Path:
    """A new folder for one DataFrame's job files: `.primehub/jobs/<id>-<UTC time>` under the
    kernel's working directory (beside the notebook, where the server can read it)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    slug = re.sub(r"[^a-z0-9]+", "-", deployment_id.lower()).strip("-") or "job"
    folder = Path.cwd() / ".primehub" / "jobs" / f"{slug}-{stamp}"
    folder.mkdir(parents=True, exist_ok=False)
    return folder


def write_frame(frame: Any, folder: Path) -> tuple[Path, str]:
    """Write a DataFrame's rows (not its index) as Parquet, or CSV without pyarrow; the file
    and its format."""
    # Parquet wants text column names; a frame built from a numpy array has 0, 1, 2...
    rows = frame.reset_index(drop=True).rename(columns=str)
    if has_pyarrow():
        path = folder / "input.parquet"
        rows.to_parquet(path, index=False)
        return path, "parquet"
    path = folder / "input.csv"
    rows.to_csv(path, index=False)
    return path, "csv"


def read_table(path: str, format: str) -> Any:
    """A job's output file as a DataFrame."""
    import pandas as pd

    if format == "parquet":
        return pd.read_parquet(path)
    if format == "jsonl":
        return pd.read_json(path, lines=True)
    return pd.read_csv(path)


def failed_rows(errors: list[dict[str, Any]]) -> set[int]:
    """0-based input rows that failed: each errors-file entry's `row` (its `line` counts the
    file's lines, a CSV header included)."""
    return {entry["row"] for entry in errors if isinstance(entry.get("row"), int)}


def align(frame: Any, index: Any, errors: list[dict[str, Any]]) -> Any:
    """The output rows under the input's index: the runner keeps the input's order and leaves
    failed rows out, so the rows that did not fail take the index in turn; a failed row comes
    back with missing values."""
    if len(frame) == len(index):
        return frame.set_axis(index, axis=0)
    failed = failed_rows(errors)
    kept = [label for position, label in enumerate(index) if position not in failed]
    if len(kept) != len(frame):
        raise ValueError(
            f"the output has {len(frame)} rows for {len(index)} input rows and "
            f"{len(failed)} failed: it cannot be lined up with the input"
        )
    return frame.set_axis(kept, axis=0).reindex(index)
