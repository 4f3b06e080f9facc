"""What the magics return: a deployment list, a new client's token, metrics charts."""

from __future__ import annotations

from typing import Any

from ..core import charts
from .display import Table, copy_button, esc, html_table, phase_badge, ready_text


class DeploymentList:
    """`%phdeploy list`: a table with status colours in Jupyter, plain text elsewhere."""

    HEADERS = ["id", "name", "group", "phase", "ready", "access", "endpoint", "last updated"]

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def _row(self, d: dict[str, Any]) -> list[Any]:
        spec, status = d["spec"], d["status"]
        return [
            d["id"], spec["displayName"], spec["groupName"], status["phase"],
            ready_text(spec, status),
            spec["endpoint"]["accessType"], status.get("endpoint") or "-",
            status.get("lastUpdated") or "-",
        ]  # fmt: skip

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return repr(Table(self.HEADERS, [self._row(d) for d in self.items]))

    def _repr_html_(self) -> str:
        if not self.items:
            return "<i>No deployments yet: try %deploy MODEL_VAR</i>"
        rows = []
        for d in self.items:
            row = [esc(v) for v in self._row(d)]
            row[3] = phase_badge(d["status"]["phase"])
            rows.append(row)
        return html_table(self.HEADERS, rows, raw=True)


class NewClient(dict):
    """A newly added client: shows its token once, with a reminder."""

    def _repr_html_(self) -> str:
        return (
            f"<div class='ph-token'>Client <b>{esc(self['name'])}</b>, token "
            f"<code>{esc(self['token'])}</code> {copy_button(self['token'])}<br>"
            "<i>Keep it now: it is stored only as a hash and will not be shown again.</i></div>"
        )

    def __repr__(self) -> str:
        return (
            f"client {self['name']}: token {self['token']}\n"
            "(keep it now: it is stored only as a hash and will not be shown again)"
        )


class MetricsView:
    """`%phdeploy metrics`: Vega-Lite charts in Jupyter (its own Vega renderer), totals as text."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def __repr__(self) -> str:
        return charts.summary(self.data)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return charts.bundle(self.data)
