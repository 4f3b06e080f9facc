"""Batch jobs in the kernel: their words (rows, rate, ETA), a live progress and a job handle."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .client import JOB_FINISHED, Client, JobFailed, PrimeHubError
from .display import esc, html_table, in_notebook, phase_badge, text_table
from .words import local_time

JOB_HEADERS = ["id", "phase", "rows", "rows/s", "started", "output"]

# ---- words -------------------------------------------------------------------------------


def count_text(value: int | None) -> str:
    """`12,345`, or `-` when unknown."""
    return "-" if value is None else f"{int(value):,}"


def rate_text(rows_per_second: float | None) -> str:
    """`12,345 rows/s` (one decimal under 10), or `-` before the first chunk."""
    if not rows_per_second:
        return "-"
    if rows_per_second < 10:
        return f"{rows_per_second:.1f} rows/s"
    return f"{round(rows_per_second):,} rows/s"


def duration_text(seconds: float | None) -> str:
    """`4s`, `1m 05s`, `2h 03m`; `-` when unknown."""
    if seconds is None or seconds < 0:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def eta_seconds(job: dict[str, Any]) -> float | None:
    """Seconds left at the job's current rate (core/jobs.py JobRecord.eta_seconds); None when
    the job has finished or its progress is unknown."""
    from ..core.jobs import JobRecord

    if job.get("phase") in JOB_FINISHED:
        return None
    record = JobRecord.model_construct(
        progress=job.get("progress"),
        rows_read=job.get("rowsRead") or 0,
        rows_per_second=job.get("rowsPerSecond") or 0.0,
    )
    return record.eta_seconds()


def rows_text(job: dict[str, Any]) -> str:
    """`1,000 of 5,000 rows scored, 3 failed`, as far as the job knows its input."""
    scored, failed = job.get("rowsScored") or 0, job.get("rowsFailed") or 0
    total = job.get("totalRows")
    text = f"{count_text(scored)} of {count_text(total)}" if total else count_text(scored)
    text += " rows scored"
    return text + (f", {count_text(failed)} failed" if failed else "")


def job_line(job: dict[str, Any]) -> str:
    """One line for a terminal or a text/plain twin: id, phase, rows, rate, share and ETA."""
    parts = [f"{job.get('id')}: {job.get('phase')}", rows_text(job)]
    if job.get("rowsPerSecond"):
        parts.append(rate_text(job["rowsPerSecond"]))
    if job.get("progress") is not None and job.get("phase") not in JOB_FINISHED:
        parts.append(f"{job['progress']:.0%}")
    eta = eta_seconds(job)
    if eta is not None:
        parts.append(f"ETA {duration_text(eta)}")
    line = " · ".join(parts)
    return line + (f" - {job['message']}" if job.get("message") else "")


def job_row(job: dict[str, Any]) -> list[str]:
    """A job as one row of JOB_HEADERS."""
    rows = count_text(job.get("rowsScored") or 0)
    if job.get("rowsFailed"):
        rows += f" ({count_text(job['rowsFailed'])} failed)"
    return [
        job["id"],
        job["phase"],
        rows,
        rate_text(job.get("rowsPerSecond")),
        local_time(job.get("startTime")),
        job["spec"]["output"],
    ]


# ---- what the kernel shows ---------------------------------------------------------------


class JobTable:
    """A deployment's jobs, newest first: a table in Jupyter, aligned text elsewhere;
    `to_frame()` gives a pandas DataFrame of the records."""

    def __init__(self, jobs: Sequence[dict[str, Any]]) -> None:
        self.jobs = list(jobs)

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.jobs[index]

    def to_frame(self) -> Any:
        """One row per job (id, phase, rows read/scored/failed, rows/s, times, paths)."""
        import pandas as pd

        columns = ["id", "phase", "rowsRead", "rowsScored", "rowsFailed", "rowsPerSecond",
                   "createTime", "startTime", "finishTime", "message", "errors"]  # fmt: skip
        rows = [{**{c: job.get(c) for c in columns}, "output": job["spec"]["output"]}
                for job in self.jobs]  # fmt: skip
        return pd.DataFrame(rows, columns=[*columns, "output"]).set_index("id")

    def __repr__(self) -> str:
        if not self.jobs:
            return "no jobs yet"
        return text_table(JOB_HEADERS, [job_row(job) for job in self.jobs])

    def _repr_html_(self) -> str:
        if not self.jobs:
            return "<i>No jobs yet: try d.batch(PATH, output=...)</i>"
        rows = []
        for job in self.jobs:
            row = [esc(cell) for cell in job_row(job)]
            row[1] = phase_badge(job["phase"])
            row[-1] = f"<code>{row[-1]}</code>"
            rows.append(row)
        return html_table(JOB_HEADERS, rows, raw=True)


def job_stats_html(job: dict[str, Any]) -> str:
    """The phase badge and the counts; data- attributes carry the numbers for scripts."""
    eta = eta_seconds(job)
    return (
        f'<div class="ph-job-stats" data-phase="{esc(job.get("phase"))}" '
        f'data-rows-read="{job.get("rowsRead") or 0}" '
        f'data-rows-scored="{job.get("rowsScored") or 0}" '
        f'data-rows-failed="{job.get("rowsFailed") or 0}">'
        f"{phase_badge(job.get('phase', ''))} "
        f"read <b>{count_text(job.get('rowsRead') or 0)}</b> &middot; "
        f"scored <b>{count_text(job.get('rowsScored') or 0)}</b> &middot; "
        f"failed <b>{count_text(job.get('rowsFailed') or 0)}</b> &middot; "
        f"{esc(rate_text(job.get('rowsPerSecond')))}"
        + (f" &middot; ETA {esc(duration_text(eta))}" if eta is not None else "")
        + "</div>"
    )


def job_paths_html(job: dict[str, Any]) -> str:
    """The message, and where the output and the errors are (links JupyterLab opens)."""
    spec = job.get("spec") or {}
    parts = [f"<div>{esc(job['message'])}</div>"] if job.get("message") else []
    for label, path in (("Output", spec.get("output")), ("Errors", job.get("errors"))):
        if path:
            parts.append(f"<div>{label}: {file_link(path)}</div>")
    return "".join(parts)


def file_link(path: str) -> str:
    """A path as a link that opens it in JupyterLab when it lies under the kernel's working
    directory (Lab resolves relative links from the notebook), else the path as code."""
    code = f"<code>{esc(path)}</code>"
    if "://" in path:
        return code
    try:
        relative = Path(path).resolve().relative_to(Path.cwd().resolve())
    except (ValueError, OSError):
        return code
    return f'<a href="{esc(relative.as_posix())}" target="_blank">{code}</a>'


class JobProgress:
    """A job's live progress: an ipywidgets bar with the counts and a Cancel button in
    Jupyter, a redrawn line in a terminal. `update(job)` with every record fetched.

    The Cancel button works while the kernel is free (a job started with `wait=False`, or
    after an interrupt); while a cell waits, interrupting the kernel offers the cancel.
    """

    def __init__(self, client: Client, job: dict[str, Any], *, live: bool = False) -> None:
        self.client = client
        self.job = job
        self.notebook = in_notebook()
        self.widget: Any = None
        self._handle: Any = None
        self._phase = ""
        self._last_line = ""
        if self.notebook:
            try:
                self._build(live)
            except ImportError:  # no ipywidgets: an HTML display updated in place
                self.widget = None

    def _build(self, live: bool) -> None:
        import ipywidgets as w

        self.title = w.HTML(
            f"<b>Batch job</b> <code>{esc(self.job['id'])}</code> of "
            f"<code>{esc(self.job['deploymentId'])}</code>"
        )
        self.bar = w.FloatProgress(min=0.0, max=1.0, value=0.0, bar_style="info")
        self.bar.layout.width = "40%"
        self.stats = w.HTML()
        self.paths = w.HTML()
        self.cancel_button = w.Button(description="Cancel", icon="stop", button_style="warning")
        self.cancel_button.on_click(lambda _: self.cancel())
        self.set_live(live)
        self.widget = w.VBox(
            [w.HBox([self.title, self.bar, self.cancel_button]), self.stats, self.paths]
        )
        self.widget.add_class("ph-job-progress")

    def set_live(self, live: bool) -> None:
        """Whether the Cancel button can act now (the kernel is free to hear its click)."""
        if not hasattr(self, "cancel_button"):
            return
        self.cancel_button.disabled = not live
        self.cancel_button.tooltip = (
            "Cancel the job" if live else "The cell is waiting: interrupt the kernel to cancel"
        )

    def _bundle(self) -> dict[str, Any]:
        if self.widget is not None:
            bundle = dict(self.widget._repr_mimebundle_() or {})
            bundle["text/plain"] = job_line(self.job)
            return bundle
        body = f"<div class='ph-job-progress'>{job_stats_html(self.job)}{job_paths_html(self.job)}"
        return {"text/html": body + "</div>", "text/plain": job_line(self.job)}

    def show(self) -> JobProgress:
        """Display it (in a notebook; a terminal draws on the first update)."""
        if self.notebook:
            from IPython.display import display

            self._handle = display(self._bundle(), raw=True, display_id=True)
        self.update(self.job)
        return self

    def update(self, job: dict[str, Any]) -> None:
        """Show this record."""
        self.job = job
        phase = job.get("phase", "")
        if not self.notebook:
            line = job_line(job)
            if line != self._last_line:
                self._last_line = line
                end = "\n" if phase in JOB_FINISHED else ""
                sys.stdout.write("\r\033[K" + line + end)
                sys.stdout.flush()
            return
        if self.widget is not None:
            self.stats.value = job_stats_html(job)
            self.paths.value = job_paths_html(job)
            if phase == "Succeeded":
                self.bar.value, self.bar.bar_style = 1.0, "success"
            elif job.get("progress") is not None:
                self.bar.value = float(job["progress"])
            if phase in ("Failed", "Cancelled"):
                self.bar.bar_style = "danger" if phase == "Failed" else "warning"
            if phase in JOB_FINISHED:
                self.cancel_button.layout.display = "none"
        # The text/plain twin (what a saved or exported notebook shows) at each phase change;
        # the HTML fallback at every record.
        if self._handle is not None and (self.widget is None or phase != self._phase):
            self._handle.update(self._bundle(), raw=True)
        self._phase = phase

    def cancel(self) -> None:
        """Cancel the job (the button)."""
        try:
            answer = self.client.cancel_job(self.job["deploymentId"], self.job["id"])
            self.update(answer or self.job)
        except PrimeHubError as error:
            if self.widget is not None:
                self.paths.value = f"<div style='color:#c62828'>{esc(error.message)}</div>"

    def follow(self, interval: float = 1.0) -> threading.Thread:
        """Keep updating from a background thread until the job finishes; the Cancel button
        works meanwhile."""
        self.set_live(True)

        def run() -> None:
            try:
                self.client.wait_job(
                    self.job["deploymentId"], self.job["id"], interval=interval,
                    on_progress=self.update,
                )  # fmt: skip
            except Exception:  # the server went away: the last record stays shown
                return

        thread = threading.Thread(target=run, daemon=True, name=f"job-{self.job['id']}")
        thread.start()
        return thread


def _ask_cancel(job_id: str) -> bool | None:
    """Ask whether to cancel after an interrupt: True/False, None when nobody can answer."""
    try:
        answer = input(f"Interrupted. Cancel job {job_id}? [Y/n] ")
    except (Exception, KeyboardInterrupt):  # no stdin (nbclient, a pipe), or a second ^C
        return None
    return answer.strip().lower() not in ("n", "no")


class Job:
    """One batch job of a deployment: its record, waiting for it, cancelling, its output."""

    def __init__(self, data: dict[str, Any], client: Client) -> None:
        self.data = data
        self.client = client

    @property
    def id(self) -> str:
        return self.data["id"]

    @property
    def deployment_id(self) -> str:
        return self.data["deploymentId"]

    @property
    def phase(self) -> str:
        return self.data["phase"]

    @property
    def output(self) -> str:
        return self.data["spec"]["output"]

    @property
    def errors(self) -> str:
        return self.data.get("errors") or self.output + ".errors.jsonl"

    def refresh(self) -> Job:
        self.data = self.client.get_job(self.deployment_id, self.id)
        return self

    def cancel(self) -> Job:
        """Cancel it while it runs (a finished job is removed from the history instead)."""
        self.data = self.client.cancel_job(self.deployment_id, self.id) or self.data
        return self

    def logs(self, tail: int | None = 2000) -> str:
        return self.client.job_logs(self.deployment_id, self.id, tail=tail)

    def wait(self, *, timeout: float | None = None, progress: bool = True) -> Job:
        """Wait until it has finished, showing its progress; JobFailed when it failed or was
        cancelled. An interrupt (Ctrl-C, the kernel's stop) offers to cancel it."""
        bar = JobProgress(self.client, self.data).show() if progress else None

        def seen(job: dict[str, Any]) -> None:
            self.data = job
            if bar is not None:
                bar.update(job)

        try:
            self.data = self.client.wait_job(
                self.deployment_id, self.id, timeout=timeout, on_progress=seen
            )
        except KeyboardInterrupt:
            self._interrupted(bar)
        if self.phase != "Succeeded":
            reason = f": {self.data['message']}" if self.data.get("message") else ""
            raise JobFailed(f"job {self.id} {self.phase.lower()}{reason}", self.data)
        return self

    def _interrupted(self, bar: JobProgress | None) -> None:
        cancel = _ask_cancel(self.id)
        if cancel:
            self.cancel()
            if bar is not None:
                bar.update(self.data)
            return  # wait() reports it Cancelled
        if bar is not None and bar.widget is not None:
            bar.follow()  # the widget stays live: its Cancel button works now
        print(
            f"job {self.id} keeps running: cancel it with the button, "
            f"or d.job({self.id!r}).cancel()",
            file=sys.stderr,
        )
        raise KeyboardInterrupt

    def errors_list(self, limit: int | None = 100) -> list[dict[str, Any]]:
        """The failed rows (line and reason of each), from the errors file, when it is local."""
        path = Path(self.errors)
        if "://" in self.errors or not path.exists():
            return []
        found: list[dict[str, Any]] = []
        with open(path) as lines:
            for text in lines:
                if limit is not None and len(found) >= limit:
                    break
                if text.strip():
                    found.append(json.loads(text))
        return found

    def read_output(self, index: Any = None) -> Any:
        """The output file as a DataFrame; with the input's `index`, rows line up with the
        input (a failed row's predictions are missing)."""
        from .batch_files import align, read_table

        frame = read_table(self.output, self.data["spec"]["outputFormat"])
        if index is None:
            return frame
        return align(frame, index, self.errors_list(limit=None))

    def __repr__(self) -> str:
        return job_line(self.data)

    def _repr_html_(self) -> str:
        return (
            f"<div class='ph-job' data-job='{esc(self.id)}'><b>Batch job</b> "
            f"<code>{esc(self.id)}</code> of <code>{esc(self.deployment_id)}</code>"
            f"{job_stats_html(self.data)}{job_paths_html(self.data)}</div>"
        )
