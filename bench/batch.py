"""Batch jobs: rows/s of the job runner on a large CSV, next to in-process scoring and HTTP.

One run per model (an iris LogisticRegression on 4 float columns; a pandas Pipeline with
imputation, scaling and one-hot encoding on 4 mixed columns): generate an N-row CSV, then
- in-process limit: `pandas.read_csv(chunksize=C)` and `model.predict_proba(chunk)` in this
  process, nothing written (the brief's peer);
- the job runner: `python -m primehub_jupyter.serving.batch BUNDLE --job-dir DIR` writing a CSV
  with the input columns, the class probabilities and request_id (its own scoring time and CPU,
  from its log; the process's peak RSS from wait4);
- row by row over HTTP: a model server (`python -m primehub_jupyter.serving BUNDLE --port 0`)
  called once per row on one keep-alive connection for a sample of rows, extrapolated.
Peak RSS is also measured on a file a tenth the size: bounded memory means about the same.
The job's first rows are compared with predict_proba on the same rows.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

CITIES = ["Paris", "Rome", "Oslo", "Lima"]


def iris_model() -> Any:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=1000).fit(X, y), X


def tabular_frame(n: int, seed: int) -> Any:
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n).astype("int64"),
            "income": rng.normal(5000, 1500, n).round(2),
            "city": rng.choice(CITIES, n),
            "member": rng.random(n) < 0.4,
        }
    )
    return frame


def tabular_model() -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = tabular_frame(400, 0)
    y = ((frame["age"] - 45) / 10 + (frame["income"] - 5000) / 1500 > 0).astype(int)
    numbers = Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())])
    prep = ColumnTransformer(
        [
            ("num", numbers, ["age", "income"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
            ("flag", "passthrough", ["member"]),
        ]
    )
    return Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=1000))]).fit(frame, y)


def write_csv(case: str, path: Path, rows: int) -> None:
    """An N-row CSV written in blocks (memory bounded here too)."""
    import pandas as pd

    block = 100_000
    with open(path, "w") as out:
        for start in range(0, rows, block):
            n = min(block, rows - start)
            if case == "iris":
                rng = np.random.default_rng(start)
                base = np.array([5.8, 3.0, 3.8, 1.2])
                frame = pd.DataFrame(
                    (base + rng.normal(0, [0.8, 0.4, 1.7, 0.7], (n, 4))).round(1),
                    columns=["sepal_length", "sepal_width", "petal_length", "petal_width"],
                )
            else:
                frame = tabular_frame(n, start + 1)
            frame.to_csv(out, index=False, header=start == 0)


def in_process(case: str, model: Any, path: Path, chunk_rows: int) -> dict[str, float]:
    import pandas as pd

    wall, cpu = time.perf_counter(), time.process_time()
    rows = 0
    for chunk in pd.read_csv(path, chunksize=chunk_rows):
        model.predict_proba(chunk.to_numpy() if case == "iris" else chunk)
        rows += len(chunk)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"rows": rows, "wall": wall, "cpu": cpu}


def in_process_writing(
    case: str, model: Any, path: Path, chunk_rows: int, output: Path
) -> dict[str, float]:
    """The in-process limit plus writing what the job writes (inputs, probabilities,
    request_id) with the same CSV writer: what any job, in any process, must at least do."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    wall, cpu = time.perf_counter(), time.process_time()
    rows = 0
    with open(output, "wb") as out:
        for chunk in pd.read_csv(path, chunksize=chunk_rows):
            proba = model.predict_proba(chunk.to_numpy() if case == "iris" else chunk)
            table = pa.Table.from_pandas(chunk, preserve_index=False)
            for i in range(proba.shape[1]):
                table = table.append_column(str(i), pa.array(proba[:, i]))
            ids = pa.array(np.arange(rows, rows + len(chunk)))
            ids = pc.binary_join_element_wise("j00000000b1-", pc.cast(ids, pa.string()), "")
            table = table.append_column("request_id", ids)
            options = pcsv.WriteOptions(include_header=rows == 0, quoting_style="needed")
            pcsv.write_csv(table, out, options)
            rows += len(chunk)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"rows": rows, "wall": wall, "cpu": cpu}


def run_job(bundle: Path, source: Path, workdir: Path, chunk_rows: int, tag: str) -> dict[str, Any]:
    from primehub_jupyter.core.jobs import JobRecord

    job_dir = workdir / f"job-{tag}"
    job_dir.mkdir(parents=True, exist_ok=True)
    output = workdir / f"out-{tag}.csv"
    record = JobRecord.model_validate(
        {
            "id": "j00000000b1",
            "deploymentId": "bench",
            "createTime": "2026-01-01T00:00:00.000Z",
            "spec": {
                "input": str(source),
                "output": str(output),
                "format": "csv",
                "outputFormat": "csv",
                "predictor": "main",
                "chunkRows": chunk_rows,
                "overwrite": True,
            },
        }
    )
    (job_dir / "job.json").write_text(json.dumps({"job": record.to_json()}))
    for name in ("checkpoint.json", "progress.json"):
        (job_dir / name).unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log = job_dir / "runner.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "primehub_jupyter.serving.batch",
                str(bundle),
                "--job-dir",
                str(job_dir),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    if process.returncode != 0:
        raise SystemExit(f"the job runner exited {process.returncode}:\n{text[-3000:]}")
    match = re.search(
        r"succeeded: (\d+) rows scored, \d+ failed in ([\d.]+) s \(([\d.]+) s CPU\)", text
    )
    assert match, text
    return {
        "rows": int(match.group(1)),
        "wall": float(match.group(2)),
        "cpu": float(match.group(3)),
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "process_cpu": usage.ru_utime + usage.ru_stime,
        "output": output,
    }


def over_http(bundle: Path, source: Path, workdir: Path, sample: int, table: bool) -> float:
    """Rows/s calling the model server once per row (one keep-alive connection)."""
    import pandas as pd
    import requests

    log = workdir / f"server-{bundle.name}.log"
    log.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "primehub_jupyter.serving",
            str(bundle),
            "--port",
            "0",
            "--log-file",
            str(log),
            "--no-access-log",
        ],
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        url = None
        while url is None:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"the model server did not start:\n{log.read_text()[-2000:]}")
            found = re.search(
                r"on (http://127\.0\.0\.1:\d+)", log.read_text() if log.exists() else ""
            )
            url = found.group(1) if found else None
            time.sleep(0.05)  # polling a log file for the address; not a measurement
        rows = pd.read_csv(source, nrows=sample)
        names = [str(c) for c in rows.columns]
        bodies = [
            json.dumps({"data": {"names": names, "ndarray": [list(map(_plain, r))]}})
            for r in rows.itertuples(index=False, name=None)
        ]
        session = requests.Session()
        headers = {"Content-Type": "application/json"}
        started = time.perf_counter()
        for body in bodies:
            answer = session.post(f"{url}/api/v1.0/predictions", data=body, headers=headers)
            answer.raise_for_status()
        return len(bodies) / (time.perf_counter() - started)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def check_equal(case: str, model: Any, source: Path, output: Path, rows: int = 20_000) -> float:
    """Largest difference between the job's probabilities and predict_proba on the same rows."""
    import pandas as pd

    given = pd.read_csv(source, nrows=rows)
    expected = model.predict_proba(given.to_numpy() if case == "iris" else given)
    written = pd.read_csv(output, nrows=rows)
    classes = [c for c in written.columns if c not in given.columns and c != "request_id"]
    return float(np.abs(written[classes].to_numpy() - expected).max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=10_000)
    parser.add_argument("--http-rows", type=int, default=2_000, help="rows sent over HTTP")
    parser.add_argument("--cases", default="iris,tabular")
    parser.add_argument("--workdir", type=Path, help="keep files here (default: a temp dir)")
    args = parser.parse_args(argv)

    from primehub_jupyter.serving.packaging import package

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-batch-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for case in args.cases.split(","):
        model = iris_model()[0] if case == "iris" else tabular_model()
        sample = None if case == "iris" else tabular_frame(2, 9)
        bundle = Path(
            package(
                model, workdir / f"bundle-{case}", name=case, sample_input=sample, overwrite=True
            )
        )
        big, small = workdir / f"{case}-{args.rows}.csv", workdir / f"{case}-small.csv"
        if not big.exists():
            write_csv(case, big, args.rows)
        write_csv(case, small, max(args.rows // 10, args.chunk_rows))
        limit = in_process(case, model, big, args.chunk_rows)
        writing = in_process_writing(case, model, big, args.chunk_rows, workdir / "inproc.csv")
        job = run_job(bundle, big, workdir, args.chunk_rows, case)
        job_small = run_job(bundle, small, workdir, args.chunk_rows, f"{case}-small")
        http = over_http(bundle, big, workdir, args.http_rows, case != "iris")
        difference = check_equal(case, model, big, job["output"])
        results.append((case, limit, writing, job, job_small, http, difference))

    print(
        f"\n{args.rows:,} rows, chunks of {args.chunk_rows:,}; "
        "rows/s (wall) and rows per CPU second"
    )
    header = (
        f"{'model':<8} {'in-process':>11} {'+ write':>10} {'job':>10} {'job/in-proc':>11}"
        f" {'job/+write':>10} {'http 1 row':>10} {'CPU: job/in-proc':>16} {'job/+write':>10}"
        f" {'peak RSS':>9} {'RSS 1/10':>9} {'max |diff|':>10}"
    )
    print(header)
    for case, limit, writing, job, small, http, difference in results:

        def rate(r: dict[str, Any], key: str = "wall") -> float:
            return float(r["rows"] / r[key])

        print(
            f"{case:<8} {rate(limit):>11,.0f} {rate(writing):>10,.0f} {rate(job):>10,.0f}"
            f" {rate(job) / rate(limit):>11.2f} {rate(job) / rate(writing):>10.2f}"
            f" {http:>10,.0f} {rate(job, 'cpu') / rate(limit, 'cpu'):>16.2f}"
            f" {rate(job, 'cpu') / rate(writing, 'cpu'):>10.2f}"
            f" {job['peak_rss_mb']:>7.0f}MB {small['peak_rss_mb']:>7.0f}MB {difference:>10.1e}"
        )
    print("target: job >= 0.70 of in-process; peak RSS about the same on a file 10x smaller")
    return 0


if __name__ == "__main__":
    sys.exit(main())
