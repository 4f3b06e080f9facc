"""The DeploymentPanel's detail view: a deployment in tabs (info, history, logs, metrics...)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..core import charts
from .client import Client, PrimeHubError
from .deployment import Deployment
from .display import (
    copy_button,
    esc,
    html_table,
    phase_badge,
    predictor_replicas,
    replica_range,
    time_html,
)
from .panel_compare import CompareTab
from .panel_form import LABEL_FITS, button, error_html, pairs
from .panel_jobs import JobsTab
from .words import (
    describe_changes,
    display_value,
    field_label,
    flatten_spec,
    local_time,
    log_file_name,
    rollback_spec,
)

WINDOWS = {"5 minutes": 300, "15 minutes": 900, "1 hour": 3600}


class DeploymentDetail(w.VBox):
    """Information, Logs, History, Clients, Metrics, Compare and Jobs of one deployment, and
    its actions."""

    TABS = ("Information", "Logs", "History", "Clients", "Metrics", "Compare", "Jobs")

    def __init__(
        self,
        client: Client,
        deployment_id: str,
        on_back: Callable[[], Any],
        on_update: Callable[[dict[str, Any]], Any],
    ) -> None:
        self.client = client
        self.deployment_id = deployment_id
        self.data: dict[str, Any] = {}
        self.header = w.HTML()
        self.status = w.HTML()
        self.back = button(description="Back", icon="arrow-left")
        self.refresh_button = button(description="Refresh", icon="refresh")
        self.update_button = button(description="Update", icon="pencil")
        self.stop_button = button(description="Stop", icon="stop")
        self.start_button = button(description="Start", icon="play")
        self.delete_button = button(description="Delete", icon="trash", button_style="danger")
        # A question with Yes/Cancel before Stop, Roll back and Delete (a preview may wrap).
        self.confirm = w.HBox(layout=w.Layout(flex_flow="row wrap", align_items="center"))
        self.back.on_click(lambda _: on_back())
        self.refresh_button.on_click(lambda _: self.refresh(all_tabs=True))
        self.update_button.on_click(lambda _: on_update(self.data))
        self.stop_button.on_click(lambda _: self._ask_stop())
        self.start_button.on_click(lambda _: self._act(self.client.start))
        self.delete_button.on_click(lambda _: self._ask_delete(on_back))
        # Information
        self.info = w.HTML()
        # Logs
        self.replica = w.Dropdown(description="Replica", options=[("All replicas", "")])
        self.tail = w.BoundedIntText(
            value=2000, min=1, max=100000, description="Last lines", style=LABEL_FITS
        )
        self.logs_refresh = button(description="Reload", icon="refresh")
        self.logs_save = button(description="Save whole log", icon="download")
        self.logs_view = w.HTML()
        self.logs_note = w.HTML()
        self.replica.observe(lambda _: self.load_logs(), "value")
        self.logs_refresh.on_click(lambda _: self.load_logs())
        self.logs_save.on_click(lambda _: self.save_logs())
        # History
        self.history_view = w.HTML()
        self.revision = w.Dropdown(description="View revision", style=LABEL_FITS)
        self.rollback_button = button(description="Roll back to this revision", icon="undo")
        self.revision_view = w.HTML()
        self.revision.observe(lambda _: self._show_revision(), "value")
        self.rollback_button.on_click(lambda _: self._ask_rollback())
        # Clients
        self.clients_view = w.VBox()
        self.client_name = w.Text(
            placeholder="client name", description="New client", style=LABEL_FITS
        )
        self.add_client = button(description="Add client", icon="plus")
        self.token_box = w.HTML()
        self.add_client.on_click(lambda _: self._add_client())
        # Metrics
        self.window = w.Dropdown(options=list(WINDOWS.items()), value=900, description="Window")
        self.metrics_refresh = button(description="Reload", icon="refresh")
        # An Output shows the charts through JupyterLab's own Vega renderer.
        self.metrics_view = w.Output()
        self.metrics_error = w.HTML()
        self.window.observe(lambda _: self.load_metrics(), "value")
        self.metrics_refresh.on_click(lambda _: self.load_metrics())
        self.compare = CompareTab(client, deployment_id, on_promoted=lambda _: self.refresh())
        self.jobs = JobsTab(client, deployment_id)
        self.tabs = w.Tab(
            children=[
                self.info,
                w.VBox([w.HBox([self.replica, self.tail, self.logs_refresh, self.logs_save]),
                        self.logs_note, self.logs_view]),
                w.VBox([self.history_view, w.HBox([self.revision, self.rollback_button]),
                        self.revision_view]),
                w.VBox([self.clients_view, w.HBox([self.client_name, self.add_client]),
                        self.token_box]),
                w.VBox([w.HBox([self.window, self.metrics_refresh]), self.metrics_error,
                        self.metrics_view]),
                self.compare,
                self.jobs,
            ]
        )  # fmt: skip
        for index, title in enumerate(self.TABS):
            self.tabs.set_title(index, title)
        self.tabs.observe(lambda _: self._load_tab(), "selected_index")
        actions = w.HBox([self.back, self.refresh_button, self.update_button, self.stop_button,
                          self.start_button, self.delete_button])  # fmt: skip
        super().__init__([actions, self.confirm, self.header, self.status, self.tabs])
        self.refresh(all_tabs=True)

    # ---- loading ----------------------------------------------------------------------

    def refresh(self, all_tabs: bool = False) -> None:
        try:
            self.data = self.client.get(self.deployment_id)
        except PrimeHubError as error:
            self.status.value = error_html(error.message)
            return
        self.status.value = ""
        d = Deployment(self.data, self.client)
        self.header.value = (
            f"<h3 style='margin:4px 0'>{esc(d.name)} <code>{esc(d.id)}</code> "
            f"{phase_badge(d.phase)}</h3>" + (f"<div>{esc(d.message)}</div>" if d.message else "")
        )
        stopped = bool(self.data["spec"].get("stop"))
        self.stop_button.layout.display = "none" if stopped else None
        self.start_button.layout.display = None if stopped else "none"
        self.info.value = self._information(d)
        if all_tabs:
            self._load_tab()

    def _load_tab(self) -> None:
        loaders = (
            lambda: None,
            self.load_logs,
            self.load_history,
            self.load_clients,
            self.load_metrics,
            self.compare.load,
            self.jobs.load,
        )
        loaders[self.tabs.selected_index or 0]()

    def _information(self, d: Deployment) -> str:
        p, status = d.predictor, d.status
        rows = [
            ("Status", phase_badge(d.phase)),
            ("Message", esc(d.message or "-")),
            ("Endpoint", f"<code>{esc(d.endpoint or '-')}</code> "
             + (copy_button(d.endpoint) if d.endpoint else "")),
            ("Access Type", esc(d.access_type.capitalize())),
            ("Model Image", esc(p.get("modelImage") or "-")),
            ("Model URI", esc(p.get("modelURI") or "-")),
            *((label, esc(text)) for label, text in predictor_replicas(d.spec, status)),
            ("Name", esc(d.name)),
            ("Group", esc(d.group)),
            ("Instance Type", esc(p["instanceType"])),
            ("Creation time", time_html(status.get("creationTime"))),
            ("Last updated", time_html(status.get("lastUpdated"))),
            ("Description", esc(d.spec.get("description") or "-")),
            ("Metadata", esc(pairs(p.get("metadata", {})) or "-")),
        ]  # fmt: skip
        table = "".join(
            f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>{v}</td></tr>"
            for k, v in rows
        )
        curl = d.curl_example()
        return (
            f"<table class='ph-info'>{table}</table><div><b>Run an Example</b> {copy_button(curl)}"
            f"</div><pre class='ph-curl'>{esc(curl)}</pre>"
        )

    def load_logs(self) -> None:
        try:
            names = self.client.replicas(self.deployment_id)
            options = [("All replicas", ""), *[(n, n) for n in names]]
            if list(self.replica.options) != options:
                current = self.replica.value
                self.replica.options = options
                self.replica.value = current if current in dict(options).values() else ""
            text = self.client.logs(
                self.deployment_id, replica=self.replica.value or None, tail=self.tail.value
            )
        except PrimeHubError as error:
            self.logs_view.value = error_html(error.message)
            return
        # column-reverse keeps the view scrolled to the newest line, with no script.
        self.logs_view.value = (
            "<div class='ph-logs' style='display:flex;flex-direction:column-reverse;"
            "max-height:360px;overflow:auto;font-family:monospace;font-size:12px'>"
            f"<pre style='margin:0'>{esc(text) or '(no log lines yet)'}</pre></div>"
        )
        base = self.client.api_url + f"deployments/{self.deployment_id}/logs?download=1"
        self.logs_note.value = (
            f"<a href='{esc(base)}' download='{esc(log_file_name(self.deployment_id))}' "
            "target='_blank'>"
            "Download the whole log</a> (or <i>Save whole log</i> next to the notebook)"
        )

    def save_logs(self) -> None:
        target = Path.cwd() / log_file_name(self.deployment_id, self.replica.value or None)
        try:
            self.client.download_logs(
                self.deployment_id, target, replica=self.replica.value or None
            )
        except PrimeHubError as error:
            self.logs_note.value = error_html(error.message)
            return
        self.logs_note.value = f"Saved to <code>{esc(target)}</code>"

    def load_history(self) -> None:
        try:
            entries = self.client.history(self.deployment_id)
        except PrimeHubError as error:
            self.history_view.value = error_html(error.message)
            return
        self._history = {e["revision"]: e for e in entries}
        rows = []
        for e in entries:
            spec = e["spec"]
            p = spec["predictors"][0]
            rows.append([
                str(e["revision"]), time_html(e["time"]), esc(e["user"]),
                "Yes" if spec.get("stop") else "No",
                esc(p.get("modelImage") or p.get("modelURI")), esc(replica_range(p)),
                esc(p["instanceType"]), esc(spec.get("description", "")),
                esc(pairs(p.get("metadata", {}))),
                f"<span class='ph-history-message'>{esc(e.get('updateMessage', ''))}</span>",
            ])  # fmt: skip
        headers = ["Revision", "Time", "User", field_label("stop"), "Model Image / URI",
                   field_label("replicas"), field_label("instanceType"),
                   field_label("description"), field_label("metadata"),
                   field_label("updateMessage")]  # fmt: skip
        self.history_view.value = (
            "<div class='ph-history' style='overflow-x:auto'>"
            + html_table(headers, rows, raw=True)
            .replace("<td style='text-align:left'>", "<td style='text-align:left;"
                     "white-space:normal;min-width:4em;padding-right:10px'>")
            + "</div>"
        )  # fmt: skip
        options = [
            (f"revision {e['revision']} ({local_time(e['time'])})", e["revision"]) for e in entries
        ]
        self.revision.options = options

    def _show_revision(self) -> None:
        entry = getattr(self, "_history", {}).get(self.revision.value)
        current = next(iter(getattr(self, "_history", {})), None)
        self.rollback_button.disabled = entry is None or entry["revision"] == current
        if entry is None:
            self.revision_view.value = ""
            return
        rows = [
            [field_label(path), display_value(path, value)]
            for path, value in flatten_spec(entry["spec"]).items()
        ]
        self.revision_view.value = (
            f"<div class='ph-revision'>{html_table(['Field', 'Value'], rows)}</div>"
        )

    def load_clients(self) -> None:
        try:
            names = [c["name"] for c in self.client.clients(self.deployment_id)]
        except PrimeHubError as error:
            self.clients_view.children = [w.HTML(error_html(error.message))]
            return
        private = self.data.get("spec", {}).get("endpoint", {}).get("accessType") == "private"
        note = w.HTML(
            ""
            if private
            else "<i>This endpoint is public: clients only count once it is "
            "private (you can add them before switching).</i>"
        )
        rows: list[w.Widget] = [note]
        for name in names:
            remove = button(description="Delete", icon="trash", button_style="danger")
            remove.on_click(lambda _, n=name: self._delete_client(n))
            rows.append(w.HBox([w.HTML(f"<code>{esc(name)}</code>"), remove]))
        if not names:
            rows.append(w.HTML("<i>No clients yet.</i>"))
        self.clients_view.children = rows

    def _add_client(self) -> None:
        try:
            created = self.client.add_client(self.deployment_id, self.client_name.value.strip())
        except PrimeHubError as error:
            self.token_box.value = error_html(error.message)
            return
        self.client_name.value = ""
        self.token_box.value = (
            f"<div class='ph-token' style='border:1px solid #f9a825;padding:6px'>Client "
            f"<b>{esc(created['name'])}</b>, token <code>{esc(created['token'])}</code> "
            f"{copy_button(created['token'])}<br><b>Copy it now: it is stored only as a hash "
            "and will never be shown again.</b></div>"
        )
        self.refresh()
        self.load_clients()

    def _delete_client(self, name: str) -> None:
        try:
            self.client.delete_client(self.deployment_id, name)
        except PrimeHubError as error:
            self.token_box.value = error_html(error.message)
            return
        self.token_box.value = ""
        self.load_clients()

    def load_metrics(self) -> None:
        try:
            data = self.client.metrics(self.deployment_id, window=self.window.value, step=15)
        except PrimeHubError as error:
            self.metrics_error.value = error_html(error.message)
            return
        self.metrics_error.value = ""
        # Set the outputs directly (no `with output:`): this may run on the refresh thread.
        output = {"output_type": "display_data", "data": charts.bundle(data), "metadata": {}}
        self.metrics_view.outputs = (output,)

    # ---- actions ----------------------------------------------------------------------

    def _act(self, action: Callable[[str], Any]) -> None:
        try:
            action(self.deployment_id)
        except PrimeHubError as error:
            self.status.value = error_html(error.message)
            return
        self.refresh(all_tabs=True)

    def _ask(self, question: str, yes_label: str, action: Callable[[], Any]) -> None:
        """Show a question with Yes/Cancel above the tabs; `action` runs on Yes only."""
        yes = button(description=yes_label, button_style="danger")
        no = button(description="Cancel")
        self.confirm.children = [w.HTML(question), yes, no]

        def accept(_: Any) -> None:
            self.confirm.children = []
            action()

        yes.on_click(accept)
        no.on_click(lambda _: setattr(self.confirm, "children", []))

    def _ask_stop(self) -> None:
        self._ask(
            f"Stop <b>{esc(self.deployment_id)}</b>? Its replicas stop and its endpoint answers "
            "503 until you start it again; its spec, clients and history are kept.",
            "Yes, stop",
            lambda: self._act(self.client.stop),
        )

    def _ask_rollback(self) -> None:
        entry = getattr(self, "_history", {}).get(self.revision.value)
        if entry is None:
            return
        current = self.data.get("spec") or {}
        changes = describe_changes(current, rollback_spec(current, entry["spec"]))
        preview = (
            html_table(["Field", "Now", "After the roll back"], changes)
            if changes
            else "<i>Nothing changes: that revision is the current spec.</i>"
        )
        revision = entry["revision"]
        self._ask(
            f"<div class='ph-rollback-preview'>Roll back <b>{esc(self.deployment_id)}</b> to "
            f"revision {revision}? Running or stopped stays as it is. These fields change:"
            f"{preview}</div>",
            "Yes, roll back",
            lambda: self._act(lambda deployment_id: self.client.rollback(deployment_id, revision)),
        )

    def _ask_delete(self, on_back: Callable[[], Any]) -> None:
        def delete() -> None:
            try:
                self.client.delete(self.deployment_id)
            except PrimeHubError as error:
                self.status.value = error_html(error.message)
                return
            on_back()

        self._ask(
            f"Delete <b>{esc(self.deployment_id)}</b> and everything that runs it? Its clients "
            "and history go with it; this cannot be undone.",
            "Yes, delete",
            delete,
        )
