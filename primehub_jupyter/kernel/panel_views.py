"""The DeploymentPanel's views: the create/update form and the tabbed detail of a deployment."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..core import charts
from .client import Client, PrimeHubError
from .deployment import Deployment, looks_like_model, package_for_deploy
from .display import copy_button, esc, html_table, phase_badge, time_html
from .words import (
    describe_changes,
    display_value,
    field_label,
    flatten_spec,
    in_words,
    local_time,
    log_file_name,
    rollback_spec,
)

SOURCES = ("Model URI", "Model image", "Notebook variable")


def button(description: str = "", **options: Any) -> w.Button:
    """A button as wide as its label (the default width cut "Create deployment" short)."""
    options.setdefault("layout", w.Layout(width="auto", min_width="fit-content"))
    return w.Button(description=description, **options)


# A description as wide as its words (the default width cut "View revision" short).
_LABEL_FITS = {"description_width": "initial"}
WINDOWS = {"5 minutes": 300, "15 minutes": 900, "1 hour": 3600}


def _pairs(values: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def _error_html(message: str) -> str:
    return f"<div class='ph-error' style='color:#c62828;font-weight:600'>{esc(message)}</div>"


class MetadataRows(w.VBox):
    """Key/value rows with add and remove buttons."""

    def __init__(self, values: dict[str, str] | None = None) -> None:
        self.add_button = button(description="Add metadata", icon="plus")
        self.add_button.on_click(lambda _: self.add_row())
        self.rows: list[w.HBox] = []
        super().__init__([self.add_button])
        for key, value in (values or {}).items():
            self.add_row(key, value)

    def add_row(self, key: str = "", value: str = "") -> w.HBox:
        key_box = w.Text(value=key, placeholder="key", layout=w.Layout(width="180px"))
        value_box = w.Text(value=value, placeholder="value", layout=w.Layout(width="260px"))
        remove = w.Button(icon="trash", tooltip="Remove", layout=w.Layout(width="40px"))
        row = w.HBox([key_box, value_box, remove])
        remove.on_click(lambda _: self.remove_row(row))
        self.rows.append(row)
        self.children = (*self.rows, self.add_button)
        return row

    def remove_row(self, row: w.HBox) -> None:
        self.rows.remove(row)
        self.children = (*self.rows, self.add_button)

    @property
    def value(self) -> dict[str, str]:
        pairs = ((r.children[0].value.strip(), r.children[1].value) for r in self.rows)
        return {k: v for k, v in pairs if k}


class DeploymentForm(w.VBox):
    """Create a deployment, or update one (then group, name and id are locked)."""

    def __init__(
        self,
        client: Client,
        namespace: dict[str, Any],
        on_done: Callable[[str], Any],
        on_cancel: Callable[[], Any],
        existing: dict[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.on_done = on_done
        self.existing = existing
        groups = [g for g in client.groups() if g["enabledDeployment"] or existing]
        self._groups = {g["name"]: g for g in groups}
        spec = existing["spec"] if existing else {}
        predictor = spec.get("predictors", [{}])[0]
        label = {"style": {"description_width": "140px"}, "layout": w.Layout(width="520px")}
        self.group = w.Dropdown(
            options=list(self._groups),
            description="Group",
            value=spec.get("groupName") or next(iter(self._groups), None),
            **label,
        )
        self.instance_type = w.Dropdown(description="Instance type", **label)
        self.replicas = w.BoundedIntText(
            value=predictor.get("replicas", 1), min=1, max=64, description="Replicas", **label
        )
        self.name = w.Text(value=spec.get("displayName", ""), description="Name", **label)
        self.deployment_id = w.Text(
            value=existing["id"] if existing else "",
            placeholder="generated from the name",
            description="ID",
            **label,
        )
        source = (
            "Model image"
            if predictor.get("modelImage") and not predictor.get("modelURI")
            else "Model URI"
        )
        self.source = w.ToggleButtons(options=SOURCES, value=source, description="Model")
        self.model_uri = w.Text(
            value=predictor.get("modelURI") or "", description="Model URI", **label
        )
        self.model_image = w.Text(
            value=predictor.get("modelImage") or "", description="Model image", **label
        )
        candidates = sorted(
            k for k, v in namespace.items() if not k.startswith("_") and looks_like_model(v)
        )
        self.variable = w.Dropdown(options=candidates, description="Variable", **label)
        self.pull_secret = w.Text(
            value=predictor.get("imagePullSecret") or "", description="Image pull secret", **label
        )
        self.description = w.Textarea(
            value=spec.get("description", ""), description="Description", **label
        )
        self.metadata = MetadataRows(predictor.get("metadata"))
        self.private = w.Checkbox(
            value=spec.get("endpoint", {}).get("accessType") == "private",
            description="Private access (clients need a token)",
        )
        self.update_message = w.Text(description="Update message", **label)
        self.submit = button(
            description="Update" if existing else "Deploy", button_style="primary", icon="rocket"
        )
        self.cancel = button(description="Cancel")
        self.errors = w.HTML()
        self.field_errors: dict[str, w.HTML] = {}
        self.submit.on_click(lambda _: self._submit())
        self.cancel.on_click(lambda _: on_cancel())
        self.group.observe(lambda _: self._instance_types(), "value")
        self.source.observe(lambda _: self._show_source(), "value")
        self.locked_note = w.HTML()
        if existing:
            for locked in (self.group, self.name, self.deployment_id):
                locked.disabled = True
            self.locked_note.value = (
                "<div class='ph-locked-note' style='opacity:0.8;font-style:italic'>Group, Name "
                "and ID are fixed once a deployment is created (greyed out); create a new "
                "deployment to change them.</div>"
            )
        self._instance_types(predictor.get("instanceType"))
        title = f"Update {esc(existing['id'])}" if existing else "Create a deployment"
        self._source_box = w.VBox()
        fields = [
            self.locked_note, self.group, self.instance_type, self.replicas, self.name,
            self.deployment_id, self.source, self._source_box, self.description,
            w.HTML("<b>Metadata</b>"), self.metadata, self.private, self.update_message,
        ]  # fmt: skip
        super().__init__([w.HTML(f"<h3>{title}</h3>"), *fields, self.errors,
                          w.HBox([self.submit, self.cancel])])  # fmt: skip
        self._show_source()

    def _instance_types(self, keep: str | None = None) -> None:
        group = self._groups.get(self.group.value or "")
        names = [it["name"] for it in (group or {}).get("instanceTypes", [])]
        current = keep or self.instance_type.value
        self.instance_type.options = names
        self.instance_type.value = current if current in names else (names[0] if names else None)

    def _show_source(self) -> None:
        chosen = {
            "Model URI": self.model_uri,
            "Model image": self.model_image,
            "Notebook variable": self.variable,
        }[self.source.value]
        # An image pull secret only means something for a container image.
        image = self.source.value == "Model image"
        self._source_box.children = [chosen, self.pull_secret] if image else [chosen]

    def _predictor(self) -> dict[str, Any]:
        predictor: dict[str, Any] = {
            "instanceType": self.instance_type.value,
            "replicas": self.replicas.value,
            "metadata": self.metadata.value,
            "imagePullSecret": None,
        }
        if self.source.value == "Notebook variable":
            if not self.variable.value:
                raise ValueError("choose a notebook variable holding a model")
            model = self.namespace[self.variable.value]
            predictor["modelURI"] = package_for_deploy(
                model, self.name.value or self.variable.value
            )
            predictor["modelImage"] = None
        elif self.source.value == "Model image":
            predictor["modelImage"] = self.model_image.value.strip() or None
            predictor["modelURI"] = None
            predictor["imagePullSecret"] = self.pull_secret.value.strip() or None
        else:
            uri = self.model_uri.value.strip()
            if uri and "://" not in uri and not Path(uri).is_absolute():
                uri = str(Path(uri).resolve())  # relative to the notebook, not the server
            predictor["modelURI"] = uri or None
            predictor["modelImage"] = None
        return predictor

    def _submit(self) -> None:
        self.errors.value = ""
        if not self.group.value or not self.instance_type.value:
            self.errors.value = _error_html(
                "choose a group with model deployment enabled and an instance type"
            )
            return
        try:
            predictor = self._predictor()
            access = "private" if self.private.value else "public"
            if self.existing:
                patch = {
                    "description": self.description.value,
                    "endpoint": {"accessType": access},
                    "predictors": [predictor],
                }
                result = self.client.update(
                    self.existing["id"], patch, update_message=self.update_message.value or None
                )
            else:
                spec = {
                    "displayName": self.name.value.strip(),
                    "groupName": self.group.value,
                    "description": self.description.value,
                    "endpoint": {"accessType": access},
                    "predictors": [predictor],
                }
                if self.update_message.value.strip():
                    spec["updateMessage"] = self.update_message.value.strip()
                result = self.client.create(spec, id=self.deployment_id.value.strip() or None)
        except PrimeHubError as error:
            self.errors.value = _error_html(in_words(error.message, error.details))
            return
        except (ValueError, TypeError, OSError) as error:
            self.errors.value = _error_html(str(error))
            return
        self.on_done(result["id"])


class DeploymentDetail(w.VBox):
    """Information, Logs, History, Clients and Metrics of one deployment, and its actions."""

    TABS = ("Information", "Logs", "History", "Clients", "Metrics")

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
            value=2000, min=1, max=100000, description="Last lines", style=_LABEL_FITS
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
        self.revision = w.Dropdown(description="View revision", style=_LABEL_FITS)
        self.rollback_button = button(description="Roll back to this revision", icon="undo")
        self.revision_view = w.HTML()
        self.revision.observe(lambda _: self._show_revision(), "value")
        self.rollback_button.on_click(lambda _: self._ask_rollback())
        # Clients
        self.clients_view = w.VBox()
        self.client_name = w.Text(
            placeholder="client name", description="New client", style=_LABEL_FITS
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
            self.status.value = _error_html(error.message)
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
            ("Replicas", f"{status.get('availableReplicas', 0)}/{p['replicas']}"),
            ("Name", esc(d.name)),
            ("Group", esc(d.group)),
            ("Instance Type", esc(p["instanceType"])),
            ("Creation time", time_html(status.get("creationTime"))),
            ("Last updated", time_html(status.get("lastUpdated"))),
            ("Description", esc(d.spec.get("description") or "-")),
            ("Metadata", esc(_pairs(p.get("metadata", {})) or "-")),
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
            self.logs_view.value = _error_html(error.message)
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
            self.logs_note.value = _error_html(error.message)
            return
        self.logs_note.value = f"Saved to <code>{esc(target)}</code>"

    def load_history(self) -> None:
        try:
            entries = self.client.history(self.deployment_id)
        except PrimeHubError as error:
            self.history_view.value = _error_html(error.message)
            return
        self._history = {e["revision"]: e for e in entries}
        rows = []
        for e in entries:
            spec = e["spec"]
            p = spec["predictors"][0]
            rows.append([
                str(e["revision"]), time_html(e["time"]), esc(e["user"]),
                "Yes" if spec.get("stop") else "No",
                esc(p.get("modelImage") or p.get("modelURI")), esc(p["replicas"]),
                esc(p["instanceType"]), esc(spec.get("description", "")),
                esc(_pairs(p.get("metadata", {}))),
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
            self.clients_view.children = [w.HTML(_error_html(error.message))]
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
            self.token_box.value = _error_html(error.message)
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
            self.token_box.value = _error_html(error.message)
            return
        self.token_box.value = ""
        self.load_clients()

    def load_metrics(self) -> None:
        try:
            data = self.client.metrics(self.deployment_id, window=self.window.value, step=15)
        except PrimeHubError as error:
            self.metrics_error.value = _error_html(error.message)
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
            self.status.value = _error_html(error.message)
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
                self.status.value = _error_html(error.message)
                return
            on_back()

        self._ask(
            f"Delete <b>{esc(self.deployment_id)}</b> and everything that runs it? Its clients "
            "and history go with it; this cannot be undone.",
            "Yes, delete",
            delete,
        )
