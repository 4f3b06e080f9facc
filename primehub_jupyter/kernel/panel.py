"""DeploymentPanel: PrimeHub's Model Deployment pages as an ipywidgets panel in the notebook."""

from __future__ import annotations

import threading
from typing import Any

import ipywidgets as w

from .client import Client, PrimeHubError
from .display import PHASE_COLORS, copy_button, esc, phase_badge, time_html
from .panel_form import DeploymentForm, button, error_html, pairs
from .panel_views import DeploymentDetail


def elide_endpoint(endpoint: str, deployment_id: str, width: int = 70) -> str:
    """Shorten an endpoint in its middle, keeping the deployment id and the path's end."""
    if len(endpoint) <= width:
        return endpoint
    at = endpoint.rfind(f"/{deployment_id}")
    tail = endpoint[at + 1 :] if at >= 0 else endpoint[-(width // 2) :]
    room = max(width - len(tail) - 1, 12)
    head = endpoint[: len(endpoint) - len(tail)]
    return (
        head[: room // 2] + "…" + head[-(room - room // 2) :] + tail
        if len(head) > room
        else (head + tail)
    )


class DeploymentRow(w.HBox):
    """One deployment in the list: status colour, title, group, endpoint, metadata, updated."""

    def __init__(self, data: dict[str, Any], on_open: Any) -> None:
        self.deployment_id = data["id"]
        self.summary = w.HTML()
        self.endpoint = w.HTML()
        self.metadata_button = w.ToggleButton(description="Metadata", icon="tags")
        self.metadata_view = w.HTML()
        self.open_button = button(description="Open", icon="external-link")
        self.open_button.on_click(lambda _: on_open(self.deployment_id))
        self.metadata_button.observe(lambda _: self._show_metadata(), "value")
        super().__init__(
            [w.VBox([self.summary, self.endpoint, self.metadata_view]),
             w.VBox([self.open_button, self.metadata_button])],
            layout=w.Layout(padding="4px 8px", margin="2px 0", justify_content="space-between"),
        )  # fmt: skip
        self.update(data)

    @property
    def phase(self) -> str:
        return self.data["status"]["phase"]

    def update(self, data: dict[str, Any]) -> None:
        self.data = data
        spec, status = data["spec"], data["status"]
        self.layout.border_left = f"6px solid {PHASE_COLORS.get(status['phase'], '#757575')}"
        self.summary.value = (
            f"<b>{esc(spec['displayName'])}</b> <code>{esc(data['id'])}</code> "
            f"{phase_badge(status['phase'])} &middot; group {esc(spec['groupName'])} &middot; "
            f"updated {time_html(status.get('lastUpdated'))}"
        )
        endpoint = status.get("endpoint") or ""
        self.endpoint.value = (
            f"<span class='ph-endpoint' title='{esc(endpoint)}' "
            f"style='font-family:monospace;font-size:12px'>"
            f"{esc(elide_endpoint(endpoint, self.deployment_id))}</span> "
            + (copy_button(endpoint) if endpoint else "")
        )
        self._show_metadata()

    def _show_metadata(self) -> None:
        values = self.data["spec"]["predictors"][0].get("metadata", {})
        self.metadata_view.value = (
            f"<div class='ph-metadata'>{esc(pairs(values) or 'no metadata')}</div>"
            if self.metadata_button.value
            else ""
        )


class DeploymentPanel(w.VBox):
    """List, create, inspect, update, stop, start and delete deployments in a notebook.

    >>> from primehub_jupyter import DeploymentPanel
    >>> DeploymentPanel()

    The list refreshes itself every `refresh_seconds` (0: never) until the panel is closed,
    and at once when the server's change stream (GET events) says that a deployment of the
    user's groups or a group changed; while that stream is live, polling slows down sixfold.
    """

    #: While the change stream is live, polling is a safety net: this many times slower.
    LIVE_SLOWDOWN = 6

    def __init__(
        self,
        client: Client | None = None,
        *,
        refresh_seconds: float = 10.0,
        namespace: dict[str, Any] | None = None,
    ) -> None:
        self.client = client or Client()
        if namespace is None:
            try:
                from IPython import get_ipython

                shell = get_ipython()
                namespace = shell.user_ns if shell is not None else {}
            except ImportError:  # pragma: no cover
                namespace = {}
        self.namespace = namespace
        self.refresh_seconds = refresh_seconds
        self.refreshes = 0
        self.search = w.Text(placeholder="Search by name", description="Search")
        self.mine = w.Checkbox(description="Deployed by me")
        self.refresh_button = button(description="Refresh", icon="refresh")
        self.create_button = button(description="Create deployment", icon="plus",
                                      button_style="primary")  # fmt: skip
        self.close_button = button(description="Close", icon="times", tooltip="Close the panel")
        self.message = w.HTML()
        self.rows: dict[str, DeploymentRow] = {}
        self.list_box = w.VBox()
        self.list_view = w.VBox([
            w.HBox([self.search, self.mine, self.refresh_button, self.create_button,
                    self.close_button]),
            self.message, self.list_box,
        ])  # fmt: skip
        self.view: w.Widget = self.list_view
        self.detail: DeploymentDetail | None = None
        self.form: DeploymentForm | None = None
        self.search.observe(lambda _: self.refresh(), "value")
        self.mine.observe(lambda _: self.refresh(), "value")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.create_button.on_click(lambda _: self.show_create())
        self.close_button.on_click(lambda _: self.close())
        self.title = w.HTML("<h3 style='margin:4px 0'>Model Deployments</h3>")
        super().__init__([self.title, self.list_view])
        self._had_comm = self.comm is not None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self.refresh()
        self._thread: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self._events: Any = None
        self.live = False
        if refresh_seconds > 0:
            self._thread = threading.Thread(target=self._auto_refresh, daemon=True)
            self._thread.start()
            self._listener = threading.Thread(target=self._listen, daemon=True)
            self._listener.start()

    # ---- navigation -------------------------------------------------------------------

    def _show(self, view: w.Widget) -> None:
        self.view = view
        self.children = (self.title, view)

    def show_list(self) -> None:
        self.detail = self.form = None
        self._show(self.list_view)
        self.refresh()

    def show_detail(self, deployment_id: str) -> DeploymentDetail:
        self.form = None
        self.detail = DeploymentDetail(
            self.client, deployment_id, on_back=self.show_list, on_update=self.show_update
        )
        self._show(self.detail)
        return self.detail

    def show_create(self) -> DeploymentForm | None:
        try:
            self.form = DeploymentForm(
                self.client, self.namespace, on_done=self.show_detail, on_cancel=self.show_list
            )
        except PrimeHubError as error:
            self.message.value = error_html(error.message)
            return None
        self._show(self.form)
        return self.form

    def show_update(self, data: dict[str, Any]) -> DeploymentForm:
        self.form = DeploymentForm(
            self.client,
            self.namespace,
            on_done=self.show_detail,
            on_cancel=lambda: self.show_detail(data["id"]),
            existing=data,
        )
        self._show(self.form)
        return self.form

    # ---- refreshing -------------------------------------------------------------------

    def refresh(self) -> None:
        """Reload the list (or the open deployment's header)."""
        with self._lock:
            self.refreshes += 1
            if self.view is self.detail and self.detail is not None:
                self.detail.refresh()
                return
            try:
                items = self.client.list(
                    name=self.search.value.strip() or None, mine=self.mine.value
                )
            except PrimeHubError as error:
                self.message.value = error_html(error.message)
                return
            self.message.value = "" if items else (
                "<i>No deployments yet. Create one here, or run %deploy MODEL_VAR.</i>"
            )  # fmt: skip
            rows = []
            for data in items:
                row = self.rows.get(data["id"])
                if row is None:
                    row = self.rows[data["id"]] = DeploymentRow(data, self.show_detail)
                else:
                    row.update(data)
                rows.append(row)
            for stale in set(self.rows) - {d["id"] for d in items}:
                del self.rows[stale]
            self.list_box.children = rows

    def _closed(self) -> bool:
        # In a kernel a widget has a comm until it is closed, from either side.
        return self._stop.is_set() or (self._had_comm and self.comm is None)

    def _listen(self) -> None:
        """Follow the change stream in this thread; reconnect after a break, while open."""
        while not self._closed():
            try:
                self._events = self.client.events()
                for event in self._events:
                    if self._closed():
                        break
                    if event["type"] == "ready":
                        self.live = True
                        self.refresh()  # whatever changed before the stream started
                    elif event["type"] in ("deployment", "groups"):
                        self.refresh()
            except Exception:  # no stream (older server, network): the poll carries on
                pass
            finally:
                self.live = False
                if self._events is not None:
                    self._events.close()
            self._stop.wait(self.refresh_seconds * self.LIVE_SLOWDOWN)

    def _auto_refresh(self) -> None:
        while not self._stop.wait(self.refresh_seconds * (self.LIVE_SLOWDOWN if self.live else 1)):
            # In a kernel a widget has a comm until it is closed, from either side.
            if self._had_comm and self.comm is None:
                break
            try:
                self.refresh()
            except Exception:  # a passing network error must not end the refresh loop
                continue

    @property
    def auto_refreshing(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        """Stop the automatic refresh and close every widget of the panel."""
        self._stop.set()
        if self._events is not None:
            self._events.close()  # ends the listener's blocking read
        for thread in (self._thread, self._listener):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=self.refresh_seconds * self.LIVE_SLOWDOWN + 30)
        super().close()
