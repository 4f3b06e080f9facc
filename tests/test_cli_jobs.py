"""primehub-deploy batch and jobs against a real `primehub-deploy serve` running real jobs."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import termios
from pathlib import Path

import numpy as np
import pytest

from .serve_helpers import CLI, serve_deployed

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, bundles):
    server = serve_deployed(tmp_path_factory.mktemp("cli-jobs"), bundles["v1"])
    yield server
    server.cleanup()


def iris_csv(path: Path, iris, rows: int, bad_rows: tuple[int, ...] = ()) -> Path:
    X, _ = iris
    frame = pd.DataFrame(np.resize(X, (rows, 4)), columns=COLUMNS).astype(object)
    for row in bad_rows:
        frame.iloc[row, 1] = "not a number"
    frame.to_csv(path, index=False)
    return path


def run_in_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run primehub-deploy on a pseudo-terminal (rich draws its live bar); exit code, output."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    env = {k: v for k, v in env.items() if k != "JPY_PARENT_PID"}
    proc = subprocess.Popen(
        [*CLI, *args], stdin=follower, stdout=follower, stderr=follower,
        env={**env, "TERM": "xterm-256color"}, close_fds=True,
    )  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: every writer has closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(timeout=180), b"".join(chunks).decode(errors="replace")


def test_batch_waits_with_a_progress_bar_and_the_output_matches_the_model(
    served, iris, models, tmp_path
):
    source = iris_csv(tmp_path / "in.csv", iris, 30_000)
    output = tmp_path / "scored.csv"
    code, text = run_in_terminal(
        ["batch", served.deployment_id, str(source), "-o", str(output), "--chunk-rows", "1000",
         "--wait"],
        served.env,
    )  # fmt: skip
    plain = ANSI.sub("\n", text)
    assert code == 0, plain[-3000:]
    # The bar: the job, its rows and their rate, then the summary.
    assert re.search(r"j[0-9a-f]{10} Succeeded", plain), plain[-3000:]
    assert "30,000 rows" in plain
    assert re.search(r"[\d,.]+ rows/s", plain), plain[-3000:]
    assert "rows read 30,000, scored 30,000, failed 0" in plain
    scored = pd.read_csv(output)
    assert len(scored) == 30_000 and list(scored.columns[:4]) == COLUMNS
    predictions = scored.drop(columns=[*COLUMNS, "request_id"]).to_numpy(dtype=float)
    X = scored[COLUMNS].to_numpy(dtype=float)
    assert np.allclose(predictions, models["v1"].predict_proba(X))


def test_malformed_rows_go_to_the_errors_file_and_the_job_succeeds(served, iris, tmp_path):
    source = iris_csv(tmp_path / "in.csv", iris, 500, bad_rows=(3, 250, 499))
    result = served.cli("batch", served.deployment_id, str(source), "--wait")
    assert "rows read 500, scored 497, failed 3" in result.stdout
    # Without a terminal the progress comes as lines on stderr, never redrawn.
    assert "Succeeded" in result.stderr and "\x1b[2K" not in result.stderr
    errors = tmp_path / "in.scored.csv.errors.jsonl"
    assert f"errors: {errors}" in result.stdout
    entries = [json.loads(line) for line in errors.read_text().splitlines()]
    assert [entry["row"] for entry in entries] == [3, 250, 499]
    assert all(entry["reason"] for entry in entries)


def test_a_failing_job_exits_non_zero_with_the_reason(served, iris, tmp_path):
    source = iris_csv(tmp_path / "bad.csv", iris, 50, bad_rows=tuple(range(50)))
    result = served.cli(
        "batch", served.deployment_id, str(source), "-o", str(tmp_path / "o.csv"), "--wait",
        check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"error: job j[0-9a-f]{10} failed: .+", result.stderr), result.stderr
    assert "failed 50" in result.stdout


def test_a_bad_submission_is_one_line(served, tmp_path):
    result = served.cli(
        "batch", served.deployment_id, str(tmp_path / "missing.csv"), "--wait", check=False
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "missing.csv" in result.stderr


def test_jobs_lists_shows_logs_and_cancels(served, iris, tmp_path):
    done_source = iris_csv(tmp_path / "small.csv", iris, 100)
    done = served.cli("batch", served.deployment_id, str(done_source)).stdout.strip()
    assert re.fullmatch(r"j[0-9a-f]{10}", done)
    big = iris_csv(tmp_path / "big.csv", iris, 300_000)
    running = served.cli(
        "batch", served.deployment_id, str(big), "--chunk-rows", "100"
    ).stdout.strip()
    cancelled = served.cli("jobs", served.deployment_id, "--cancel", running).stdout
    assert cancelled.strip() == f"{running}: Cancelled"
    record = json.loads(served.cli("jobs", served.deployment_id, running, "-o", "json").stdout)
    assert record["phase"] == "Cancelled" and record["rowsRead"] < 300_000

    listed = served.cli("jobs", served.deployment_id).stdout
    header = listed.splitlines()[0].split()
    assert header == ["ID", "PHASE", "ROWS", "ROWS/S", "STARTED", "OUTPUT"]
    assert listed.index(running) < listed.index(done)  # newest first
    served.cli("jobs", served.deployment_id, "--logs", done)  # a log is there to read
    # A finished job is removed, not cancelled.
    removed = served.cli("jobs", served.deployment_id, "--cancel", running).stdout
    assert removed.strip() == f"{running}: removed"
    ids = [job["id"] for job in json.loads(
        served.cli("jobs", served.deployment_id, "-o", "json").stdout)]  # fmt: skip
    assert running not in ids and done in ids
