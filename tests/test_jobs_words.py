"""Batch jobs in words and files, without a server: rows, rates, ETA, tables, paths, alignment."""

from __future__ import annotations

from pathlib import Path

import pytest

from primehub_jupyter.kernel import batch_files, jobs
from primehub_jupyter.kernel.options import JOB_OPTIONS

pd = pytest.importorskip("pandas")


def record(**fields) -> dict:
    base = {
        "id": "j0123456789",
        "deploymentId": "iris",
        "phase": "Running",
        "message": "",
        "rowsRead": 0,
        "rowsScored": 0,
        "rowsFailed": 0,
        "rowsPerSecond": 0.0,
        "totalRows": None,
        "progress": None,
        "chunksDone": 0,
        "createTime": "2026-11-30T05:00:00.000Z",
        "startTime": "2026-11-30T05:00:01.000Z",
        "finishTime": None,
        "errors": "/data/out.csv.errors.jsonl",
        "spec": {"input": "/data/in.csv", "output": "/data/out.csv", "outputFormat": "csv"},
    }
    return {**base, **fields}


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (-1, "-"), (0, "0s"), (4.4, "4s"), (59.6, "1m 00s"), (65, "1m 05s"),
     (3600, "1h 00m"), (7380, "2h 03m")],
)  # fmt: skip
def test_durations_read_as_a_clock(seconds, text):
    assert jobs.duration_text(seconds) == text


def test_rates_and_counts():
    assert jobs.rate_text(0) == "-" and jobs.rate_text(None) == "-"
    assert jobs.rate_text(2.345) == "2.3 rows/s"
    assert jobs.rate_text(45678.4) == "45,678 rows/s"
    assert jobs.count_text(100000) == "100,000" and jobs.count_text(None) == "-"


def test_eta_follows_the_rate_and_the_share_read():
    # 25,000 rows read are 25% of the input: 75,000 left at 5,000 rows/s is 15 s.
    job = record(rowsRead=25000, rowsScored=25000, progress=0.25, rowsPerSecond=5000.0)
    assert jobs.eta_seconds(job) == pytest.approx(15.0)
    line = jobs.job_line(job)
    assert "25,000 rows scored" in line and "5,000 rows/s" in line
    assert "25%" in line and "ETA 15s" in line
    # Unknown progress, no rate yet, or finished: no ETA.
    assert jobs.eta_seconds(record(rowsRead=10, rowsPerSecond=5.0)) is None
    assert jobs.eta_seconds(record(progress=0.5, rowsRead=10)) is None
    assert jobs.eta_seconds(record(phase="Succeeded", progress=1.0, rowsPerSecond=9.0)) is None


def test_a_finished_job_says_totals_and_failures():
    job = record(phase="Failed", rowsRead=100, rowsScored=60, rowsFailed=40, totalRows=100,
                 rowsPerSecond=120.0, message="40% of the rows failed")  # fmt: skip
    line = jobs.job_line(job)
    assert line.startswith("j0123456789: Failed")
    assert "60 of 100 rows scored, 40 failed" in line and "ETA" not in line
    assert line.endswith("- 40% of the rows failed")
    assert jobs.job_row(job)[:4] == ["j0123456789", "Failed", "60 (40 failed)", "120 rows/s"]


def test_the_job_table_as_text_html_and_frame():
    rows = [record(), record(id="j00000000ff", phase="Succeeded", rowsScored=5, rowsRead=5)]
    table = jobs.JobTable(rows)
    text = repr(table)
    assert text.splitlines()[0].split() == ["id", "phase", "rows", "rows/s", "started", "output"]
    assert "j00000000ff" in text and "/data/out.csv" in text
    assert 'data-phase="Succeeded"' in table._repr_html_()
    frame = table.to_frame()
    assert list(frame.index) == ["j0123456789", "j00000000ff"]
    assert frame.loc["j00000000ff", "rowsScored"] == 5
    assert repr(jobs.JobTable([])) == "no jobs yet"


def test_stats_html_carries_the_numbers():
    html = jobs.job_stats_html(record(phase="Succeeded", rowsRead=7, rowsScored=6, rowsFailed=1))
    assert 'data-phase="Succeeded"' in html and 'data-rows-scored="6"' in html
    assert 'data-rows-failed="1"' in html


def test_output_links_open_in_lab_only_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inside = jobs.file_link(str(tmp_path / "out" / "scored.csv"))
    assert 'href="out/scored.csv"' in inside
    assert "href" not in jobs.file_link("/elsewhere/scored.csv")
    assert "href" not in jobs.file_link("s3://bucket/scored.csv")


def test_paths_resolve_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert batch_files.local_uri("data/in.csv") == str(tmp_path / "data" / "in.csv")
    assert batch_files.local_uri("s3://bucket/in.csv") == "s3://bucket/in.csv"
    assert batch_files.default_output("/d/in.csv") == "/d/in.scored.csv"
    assert batch_files.default_output("/d.x/in") == "/d.x/in.scored"


def test_a_frame_is_written_without_its_index(tmp_path):
    frame = pd.DataFrame([[1.0, 2.0], [3.0, 4.0]], index=["a", "b"])
    path, format = batch_files.write_frame(frame, tmp_path)
    assert format == ("parquet" if batch_files.has_pyarrow() else "csv")
    back = batch_files.read_table(str(path), format)
    assert list(back.columns) == ["0", "1"] and back.to_numpy().tolist() == [[1, 2], [3, 4]]


def test_the_output_lines_up_with_the_input_index():
    index = pd.Index(["r0", "r1", "r2", "r3"])
    whole = pd.DataFrame({"p": [0.1, 0.2, 0.3, 0.4]})
    assert list(batch_files.align(whole, index, []).index) == list(index)
    # Rows 1 and 3 (r1, r3; CSV lines 3 and 5) failed: the others keep their labels in turn.
    partial = pd.DataFrame({"p": [0.1, 0.3]})
    errors = [{"line": 3, "row": 1, "reason": "bad"}, {"line": 5, "row": 3, "reason": "bad"}]
    aligned = batch_files.align(partial, index, errors)
    assert list(aligned.index) == list(index)
    assert aligned.loc["r2", "p"] == 0.3 and aligned["p"].isna().tolist() == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="cannot be lined up"):
        batch_files.align(partial, index, errors[:1])


def test_the_job_options_are_shared():
    names = [option.name for option in JOB_OPTIONS]
    assert names == ["output", "format", "predictor", "chunk_rows", "output_columns", "overwrite"]


def test_a_job_reads_its_errors_file(tmp_path: Path):
    errors = tmp_path / "out.csv.errors.jsonl"
    errors.write_text('{"line": 3, "reason": "bad"}\n\n{"line": 9, "reason": "worse"}\n')
    job = jobs.Job(record(errors=str(errors)), client=None)  # type: ignore[arg-type]
    assert [e["line"] for e in job.errors_list()] == [3, 9]
    assert job.errors_list(limit=1) == [{"line": 3, "reason": "bad"}]
