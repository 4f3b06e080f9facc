"""The comparison of a deployment's predictors as the notebook, the panel and the CLI show it."""

from __future__ import annotations

from typing import Any

from ..core import charts
from .display import esc, html_table, text_table

HEADERS = [
    "predictor",
    "role",
    "traffic",
    "requests",
    "error rate",
    "p50 ms",
    "p99 ms",
    "feedback",
    "mean reward",
    "success",
    "against the primary",
]


def _percent(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.3g}"


def verdict(row: dict[str, Any]) -> str:
    """The last column: the test's result for a challenger, the diff share for a shadow."""
    if row["role"] == "shadow":
        if not row.get("compared"):
            return "no answers compared yet"
        return f"differs in {_percent(row.get('differedShare'))} of {row['compared']} answers"
    test = row.get("test")
    if not test:
        return "-"
    if not test["enoughData"]:
        return "not enough data"
    word = "significant" if test["significant"] else "not significant"
    difference = test.get("difference")
    points = "" if difference is None else f", {difference * 100:+.1f} points"
    return f"p = {test['pValue']:.3g}, {word}{points}"


def comparison_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row of text cells per predictor, in HEADERS order, the primary first."""
    rows = []
    for row in report.get("predictors") or []:
        mean = row.get("meanReward")
        rows.append(
            [
                row["name"],
                row["role"],
                f"{row['traffic']}%" if row["role"] != "shadow" else "copy",
                str(row["requests"]),
                _percent(row.get("errorRate")),
                _ms(row.get("latencyP50")),
                _ms(row.get("latencyP99")),
                str(row["feedback"]),
                "-" if mean is None else f"{mean:.3g}",
                _percent(row.get("successRate")),
                verdict(row),
            ]
        )
    return rows


def footnote(report: dict[str, Any]) -> str:
    """What the test is, and a word when the engine counted nothing."""
    note = f"Test: {report.get('test', '')}"
    if not report.get("counted"):
        note = "No counts yet: send requests (and feedback) to the deployment. " + note
    return note


class CompareView:
    """`%phdeploy compare`: a table and Vega-Lite bars in Jupyter, the table as text elsewhere."""

    def __init__(self, report: dict[str, Any]) -> None:
        self.report = report

    @property
    def rows(self) -> list[list[str]]:
        return comparison_rows(self.report)

    def __repr__(self) -> str:
        return text_table(HEADERS, self.rows) + "\n" + footnote(self.report)

    def _repr_html_(self) -> str:
        summaries = [
            f"<li><b>{esc(row['name'])}</b>: {esc(row['test']['summary'])}</li>"
            for row in self.report.get("predictors") or []
            if row.get("test")
        ]
        return (
            f"<div class='ph-compare' data-deployment='{esc(self.report.get('deploymentId'))}'>"
            + html_table(HEADERS, self.rows)
            + (f"<ul>{''.join(summaries)}</ul>" if summaries else "")
            + f"<div style='font-size:0.85em;opacity:0.8'>{esc(footnote(self.report))}</div>"
            + "</div>"
        )

    def chart_bundle(self) -> dict[str, Any]:
        """The Vega-Lite bars as a display bundle, with a line of text where Vega cannot draw."""
        return {
            charts.MIMETYPE: charts.comparison_chart(self.report),
            "text/plain": "(latency and success share per predictor: a Vega-Lite chart)",
        }

    def _ipython_display_(self) -> None:
        # Two outputs: a bundle holding both would show only the renderer JupyterLab ranks
        # first (the table), so the chart goes out on its own, under the table.
        from IPython.display import display

        display({"text/html": self._repr_html_(), "text/plain": repr(self)}, raw=True)
        if any(row["requests"] or row["feedback"] for row in self.report.get("predictors") or []):
            display(self.chart_bundle(), raw=True)
