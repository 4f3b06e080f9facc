"""The batch job runner as a real process: formats, failures, resume after kill -9, memory."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from primehub_jupyter.core.jobs import JobRecord
from primehub_jupyter.serving.packaging import package

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

REPO = Path(__file__).resolve().parents[1]
JOB_ID = "j0a1b2c3d4e"
IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CITIES = ["Oslo", "Paris", "Rome"]
# Generous: only a hung runner ever waits this long; nothing asserts on durations.
DEADLINE = 120.0


# ---- models and files -------------------------------------------------------------------------


def iris_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    values = np.array([5.8, 3.0, 3.8, 1.2]) + rng.normal(0, [0.8, 0.4, 1.7, 0.7], (n, 4))
    return pd.DataFrame(values.round(2), columns=IRIS_COLUMNS)


def credit_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),
            "income": rng.normal(5000, 1000, n).round(2),
            "city": rng.choice(CITIES, n),
            "member": rng.choice([True, False], n),
        }
    )
    frame.loc[frame.index % 7 == 3, "income"] = np.nan  # the imputer fills these
    return frame


@pytest.fixture(scope="module")
def iris(tmp_path_factory):
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(X, y)
    bundle = package(model, tmp_path_factory.mktemp("iris") / "iris", name="iris")
    return model, Path(bundle)


@pytest.fixture(scope="module")
def credit(tmp_path_factory):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = credit_frame(200, 1)
    y = np.where(frame["age"] > 45, "senior", "junior")
    numbers = Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())])
    prep = ColumnTransformer(
        [
            ("num", numbers, ["age", "income"]),
            ("city", OneHotEncoder(), ["city"]),  # refuses unknown cities
            ("member", "passthrough", ["member"]),
        ]
    )
    pipe = Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=500))]).fit(frame, y)
    root = tmp_path_factory.mktemp("credit")
    bundle = package(pipe, root / "credit", sample_input=frame.head(2))
    return pipe, Path(bundle)


def make_job(job_dir: Path, source: Path, output: Path, **spec: Any) -> JobRecord:
    """Write DIR/job.json as the engines do (spec resolved, absolute paths)."""
    from primehub_jupyter.core.jobs import format_of

    record = JobRecord.model_validate(
        {
            "id": JOB_ID,
            "deploymentId": "credit-abcde",
            "createTime": "2026-01-01T00:00:00.000Z",
            "spec": {
                "input": str(source),
                "output": str(output),
                "format": format_of(str(source)),
                "outputFormat": format_of(str(output)),
                "predictor": "main",
                **spec,
            },
        }
    )
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "job.json").write_text(json.dumps({"job": record.to_json()}))
    return record


def runner(bundle: Path, job_dir: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "primehub_jupyter.serving.batch",
            str(bundle),
            "--job-dir",
            str(job_dir),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )


def run(bundle: Path, job_dir: Path, *extra: str) -> tuple[int, str]:
    process = runner(bundle, job_dir, *extra)
    out, _ = process.communicate(timeout=DEADLINE)
    return process.returncode, out.decode()


def progress(job_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((job_dir / "progress.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_for(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)  # polling a file the runner replaces atomically


def read_output(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True, dtype=False)
    return pd.read_csv(path, dtype={"request_id": str})


def errors_of(output: Path) -> list[dict[str, Any]]:
    errors = Path(f"{output}.errors.jsonl")
    return [json.loads(line) for line in errors.read_text().splitlines()]


def write_input(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_csv(path, index=False)


# ---- predictions ------------------------------------------------------------------------------


def test_a_table_csv_is_scored_as_the_model_scores_it(credit, tmp_path):
    pipe, bundle = credit
    frame = credit_frame(500, 2)
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    frame.to_csv(source, index=False)
    make_job(tmp_path / "job", source, output, chunkRows=64)
    code, log = run(bundle, tmp_path / "job")
    assert code == 0, log
    written = read_output(output)
    assert list(written.columns) == [*frame.columns, "junior", "senior", "request_id"]
    np.testing.assert_allclose(
        written[["junior", "senior"]].to_numpy(), pipe.predict_proba(frame), rtol=0, atol=1e-12
    )
    assert written["request_id"].tolist() == [f"{JOB_ID}-{i}" for i in range(500)]
    state = progress(tmp_path / "job")
    assert state["phase"] == "Succeeded" and state["finishTime"]
    assert (state["rowsRead"], state["rowsScored"], state["rowsFailed"]) == (500, 500, 0)
    assert state["chunksDone"] == 8 and state["progress"] == 1.0 and state["totalRows"] == 500
    assert errors_of(output) == []


@pytest.mark.parametrize(
    ("given", "wanted"),
    [("parquet", "parquet"), ("jsonl", "jsonl"), ("csv", "parquet"), ("parquet", "jsonl")],
)
def test_every_format_in_and_out(iris, tmp_path, given, wanted):
    model, bundle = iris
    frame = iris_frame(300, 3)
    source, output = tmp_path / f"in.{given}", tmp_path / f"out.{wanted}"
    write_input(frame, source)
    make_job(tmp_path / "job", source, output, chunkRows=70)
    code, log = run(bundle, tmp_path / "job")
    assert code == 0, log
    written = read_output(output)
    assert list(written.columns) == [*IRIS_COLUMNS, "0", "1", "2", "request_id"]
    np.testing.assert_allclose(
        written[["0", "1", "2"]].to_numpy(float),
        model.predict_proba(frame.to_numpy()),
        rtol=0,
        atol=1e-12,
    )
    assert written["request_id"].tolist() == [f"{JOB_ID}-{i}" for i in range(300)]
    if given == "parquet":
        assert progress(tmp_path / "job")["totalRows"] == 300


def test_predictions_only(credit, tmp_path):
    pipe, bundle = credit
    frame = credit_frame(50, 4)
    source, output = tmp_path / "in.jsonl", tmp_path / "out.csv"
    write_input(frame, source)
    make_job(tmp_path / "job", source, output, outputColumns="predictions")
    code, log = run(bundle, tmp_path / "job")
    assert code == 0, log
    written = read_output(output)
    assert list(written.columns) == ["junior", "senior", "request_id"]
    np.testing.assert_allclose(
        written[["junior", "senior"]].to_numpy(), pipe.predict_proba(frame), atol=1e-12
    )


# ---- failing rows -----------------------------------------------------------------------------


def test_malformed_csv_rows_are_reported_by_line_and_the_job_succeeds(credit, tmp_path):
    pipe, bundle = credit
    frame = credit_frame(40, 5)
    lines = frame.to_csv(index=False).splitlines()
    # Line numbers count the header as line 1.
    lines[3] = "31,4000,Paris,True,extra"  # line 4: a field too many
    lines[8] = "abc,4000,Paris,True"  # line 9: not an integer
    lines[15] = "40,4000,Atlantis,False"  # line 16: a city the encoder refuses (model error)
    lines[22] = "40,4000,Rome,maybe"  # line 23: not true/false
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text("\n".join(lines) + "\n")
    make_job(tmp_path / "job", source, output, chunkRows=16, maxFailedShare=0.5)
    code, log = run(bundle, tmp_path / "job")
    assert code == 0, log
    errors = errors_of(output)
    assert [e["line"] for e in errors] == [4, 9, 16, 23]
    assert [e["row"] for e in errors] == [2, 7, 14, 21]
    assert "'age'" in errors[1]["reason"] and "'city'" in errors[2]["reason"]
    assert "Atlantis" in errors[2]["reason"] and "'member'" in errors[3]["reason"]
    written = read_output(output)
    good = [i for i in range(40) if i not in (2, 7, 14, 21)]
    assert written["request_id"].tolist() == [f"{JOB_ID}-{i}" for i in good]
    np.testing.assert_allclose(
        written[["junior", "senior"]].to_numpy(), pipe.predict_proba(frame.iloc[good]), atol=1e-12
    )
    state = progress(tmp_path / "job")
    assert (state["rowsRead"], state["rowsScored"], state["rowsFailed"]) == (40, 36, 4)


def test_malformed_jsonl_lines_are_reported(iris, tmp_path):
    _, bundle = iris
    frame = iris_frame(10, 6)
    lines = frame.to_json(orient="records", lines=True).splitlines()
    lines[2] = '{"sepal_length": 5.0, '  # not JSON
    lines[5] = "[1, 2, 3, 4]"  # not an object
    lines[7] = lines[7].split('"petal_width":')[0] + '"petal_width":"wide"}'  # not a number
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("\n".join(lines) + "\n")
    make_job(tmp_path / "job", source, output, maxFailedShare=0.5)
    code, log = run(bundle, tmp_path / "job")
    assert code == 0, log
    errors = errors_of(output)
    assert [(e["line"], e["row"]) for e in errors] == [(3, 2), (6, 5), (8, 7)]
    assert "petal_width" in errors[2]["reason"]
    assert len(read_output(output)) == 7


def test_too_many_failed_rows_fail_the_job(credit, tmp_path):
    _, bundle = credit
    frame = credit_frame(20, 7)
    frame["city"] = ["Atlantis"] * 15 + ["Oslo"] * 5
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    frame.to_csv(source, index=False)
    make_job(tmp_path / "job", source, output, maxFailedShare=0.2)
    code, log = run(bundle, tmp_path / "job")
    assert code == 1, log
    state = progress(tmp_path / "job")
    assert state["phase"] == "Failed" and "maxFailedShare" in state["message"]
    assert state["rowsFailed"] == 15 and state["finishTime"]
    assert len(errors_of(output)) == 15


# ---- resume -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_iris(tmp_path_factory):
    """Enough rows that a job is still running after its first chunk."""
    path = tmp_path_factory.mktemp("big") / "big.csv"
    iris_frame(300_000, 8).to_csv(path, index=False)
    return path


def _check_complete(model, source: Path, output: Path) -> None:
    frame = pd.read_csv(source)
    written = read_output(output)
    assert written["request_id"].tolist() == [f"{JOB_ID}-{i}" for i in range(len(frame))]
    np.testing.assert_allclose(
        written[["0", "1", "2"]].to_numpy(), model.predict_proba(frame.to_numpy()), atol=1e-12
    )


@pytest.mark.parametrize("output_format", ["csv", "parquet"])
def test_kill_9_mid_job_then_run_again_completes_without_duplicates(
    iris, big_iris, tmp_path, output_format
):
    model, bundle = iris
    output = tmp_path / f"out.{output_format}"
    job_dir = tmp_path / "job"
    make_job(job_dir, big_iris, output, chunkRows=5000)
    process = runner(bundle, job_dir)
    try:
        wait_for(lambda: progress(job_dir).get("chunksDone", 0) >= 2, "two chunks")
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    interrupted = progress(job_dir)
    assert interrupted["phase"] == "Running", "the job finished before it was killed"
    code, log = run(bundle, job_dir)
    assert code == 0, log
    assert "resuming after chunk" in log
    _check_complete(model, big_iris, output)
    assert progress(job_dir)["rowsRead"] == 300_000


def test_sigterm_stops_between_chunks_with_143_and_the_job_resumes(iris, big_iris, tmp_path):
    model, bundle = iris
    output = tmp_path / "out.csv"
    job_dir = tmp_path / "job"
    make_job(job_dir, big_iris, output, chunkRows=5000)
    process = runner(bundle, job_dir)
    try:
        wait_for(lambda: progress(job_dir).get("chunksDone", 0) >= 1, "a chunk")
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=DEADLINE)
    finally:
        process.kill()
    assert process.returncode == 143, out.decode()
    stopped = progress(job_dir)
    assert stopped["phase"] == "Pending" and "resume" in stopped["message"]
    assert 0 < stopped["rowsRead"] < 300_000
    code, log = run(bundle, job_dir)
    assert code == 0, log
    _check_complete(model, big_iris, output)


def test_a_finished_job_run_again_changes_nothing(iris, tmp_path):
    _, bundle = iris
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    iris_frame(30).to_csv(source, index=False)
    make_job(tmp_path / "job", source, output)
    assert run(bundle, tmp_path / "job")[0] == 0
    before = output.read_bytes()
    code, log = run(bundle, tmp_path / "job")
    assert code == 0 and "nothing to do" in log
    assert output.read_bytes() == before


# ---- refusals ---------------------------------------------------------------------------------


def test_check_refuses_what_cannot_run(credit, tmp_path):
    _, bundle = credit
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    credit_frame(10).to_csv(source, index=False)
    job_dir = tmp_path / "job"

    make_job(job_dir, source, output)
    assert run(bundle, job_dir, "--check") == (0, f"job {JOB_ID}: ready to run\n")

    make_job(job_dir, tmp_path / "missing.csv", output)
    code, message = run(bundle, job_dir, "--check")
    assert code == 1 and "missing.csv does not exist" in message

    credit_frame(10).drop(columns=["city"]).to_csv(tmp_path / "no-city.csv", index=False)
    make_job(job_dir, tmp_path / "no-city.csv", output)
    code, message = run(bundle, job_dir, "--check")
    assert code == 1 and "'city'" in message

    output.write_text("someone's file\n")
    make_job(job_dir, source, output)
    code, message = run(bundle, job_dir, "--check")
    assert code == 1 and "exists" in message and message.count("\n") == 1
    make_job(job_dir, source, output, overwrite=True)
    assert run(bundle, job_dir, "--check")[0] == 0

    # The run itself refuses the same output, without touching it.
    make_job(job_dir, source, output)
    code, _ = run(bundle, job_dir)
    assert code == 1 and output.read_text() == "someone's file\n"
    assert "exists" in progress(job_dir)["message"]


def test_bad_usage_and_a_model_that_does_not_load(iris, tmp_path):
    _, bundle = iris
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "job.json").write_text("{}")
    assert run(bundle, tmp_path / "job")[0] == 2

    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    iris_frame(5).to_csv(source, index=False)
    make_job(tmp_path / "job", source, output)
    broken = tmp_path / "broken"
    package(
        __import__("sklearn.linear_model")
        .linear_model.LogisticRegression()
        .fit([[0], [1]], [0, 1]),
        broken,
    )
    (broken / "model.joblib").write_bytes(b"not a pickle")
    code, log = run(broken, tmp_path / "job")
    assert code == 3, log
    state = progress(tmp_path / "job")
    assert state["phase"] == "Failed" and "model failed to load" in state["message"]


# ---- memory -----------------------------------------------------------------------------------


def _peak_rss_mb(bundle: Path, job_dir: Path) -> float:
    process = runner(bundle, job_dir)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0, process.stdout.read().decode() if process.stdout else ""
    return usage.ru_maxrss / 1024


def test_memory_is_bounded_by_the_chunk_not_the_file(credit, tmp_path):
    _, bundle = credit
    note = "x" * 300  # wide rows: the big file is far larger than what a chunk holds
    sizes = {}
    for name, rows in (("small", 4_000), ("big", 160_000)):
        frame = credit_frame(rows, 9)
        frame["note"] = note
        source = tmp_path / f"{name}.csv"
        frame.to_csv(source, index=False)
        make_job(tmp_path / name, source, tmp_path / f"{name}-out.csv", chunkRows=2000)
        sizes[name] = _peak_rss_mb(bundle, tmp_path / name)
    big_file_mb = (tmp_path / "big.csv").stat().st_size / 2**20
    assert big_file_mb > 45
    # The big input alone, as a DataFrame, would add more than its size on disk.
    assert sizes["big"] - sizes["small"] < 20, sizes


# ---- http input and the decoding shortcut -------------------------------------------------------


@pytest.fixture
def http_files(tmp_path):
    """A static file server on 127.0.0.1 for http(s) inputs."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("given", ["csv", "parquet", "jsonl"])
def test_an_http_input_is_streamed(iris, http_files, tmp_path, given):
    model, bundle = iris
    served, url = http_files
    frame = iris_frame(120, 10)
    write_input(frame, served / f"in.{given}")
    output = tmp_path / "out.csv"
    make_job(tmp_path / "job", f"{url}/in.{given}", output, chunkRows=50)
    assert run(bundle, tmp_path / "job", "--check")[0] == 0
    code, log = run(bundle, tmp_path / "job")
    assert code == 0, log
    written = read_output(output)
    np.testing.assert_allclose(
        written[["0", "1", "2"]].to_numpy(), model.predict_proba(frame.to_numpy()), atol=1e-12
    )
    assert progress(tmp_path / "job")["rowsScored"] == 120

    make_job(tmp_path / "job", f"{url}/missing.{given}", tmp_path / "other.csv")
    code, message = run(bundle, tmp_path / "job", "--check")
    assert code == 1 and "missing" in message


def test_the_decoding_shortcut_gives_what_table_gives(tmp_path):
    """Columns pandas already read in Table's form skip Table's per-value loop: same frame."""
    from primehub_jupyter.serving.batch_io import read_chunks
    from primehub_jupyter.serving.batch_rows import Scorer, _json_values
    from primehub_jupyter.serving.descriptor import BundleDescriptor, Signature, TensorSpec
    from primehub_jupyter.serving.tables import Table

    specs = [
        TensorSpec(name="i", datatype="INT64", shape=[-1], dtype="int64"),
        TensorSpec(name="gaps", datatype="INT64", shape=[-1], dtype="int64"),
        TensorSpec(name="f", datatype="FP64", shape=[-1], dtype="float64"),
        TensorSpec(name="s", datatype="BYTES", shape=[-1], dtype="str"),
        TensorSpec(name="o", datatype="BYTES", shape=[-1], dtype="object"),
        TensorSpec(name="c", datatype="BYTES", shape=[-1], dtype="category", categories=["x", "y"]),
        TensorSpec(name="b", datatype="BOOL", shape=[-1], dtype="bool"),
        TensorSpec(name="d", datatype="BYTES", shape=[-1], dtype="datetime64[ns]"),
    ]
    descriptor = BundleDescriptor(
        name="t",
        framework="sklearn",
        runtime="sklearn",
        artifact="model.joblib",
        signature=Signature(content_type="pd", inputs=specs),
    )
    source = tmp_path / "in.csv"
    source.write_text(
        "i,gaps,f,s,o,c,b,d\n"
        "1,2,1.5,007,a,x,True,2024-01-01\n"
        "2,,,b,,z,False,2024-02-29T12:00:00\n"
        "3,4,-0.25,,c,,True,2023-12-31\n"
    )
    text = tuple(
        s.name for s in specs if s.dtype in ("str", "object", "category", "datetime64[ns]")
    )
    chunk = next(read_chunks(str(source), "csv", 100, text_columns=text))
    scorer = Scorer(None, descriptor, [s.name for s in specs], text_input=True)  # type: ignore[arg-type]
    decoded, positions, failures = scorer._decode_table(chunk.frame)
    assert failures == {} and positions.tolist() == [0, 1, 2]
    values = {s.name: _json_values(s, chunk.frame[s.name], True) for s in specs}
    pd.testing.assert_frame_equal(decoded, Table(specs).frame(values))
    assert decoded["s"].tolist()[0] == "007" and decoded["gaps"].isna().tolist() == [
        False,
        True,
        False,
    ]


def test_csv_lines_are_copied_verbatim_with_failed_rows_left_out(credit, tmp_path):
    pipe, bundle = credit
    frame = credit_frame(60, 8)
    frame["note"] = [f'n{i}, "q"' for i in range(60)]  # commas and quotes: quoted fields
    lines = frame.to_csv(index=False).splitlines()
    lines[2] = lines[2].replace(",", ", ", 1)  # text pandas would not write back: kept as is
    lines[5] = "31,4000,Paris,True,x,extra"  # line 6: a field too many
    lines[12] = lines[12].replace(lines[12].split(",")[2], "Atlantis", 1)  # line 13: refused
    lines[40] = '50,4000.50,Rome,False,"two\nlines"'  # a record over two lines: copied no more
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    make_job(tmp_path / "job", source, output, chunkRows=16, maxFailedShare=0.5)
    code, log = run(bundle, tmp_path / "job")
    assert code == 0, log
    assert [e["line"] for e in errors_of(output)] == [6, 13]
    text = output.read_text()
    head = text.splitlines()
    assert head[0] == lines[0] + ',"junior","senior","request_id"'
    kept = [i for i in range(1, 41) if i not in (5, 12)]
    for number, i in enumerate(kept[:30], 1):  # chunks before the two-line record
        assert head[number].startswith(lines[i] + ","), head[number]
    good = [i for i in range(60) if i not in (4, 11)]
    expected = pd.read_csv(io.StringIO("\n".join(lines[:5] + lines[6:]))).drop(index=10)
    written = pd.read_csv(output, dtype={"request_id": str}, float_precision="round_trip")
    assert written["request_id"].tolist() == [f"{JOB_ID}-{i}" for i in good]
    assert written["note"].tolist() == expected["note"].tolist()
    scored = expected.drop(columns="note").reset_index(drop=True)
    scored["age"] = scored["age"].astype("int64")
    np.testing.assert_array_equal(
        written[["junior", "senior"]].to_numpy(), pipe.predict_proba(scored)
    )
