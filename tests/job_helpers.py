"""Batch job test helpers: iris tables in each format, the job's processes, output checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import psutil

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
RUNNER = "primehub_jupyter.serving.batch"


def iris_rows(X: np.ndarray, count: int) -> np.ndarray:
    """`count` rows of iris features, the 150 repeated in order."""
    return np.tile(X, (count // len(X) + 1, 1))[:count]


def write_table(path: Path, rows: np.ndarray) -> Path:
    """The rows as a file of the format its name ends in (csv, parquet, jsonl)."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=FEATURES)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        raise ValueError(path)
    return path


def read_table(path: Path, fmt: str) -> Any:
    import pandas as pd

    if fmt == "csv":
        return pd.read_csv(path)
    if fmt == "parquet":
        return pd.read_parquet(path)
    return pd.read_json(path, orient="records", lines=True)


def assert_predictions(output: Any, rows: np.ndarray, model: Any) -> None:
    """Every input row once, in order, with the model's own probabilities beside it."""
    assert len(output) == len(rows)
    np.testing.assert_allclose(output[FEATURES].to_numpy(dtype=float), rows, rtol=1e-12)
    assert "request_id" in output.columns
    assert output["request_id"].is_unique
    predicted = [c for c in output.columns if c not in FEATURES and c != "request_id"]
    assert len(predicted) == 3, output.columns
    np.testing.assert_allclose(
        output[predicted].to_numpy(dtype=float), model.predict_proba(rows), rtol=1e-6, atol=1e-9
    )


def job_processes(job_id: str) -> list[psutil.Process]:
    """Live runner processes of a job (a sandbox's launcher and what it runs), by command line."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE or RUNNER not in cmdline:
            continue
        if any(job_id in arg for arg in cmdline) and "--check" not in cmdline:
            found.append(proc)
    return found


def runner_process(job_id: str) -> psutil.Process | None:
    """The Python runner itself (inside the sandbox when there is one)."""
    for proc in job_processes(job_id):
        if not (proc.info["cmdline"] or [""])[0].endswith("bwrap"):
            return proc
    return None
