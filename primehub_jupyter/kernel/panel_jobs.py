"""The DeploymentPanel's Jobs tab: a deployment's batch jobs, their progress, cancel and files."""

from __future__ import annotations

from typing import Any

import ipywidgets as w

from .client import Client, PrimeHubError
from .display import esc, html_table, phase_badge
from .jobs import JOB_HEADERS, Job, job_paths_html, job_row, job_stats_html
from .panel_form import LABEL_FITS, button, error_html


class JobsTab(w.VBox):
    """The jobs, newest first; a chosen job's progress, its output and errors files (links
    that open in JupyterLab), its first failed rows and log, and Cancel with a confirmation."""

    def __init__(self, client: Client, deployment_id: str) -> None:
        self.client = client
        self.deployment_id = deployment_id
        self.jobs: list[dict[str, Any]] = []
        self.reload = button(description="Reload", icon="refresh")
        self.message = w.HTML()
        self.table = w.HTML()
        self.job = w.Dropdown(description="Job", style=LABEL_FITS)
        self.bar = w.FloatProgress(min=0.0, max=1.0, value=0.0)
        self.stats = w.HTML()
        self.paths = w.HTML()
        self.errors = w.HTML()
        self.cancel_button = button(description="Cancel job", icon="stop")
        self.logs_button = button(description="Show log", icon="file-text-o")
        self.logs = w.Textarea(layout=w.Layout(width="100%", height="200px", display="none"))
        self.confirm = w.HBox(layout=w.Layout(flex_flow="row wrap", align_items="center"))
        self.reload.on_click(lambda _: self.load())
        self.job.observe(lambda _: self.show_job(), "value")
        self.cancel_button.on_click(lambda _: self._ask_cancel())
        self.logs_button.on_click(lambda _: self.show_logs())
        super().__init__(
            [
                self.reload,
                self.message,
                self.table,
                w.HBox([self.job, self.bar, self.cancel_button, self.logs_button]),
                self.confirm,
                self.stats,
                self.paths,
                self.errors,
                self.logs,
            ]
        )

    def load(self) -> None:
        """Fetch the jobs and show them (the chosen job stays chosen)."""
        try:
            self.jobs = self.client.list_jobs(self.deployment_id)
        except PrimeHubError as error:
            self.message.value = error_html(error.message)
            return
        self.message.value = ""
        if not self.jobs:
            self.table.value = (
                "<i>No batch jobs yet. Score a file with d.batch(PATH, output=...), "
                f"%phdeploy batch {esc(self.deployment_id)} PATH or primehub-deploy batch.</i>"
            )
        else:
            rows = []
            for job in self.jobs:
                row = [esc(cell) for cell in job_row(job)]
                row[1] = phase_badge(job["phase"])
                rows.append(row)
            self.table.value = html_table(JOB_HEADERS, rows, raw=True)
        chosen = self.job.value
        ids = [job["id"] for job in self.jobs]
        self.job.options = ids
        self.job.value = chosen if chosen in ids else (ids[0] if ids else None)
        self.show_job()

    def _chosen(self) -> dict[str, Any] | None:
        return next((job for job in self.jobs if job["id"] == self.job.value), None)

    def show_job(self) -> None:
        """The chosen job's progress, files and first failed rows."""
        job = self._chosen()
        self.confirm.children = []
        self.logs.layout.display = "none"
        shown = (self.bar, self.cancel_button, self.logs_button)
        for widget in shown:
            widget.layout.display = None if job else "none"
        if job is None:
            self.stats.value = self.paths.value = self.errors.value = ""
            return
        self.bar.value = 1.0 if job["phase"] == "Succeeded" else float(job.get("progress") or 0)
        self.bar.bar_style = {"Succeeded": "success", "Failed": "danger",
                              "Cancelled": "warning"}.get(job["phase"], "info")  # fmt: skip
        self.cancel_button.disabled = job["phase"] not in ("Pending", "Running")
        self.stats.value = job_stats_html(job)
        self.paths.value = job_paths_html(job)
        failed = Job(job, self.client).errors_list(limit=5) if job.get("rowsFailed") else []
        rows = [[e.get("line", e.get("row")), e.get("reason", "")] for e in failed]
        self.errors.value = (
            "<div><b>First failed rows</b></div>" + html_table(["line", "reason"], rows)
            if failed
            else ""
        )

    def show_logs(self) -> None:
        """The chosen job's log, below."""
        job = self._chosen()
        if job is None:
            return
        try:
            self.logs.value = self.client.job_logs(self.deployment_id, job["id"], tail=500)
        except PrimeHubError as error:
            self.message.value = error_html(error.message)
            return
        self.logs.layout.display = None

    def _ask_cancel(self) -> None:
        job = self._chosen()
        if job is None:
            return
        yes = button(description="Yes, cancel it", button_style="danger")
        no = button(description="No")
        self.confirm.children = [
            w.HTML(f"Cancel job <b>{esc(job['id'])}</b> of <b>{esc(self.deployment_id)}</b>?"),
            yes,
            no,
        ]
        yes.on_click(lambda _: self.cancel(job["id"]))
        no.on_click(lambda _: setattr(self.confirm, "children", []))

    def cancel(self, job_id: str) -> None:
        """Cancel `job_id` (what Yes does), then show the jobs again."""
        self.confirm.children = []
        try:
            self.client.cancel_job(self.deployment_id, job_id)
        except PrimeHubError as error:
            self.message.value = error_html(error.message)
            return
        self.load()
        self.message.value = f"Job <b>{esc(job_id)}</b> cancelled."
