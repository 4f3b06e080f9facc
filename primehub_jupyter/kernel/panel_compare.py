"""The DeploymentPanel's Compare tab: the predictors side by side, and promoting one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as w

from .client import Client, PrimeHubError
from .compare import CompareView
from .display import esc
from .panel_form import LABEL_FITS, button, error_html


class CompareTab(w.VBox):
    """A table with each challenger's test, the latency/success chart, and Promote with a
    confirmation; `on_promoted` gets the deployment after a promote."""

    def __init__(
        self, client: Client, deployment_id: str, on_promoted: Callable[[dict[str, Any]], Any]
    ) -> None:
        self.client = client
        self.deployment_id = deployment_id
        self.on_promoted = on_promoted
        self.report: dict[str, Any] = {}
        self.reload = button(description="Reload", icon="refresh")
        self.table = w.HTML()
        # An Output shows the chart through JupyterLab's own Vega renderer.
        self.chart = w.Output()
        self.predictor = w.Dropdown(description="Promote", style=LABEL_FITS)
        self.promote_button = button(description="Send all traffic here", icon="check")
        self.confirm = w.HBox(layout=w.Layout(flex_flow="row wrap", align_items="center"))
        self.message = w.HTML()
        self.reload.on_click(lambda _: self.load())
        self.promote_button.on_click(lambda _: self._ask_promote())
        super().__init__(
            [
                self.reload,
                self.message,
                self.table,
                self.chart,
                w.HBox([self.predictor, self.promote_button]),
                self.confirm,
            ]
        )

    def load(self) -> None:
        """Fetch the comparison and show it."""
        try:
            self.report = self.client.compare(self.deployment_id)
        except PrimeHubError as error:
            self.message.value = error_html(error.message)
            return
        self.message.value = ""
        rows = self.report.get("predictors") or []
        view = CompareView(self.report)
        if len(rows) < 2:
            self.table.value = (
                "<i>One predictor: nothing to compare. Add a challenger (with traffic) or a "
                "shadow by an update to compare them here.</i>"
            )
        else:
            self.table.value = view._repr_html_()
        counted = any(row["requests"] or row["feedback"] for row in rows)
        # Set the outputs directly (no `with output:`): this may run on the refresh thread.
        self.chart.outputs = (
            ({"output_type": "display_data", "data": view.chart_bundle(), "metadata": {}},)
            if counted and len(rows) > 1
            else ()
        )
        answering = [row["name"] for row in rows if row["role"] != "shadow"]
        self.predictor.options = answering
        self.predictor.value = next(
            (row["name"] for row in rows if row["role"] == "challenger"),
            answering[0] if answering else None,
        )
        self.promote_button.disabled = len(rows) < 2
        self.confirm.children = []

    def _ask_promote(self) -> None:
        name = self.predictor.value
        if not name:
            return
        others = [row["name"] for row in self.report.get("predictors") or [] if row["name"] != name]
        yes = button(description="Yes, promote", button_style="danger")
        no = button(description="Cancel")
        self.confirm.children = [
            w.HTML(
                f"Send every request of <b>{esc(self.deployment_id)}</b> to <b>{esc(name)}</b> "
                f"and remove {esc(', '.join(others))}? The history keeps the split: a roll "
                "back to the revision before brings it back."
            ),
            yes,
            no,
        ]
        yes.on_click(lambda _: self.promote(name))
        no.on_click(lambda _: setattr(self.confirm, "children", []))

    def promote(self, name: str) -> None:
        """Promote `name` (what Yes does), then show the new state."""
        self.confirm.children = []
        try:
            data = self.client.promote(self.deployment_id, name)
        except PrimeHubError as error:
            self.message.value = error_html(error.message)
            return
        self.on_promoted(data)
        self.load()
        self.message.value = f"<b>{esc(name)}</b> now answers every request."
