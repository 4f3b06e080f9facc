"""Batch job runner: `python -m primehub_jupyter.serving.batch BUNDLE --job-dir DIR`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ..core.jobs import JobRecord, JobSpec
    from .batch_rows import Scorer

#: Exit codes (the engines map them to job phases).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_MODEL_LOAD_FAILED = 3
EXIT_STOPPED = 128 + signal.SIGTERM  # 143: stopped between chunks, run again to resume

JOB_FILE = "job.json"
PROGRESS_FILE = "progress.json"
#: Where the runner keeps what it needs to resume (its own, not part of the contract).
CHECKPOINT_FILE = "checkpoint.json"
PARTS_DIR = "parts"
REQUEST_ID = "request_id"


class JobFailed(Exception):
    """The job cannot go on; the message says why (written to progress.json)."""


def _now() -> str:
    value = datetime.now(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` to `path` atomically (readers never see a half-written file)."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(data), encoding="utf-8")
    os.replace(partial, path)


def read_job(job_dir: Path) -> JobRecord:
    """The JobRecord in DIR/job.json ({"job": {...}}); click.UsageError when it is not one."""
    from pydantic import ValidationError

    from ..core.jobs import JobRecord

    path = job_dir / JOB_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return JobRecord.model_validate(document["job"])
    except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc).splitlines()[0]
        raise click.UsageError(f'{path} must hold {{"job": <JobRecord>}}: {reason}') from None


# ---- state --------------------------------------------------------------------------------------


class Run:
    """One run of a job: counters, the checkpoint it resumes from, progress.json it writes."""

    def __init__(self, job: JobRecord, job_dir: Path) -> None:
        self.job = job
        self.spec: JobSpec = job.spec
        self.dir = job_dir
        self.checkpoint: dict[str, Any] = self._read_checkpoint()
        self.rows_read = int(self.checkpoint.get("rowsRead", 0))
        self.rows_scored = int(self.checkpoint.get("rowsScored", 0))
        self.rows_failed = int(self.checkpoint.get("rowsFailed", 0))
        self.chunks_done = int(self.checkpoint.get("chunksDone", 0))
        self.start_time: str = self.checkpoint.get("startTime") or _now()
        self.total_rows: int | None = self.checkpoint.get("totalRows")
        self.progress: float | None = self.checkpoint.get("progress")
        self.started = time.monotonic()
        self.rows_this_run = 0
        #: The output's columns, fixed by the first chunk written.
        self.columns: list[str] | None = self.checkpoint.get("columns")

    def _read_checkpoint(self) -> dict[str, Any]:
        try:
            data = json.loads((self.dir / CHECKPOINT_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        # A checkpoint of another output (a job dir reused) does not count.
        return data if isinstance(data, dict) and data.get("output") == self.spec.output else {}

    @property
    def owns_output(self) -> bool:
        """Whether the output on disk is this job's own partial output (a resumed run)."""
        return bool(self.checkpoint)

    def counters(self) -> dict[str, Any]:
        """The counters now, as the checkpoint and progress.json record them."""
        return {
            "chunksDone": self.chunks_done,
            "rowsRead": self.rows_read,
            "rowsScored": self.rows_scored,
            "rowsFailed": self.rows_failed,
            "totalRows": self.total_rows,
            "progress": self.progress,
        }

    def save_checkpoint(self, counters: dict[str, Any] | None = None, **fields: Any) -> None:
        """Record the finished chunks and the file offsets they end at."""
        self.checkpoint.update(
            output=self.spec.output, startTime=self.start_time, **(counters or self.counters())
        )
        self.checkpoint.update(fields)
        write_json(self.dir / CHECKPOINT_FILE, self.checkpoint)

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return round(self.rows_this_run / elapsed, 1) if elapsed > 0 else 0.0

    def report(
        self,
        phase: str,
        message: str = "",
        finished: bool = False,
        counters: dict[str, Any] | None = None,
    ) -> None:
        """Write progress.json with the JobRecord progress fields."""
        write_json(
            self.dir / PROGRESS_FILE,
            {
                "phase": phase,
                "message": message,
                **(counters or self.counters()),
                "rowsPerSecond": self.rate(),
                "startTime": self.start_time,
                "finishTime": _now() if finished else None,
            },
        )


# ---- checking -----------------------------------------------------------------------------------


def check_job(job: JobRecord, bundle: Path, job_dir: Path) -> str:
    """Why the job cannot run (input, columns, output), or "" when it can. Loads no model."""
    from .batch_io import InputError, input_columns, is_url
    from .batch_rows import ColumnsError, needed_columns
    from .bundle import load_bundle
    from .errors import BundleError

    spec = job.spec
    if not is_url(spec.input) and not os.path.isfile(spec.input):
        return f"the input {spec.input} does not exist (or is not a file)"
    try:
        descriptor = load_bundle(bundle)
    except BundleError as exc:
        return str(exc)
    try:
        needed_columns(descriptor, input_columns(spec.input, spec.format, workdir=job_dir))
    except (InputError, ColumnsError) as exc:
        return str(exc)
    return output_problem(job, Run(job, job_dir))


def output_problem(job: JobRecord, run: Run) -> str:
    """Why the output cannot be written, or ""."""
    spec = job.spec
    parent = Path(spec.output).parent
    if not parent.is_dir():
        return f"the output's directory {parent} does not exist"
    if os.path.exists(spec.output) and not spec.overwrite and not run.owns_output:
        return f"the output {spec.output} exists; choose another output or set overwrite"
    return ""


# ---- running ------------------------------------------------------------------------------------


class _Stop:
    """SIGTERM: while loading, exit at once; while scoring, stop after the current chunk."""

    requested = False
    loading = True

    @classmethod
    def handle(cls, signum: int, _frame: Any) -> None:
        cls.requested = True
        if cls.loading:
            raise SystemExit(128 + signum)


def run_job(job: JobRecord, bundle: Path, job_dir: Path) -> int:
    """Score the job's input into its output, resuming after the last finished chunk."""
    run = Run(job, job_dir)
    state = run.checkpoint.get("phase")
    if state in ("Succeeded", "Failed"):
        print(f"job {job.id} already {state.lower()}; nothing to do", flush=True)
        run.report(state, run.checkpoint.get("message", ""), finished=True)
        return EXIT_OK if state == "Succeeded" else EXIT_FAILED
    problem = output_problem(job, run)
    if problem:
        return _failed(run, problem)
    if run.chunks_done:
        print(f"job {job.id}: resuming after chunk {run.chunks_done}", flush=True)
    run.report("Running", "loading the model")
    try:
        from .server import ServerOptions, load_model

        descriptor, runtime = load_model(ServerOptions(bundle=bundle))
    except SystemExit:
        raise
    except Exception as exc:
        import traceback

        traceback.print_exc()
        message = f"model failed to load: {type(exc).__name__}: {exc}"
        _failed(run, message, final=False)  # may pass on a rerun (memory, a file restored)
        return EXIT_MODEL_LOAD_FAILED
    try:
        return _score(run, descriptor, runtime)
    except JobFailed as exc:
        return _failed(run, str(exc))
    except OSError as exc:  # a full disk, an output directory gone
        return _failed(run, f"cannot write the output: {exc}")


def _failed(run: Run, message: str, *, final: bool = True) -> int:
    """Report the failure; a final one is kept, so running the job again does nothing."""
    print(f"job {run.job.id} failed: {message}", file=sys.stderr, flush=True)
    if run.checkpoint and final:
        run.save_checkpoint(phase="Failed", message=message)
    run.report("Failed", message, finished=True)
    return EXIT_FAILED


def _score(run: Run, descriptor: Any, runtime: Any) -> int:
    from .batch_io import (
        ErrorsWriter,
        InputError,
        ParquetParts,
        TextWriter,
        input_columns,
        parquet_rows,
        read_chunks,
    )
    from .batch_rows import ColumnsError, Scorer, needed_columns, text_columns

    spec = run.spec
    try:
        available = input_columns(spec.input, spec.format, workdir=run.dir)
        columns = needed_columns(descriptor, available)
        if spec.format == "parquet":
            run.total_rows = parquet_rows(spec.input, run.dir)
        chunks = read_chunks(
            spec.input,
            spec.format,
            spec.chunk_rows,
            text_columns=text_columns(descriptor),
            workdir=run.dir,
            # CSV to CSV with every input column: the input lines are copied as they are
            # rather than parsed values formatted again (most of a job's CPU for few columns).
            raw_lines=spec.format == "csv"
            and spec.output_format == "csv"
            and spec.output_columns == "all"
            and REQUEST_ID not in available,
        )
    except (InputError, ColumnsError) as exc:
        raise JobFailed(str(exc)) from None
    scorer = Scorer(runtime, descriptor, columns, text_input=spec.format == "csv")
    if run.checkpoint.get("predictionColumns"):
        scorer.output_columns = list(run.checkpoint["predictionColumns"])
    # Marked before the output is created: a run killed right after creating it still
    # recognises the file as its own.
    run.save_checkpoint(
        phase="Running",
        outputBytes=run.checkpoint.get("outputBytes", 0),
        errorsBytes=run.checkpoint.get("errorsBytes", 0),
    )
    parquet = spec.output_format == "parquet"
    output = (
        ParquetParts(run.dir / PARTS_DIR, run.chunks_done)
        if parquet
        else TextWriter(spec.output, spec.output_format, run.checkpoint["outputBytes"])
    )
    errors = ErrorsWriter(spec.errors, run.checkpoint["errorsBytes"])
    writer = _Writer(run, output, errors)
    _Stop.loading = False
    run.started = time.monotonic()  # rows/s of scoring, not of loading the model
    cpu_started = time.process_time()
    run.report("Running")
    print(
        f"job {run.job.id}: scoring {spec.input} ({spec.format}) into {spec.output} "
        f"({spec.output_format}), {spec.chunk_rows} rows per chunk",
        flush=True,
    )
    try:
        for index, chunk in enumerate(chunks):
            if index < run.chunks_done:
                continue  # scored by an earlier run (re-read to keep the line numbers)
            table, failures = _chunk_result(run, scorer, chunk)
            run.chunks_done = index + 1
            run.progress = chunk.progress
            # Written on the writer thread while the next chunk is read and scored.
            writer.submit(index, table, failures, run.counters(), scorer.output_columns)
            share = run.rows_failed / run.rows_read if run.rows_read else 0.0
            if share > spec.max_failed_share:
                raise JobFailed(
                    f"{run.rows_failed} of {run.rows_read} rows failed ({share:.1%}), more than "
                    f"maxFailedShare {spec.max_failed_share:g}; see {spec.errors}"
                )
            if _Stop.requested:
                writer.wait()
                message = f"stopped by SIGTERM after chunk {run.chunks_done}; run again to resume"
                print(message, flush=True)
                run.report("Pending", message)
                return EXIT_STOPPED
        writer.wait()
    except InputError as exc:
        raise JobFailed(str(exc)) from None
    finally:
        writer.close()
    if isinstance(output, ParquetParts):
        output.assemble(spec.output)
    elif run.checkpoint["outputBytes"] == 0:
        Path(spec.output).touch()
    run.total_rows = run.rows_read
    run.progress = 1.0
    message = f"{run.rows_scored} rows scored, {run.rows_failed} failed"
    run.save_checkpoint(phase="Succeeded", message=message)
    run.report("Succeeded", message, finished=True)
    elapsed = time.monotonic() - run.started
    cpu = time.process_time() - cpu_started
    print(
        f"job {run.job.id} succeeded: {message} in {elapsed:.2f} s ({cpu:.2f} s CPU) this run",
        flush=True,
    )
    return EXIT_OK


class _Writer:
    """Writes each chunk's output and errors, then its checkpoint and progress, on a thread.

    At most one chunk waits to be written, so memory stays a few chunks; the checkpoint of a
    chunk is saved only after its rows are in the files, so a kill -9 anywhere resumes cleanly.
    """

    def __init__(self, run: Run, output: Any, errors: Any) -> None:
        from concurrent.futures import Future, ThreadPoolExecutor

        self.run = run
        self.output = output
        self.errors = errors
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-writer")
        self._pending: Future[None] | None = None

    def submit(
        self,
        index: int,
        table: Any,
        failures: list[tuple[int, int, str]],
        counters: dict[str, Any],
        prediction_columns: list[str] | None,
    ) -> None:
        """Write chunk `index` once the previous chunk is written."""
        self.wait()
        self._pending = self._pool.submit(
            self._write, index, table, failures, counters, prediction_columns
        )

    def wait(self) -> None:
        """Until the pending chunk is written; re-raises its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Finish the pending write (errors were reported by wait) and close the files."""
        with contextlib.suppress(Exception):  # the caller is already failing
            self.wait()
        self._pool.shutdown()
        self.output.close()
        self.errors.close()

    def _write(
        self,
        index: int,
        table: Any,
        failures: list[tuple[int, int, str]],
        counters: dict[str, Any],
        prediction_columns: list[str] | None,
    ) -> None:
        from .batch_io import ParquetParts

        run = self.run
        output_bytes = run.checkpoint["outputBytes"]
        if table is not None:
            if isinstance(self.output, ParquetParts):
                self.output.write(index, table)
            else:
                output_bytes = self.output.write(table, header=output_bytes == 0)
        errors_bytes = self.errors.write(failures)
        run.save_checkpoint(
            counters,
            outputBytes=output_bytes,
            errorsBytes=errors_bytes,
            predictionColumns=prediction_columns,
            columns=run.columns,
        )
        run.report("Running", counters=counters)
        print(
            f"chunk {counters['chunksDone']}: {counters['rowsRead']} rows read, "
            f"{counters['rowsFailed']} failed, {run.rate():.0f} rows/s",
            flush=True,
        )


def _chunk_result(run: Run, scorer: Scorer, chunk: Any) -> tuple[Any, list[tuple[int, int, str]]]:
    """The output rows of a chunk (an Arrow table, None when no row was scored) and its
    failures (line, row, reason), counted in `run`."""
    from .batch_io import row_of_line

    fmt = run.spec.format
    scored = scorer.score(chunk.frame)
    failures = [(line, row_of_line(fmt, line), reason) for line, reason in chunk.malformed]
    for position, reason in scored.failures.items():
        line = int(chunk.lines[position])
        failures.append((line, row_of_line(fmt, line), reason))
    failures.sort()
    table = _output_table(run, scorer, chunk, scored) if len(scored.positions) else None
    count = len(chunk.frame) + len(chunk.malformed)
    run.rows_read += count
    run.rows_this_run += count
    run.rows_failed += len(failures)
    run.rows_scored += len(scored.positions)
    return table, failures


def _output_table(run: Run, scorer: Scorer, chunk: Any, scored: Any) -> Any:
    """Input columns (or none), prediction columns, request_id: as an Arrow table."""
    import pyarrow as pa

    from .batch_io import to_arrow

    positions = scored.positions
    names: list[str] = []
    arrays: list[Any] = []
    if chunk.raw is not None:
        names = [str(name) for name in chunk.frame.columns]
    elif run.spec.output_columns == "all":
        given = to_arrow(chunk.frame)
        if len(positions) != given.num_rows:
            given = given.take(pa.array(positions))
        for name in given.column_names:
            if name != REQUEST_ID:
                names.append(name)
                arrays.append(given.column(name))
    output = scored.output
    columns = output.reshape(len(positions), -1) if output.ndim > 1 else output[:, None]
    for i, name in enumerate(scorer.names_of(output)):
        names.append(f"{name}_prediction" if name in names else name)
        arrays.append(pa.array(columns[:, i]))
    names.append(REQUEST_ID)
    arrays.append(request_ids(run, chunk.lines[positions]))
    if chunk.raw is not None:
        if run.columns is None:
            run.columns = names
        given = len(names) - len(arrays)
        return _raw_rows(chunk, positions, given, pa.Table.from_arrays(arrays, names=names[given:]))
    table = pa.Table.from_arrays(arrays, names=names)
    if run.columns is None:
        run.columns = names
    elif names != run.columns:  # JSONL rows may carry other keys than the first chunk's
        table = pa.Table.from_arrays(
            [table.column(n) if n in names else pa.nulls(table.num_rows) for n in run.columns],
            names=run.columns,
        )
    return table


def _raw_rows(chunk: Any, positions: Any, given: int, predictions: Any) -> Any:
    """The scored rows' input lines (verbatim: quoting and number text kept) and predictions."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from .batch_io import RawRows

    raw = chunk.raw
    if len(positions) != len(raw):  # failed or malformed lines are left out
        raw = raw.take(pa.array(chunk.lines[positions] - chunk.raw_first))
    blank = pc.equal(raw, ",")
    if pc.any(blank).as_py():  # a blank line read as a row of missing values
        raw = pc.if_else(blank, "," * given, raw)
    return RawRows(chunk.raw_header, raw, predictions)


def request_ids(run: Run, lines: Any) -> Any:
    """Rows' request_ids, `<job id>-<row>`: the same in every run of the job."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from .batch_io import row_of_line

    rows = pa.array(row_of_line(run.spec.format, lines))
    return pc.binary_join_element_wise(f"{run.job.id}-", pc.cast(rows, pa.string()), "")


# ---- command line -------------------------------------------------------------------------------


@click.command(
    "batch-job",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--job-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help=f"Holds {JOB_FILE} (the JobRecord); the runner writes {PROGRESS_FILE} here.",
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append stdout and stderr here, each line prefixed with a UTC timestamp.",
)
@click.option("--check", is_flag=True, help="Only validate input, columns and output; exit 0 or 1.")
def batch_command(bundle: Path, job_dir: Path, log_file: Path | None, check: bool) -> int:
    """Score the input of the job in JOB_DIR/job.json with the model bundle BUNDLE.

    Exit codes: 0 succeeded, 1 failed (progress.json says why), 2 bad usage, 3 the model
    failed to load, 143 stopped by SIGTERM between chunks (run again to resume).
    """
    if log_file is not None:
        from .logcapture import install

        try:
            install(log_file)
        except OSError as exc:
            raise click.UsageError(f"cannot write --log-file: {exc}") from None
    job = read_job(job_dir)
    if check:
        problem = check_job(job, bundle, job_dir)
        print(problem or f"job {job.id}: ready to run", file=sys.stderr, flush=True)
        return EXIT_FAILED if problem else EXIT_OK
    signal.signal(signal.SIGTERM, _Stop.handle)
    return run_job(job, bundle, job_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the batch job command line; returns the exit code."""
    try:
        result = batch_command.main(
            args=list(argv) if argv is not None else None,
            prog_name="python -m primehub_jupyter.serving.batch",
            standalone_mode=False,
        )
    except click.exceptions.Exit as exc:  # --help
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE
    except click.Abort:
        return EXIT_FAILED
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
