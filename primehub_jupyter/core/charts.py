"""Vega-Lite v5 specs of a metrics document: the one chart definition of every view."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .metrics import (
    CLIENT_ERRORS_PER_SECOND,
    CPU,
    LATENCY_P50,
    LATENCY_P90,
    LATENCY_P99,
    MEMORY,
    REQUESTS_PER_SECOND,
    REWARD,
    SERVER_ERRORS_PER_SECOND,
    SUCCESS_RATE,
    TOTAL_CLIENT_ERRORS,
    TOTAL_FEEDBACK,
    TOTAL_PREDICT_REQUESTS,
    TOTAL_REQUESTS,
    TOTAL_REWARD,
    TOTAL_SERVER_ERRORS,
)

SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
MIMETYPE = "application/vnd.vegalite.v5+json"

# Series colours by role. Mid tones read on a light and on a dark background (the notebook's
# Vega renderer switches to its dark theme with JupyterLab's); the sidebar replaces them with
# the theme's --jp-* variables named in each spec's `usermeta.colorRoles`.
ROLE_COLORS = {
    "success": "#3a9d5d",
    "warn": "#d99a00",
    "error": "#d9534f",
    "brand": "#4c8ed9",
    "accent": "#e07b39",
    "info": "#9467bd",
}
# Roles for per-replica series, in turn.
REPLICA_ROLES = ("brand", "accent", "info", "success", "warn", "error")

# Charts of a deployment's series: (id, title, axis title, [(legend, role, series key)], kind).
SERIES_CHARTS: tuple[tuple[str, str, str, tuple[tuple[str, str, str], ...], str], ...] = (
    (
        "requests",
        "Requests / s by outcome",
        "requests/s",
        (
            ("2xx", "success", REQUESTS_PER_SECOND),
            ("4xx", "warn", CLIENT_ERRORS_PER_SECOND),
            ("5xx", "error", SERVER_ERRORS_PER_SECOND),
        ),
        "rate",
    ),
    ("success", "Success rate", "2xx share", (("success", "success", SUCCESS_RATE),), "share"),
    (
        "latency",
        "Latency (log scale)",
        "ms",
        (
            ("p50", "brand", LATENCY_P50),
            ("p90", "accent", LATENCY_P90),
            ("p99", "error", LATENCY_P99),
        ),
        "latency",
    ),
    ("reward", "Feedback reward", "reward", (("reward", "info", REWARD),), "number"),
)
# Charts of the per-replica series: (id, title, axis title, series key, scale to the unit).
REPLICA_CHARTS = (
    ("cpu", "CPU per replica", "cores", CPU, 1.0),
    ("memory", "Memory per replica", "MiB", MEMORY, 1.0 / 2**20),
)
CHART_IDS = tuple(c[0] for c in SERIES_CHARTS) + tuple(c[0] for c in REPLICA_CHARTS)

TIME_FORMAT = "%H:%M:%S"


def _number(value: Any) -> float | None:
    """A finite float, or None for null, NaN and infinities (Vega-Lite draws None as a gap)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _all_series(doc: dict[str, Any]) -> list[Sequence[Any]]:
    series = list((doc.get("series") or {}).values())
    for replica in (doc.get("replicas") or {}).values():
        series += list(replica.values())
    return series


def time_domain(doc: dict[str, Any]) -> tuple[float, float] | None:
    """The time axis in ms: from the first bucket with any value to the end of the last one.

    None when the document has no value at all. The axis starts where the data starts, not at
    the window's start, so a young deployment fills the chart instead of its right edge.
    """
    times = [float(t) for t in doc.get("timestamps") or []]
    first: int | None = None
    for values in _all_series(doc):
        for index, value in enumerate(values):
            if index < len(times) and _number(value) is not None:
                first = index if first is None else min(first, index)
                break
    if first is None:
        return None
    step = float(doc.get("step") or 1)
    # The last bucket is partial: it ends now at most, drawn to its start plus one step.
    end = times[-1] + step if first == len(times) - 1 else times[-1]
    return times[first] * 1000.0, end * 1000.0


def _rows(
    times: Sequence[float],
    labelled: Sequence[tuple[str, Sequence[Any]]],
    *,
    scale: float = 1.0,
    positive: bool = False,
    start: float | None = None,
) -> list[dict[str, Any]]:
    """Long-format rows {time (ms), series, value, segment} of the values that exist.

    A gap (None) is no row, and the rows after it start a new `segment`: each segment is drawn
    as its own line, so a gap shows as a gap in every Vega-Lite version (no `invalid` mode).
    """
    rows = []
    for label, values in labelled:
        segment = 0
        for t, raw in zip(times, values, strict=False):
            ms = float(t) * 1000.0
            if start is not None and ms < start:
                continue
            value = _number(raw)
            if value is not None:
                value *= scale
                if positive and value <= 0:  # a log scale has no place for 0
                    value = None
            if value is None:
                segment += 1
                continue
            rows.append({"time": ms, "series": label, "value": value,
                         "segment": f"{label}/{segment}"})  # fmt: skip
    return rows


def _requests_rows(doc: dict[str, Any], start: float | None) -> list[dict[str, Any]]:
    """2xx/4xx/5xx per second: 2xx is all requests times the success rate (its definition)."""
    series = doc.get("series") or {}
    total = series.get(REQUESTS_PER_SECOND) or []
    share = series.get(SUCCESS_RATE) or []
    client = series.get(CLIENT_ERRORS_PER_SECOND) or []
    server = series.get(SERVER_ERRORS_PER_SECOND) or []
    ok: list[float | None] = []
    for index, value in enumerate(total):
        rate = _number(value)
        fraction = _number(share[index]) if index < len(share) else None
        if rate is None:
            ok.append(None)
        elif fraction is not None:
            ok.append(rate * fraction)
        else:  # no answer in the step: 2xx is what is left after the errors (0 when idle)
            errors = sum(_number(s[index]) or 0.0 for s in (client, server) if index < len(s))
            ok.append(max(0.0, rate - errors))
    labelled = [("2xx", ok), ("4xx", client), ("5xx", server)]
    return _rows(doc.get("timestamps") or [], labelled, start=start)


def _chart(
    chart_id: str,
    title: str,
    axis_title: str,
    legend: Sequence[tuple[str, str]],
    rows: list[dict[str, Any]],
    domain: tuple[float, float] | None,
    *,
    y_scale: dict[str, Any],
    y_format: str,
    width: int | str,
    height: int,
) -> dict[str, Any]:
    """One line chart: a line per series, points with tooltips, the legend under the plot."""
    labels = [label for label, _ in legend]
    roles = {label: role for label, role in legend}
    x_scale: dict[str, Any] = {"domain": list(domain)} if domain else {}
    subtitle = "" if rows else "no data yet"
    color: dict[str, Any] = {"field": "series", "type": "nominal", "title": None}
    if labels:
        color["sort"] = labels
        color["scale"] = {"domain": labels, "range": [ROLE_COLORS[roles[x]] for x in labels]}
        color["legend"] = {"orient": "bottom", "direction": "horizontal"}
    else:
        # No series yet (no replica has run): an empty legend makes Vega size the view
        # to infinity, so there is none.
        color["legend"] = None
    if not rows:
        # Nothing to scale to: fixed domains, so an empty chart still has a well-defined size.
        y_scale = {**y_scale, "domain": [1, 1000] if y_scale.get("type") == "log" else [0, 1]}
    # Seconds on the axis when the chart spans minutes, else hours and minutes.
    span = (domain[1] - domain[0]) / 1000.0 if domain else 3600.0
    time_format = TIME_FORMAT if span <= 600 else "%H:%M"
    return {
        "$schema": SCHEMA,
        "title": {"text": title, "subtitle": subtitle, "anchor": "start"},
        "description": f"{title} over time",
        "width": width,
        "height": height,
        "data": {"values": rows},
        "mark": {
            "type": "line",
            "point": {"filled": True, "size": 16},
            "clip": True,
        },
        "encoding": {
            "x": {
                "field": "time",
                "type": "temporal",
                "title": None,
                "scale": x_scale,
                "axis": {"format": time_format, "labelOverlap": True, "tickCount": 4},
            },
            "y": {
                "field": "value",
                "type": "quantitative",
                "title": axis_title,
                "scale": y_scale,
                "axis": {"format": y_format, "tickCount": 4},
            },
            "color": color,
            "detail": {"field": "segment", "type": "nominal"},
            "tooltip": [
                {"field": "time", "type": "temporal", "title": "time", "format": TIME_FORMAT},
                {"field": "series", "type": "nominal", "title": "series"},
                {"field": "value", "type": "quantitative", "title": axis_title, "format": y_format},
            ],
        },
        "usermeta": {"chartId": chart_id, "colorRoles": roles},
    }


def chart_specs(
    doc: dict[str, Any], *, width: int | str = 380, height: int = 140
) -> list[dict[str, Any]]:
    """Vega-Lite v5 specs of a metrics document (docs/internals.md "Metrics"), in CHART_IDS order.

    Requests/s by outcome, success rate, latency p50/p90/p99 on a log scale (ms), reward, and
    per-replica CPU and memory; every time axis starts at the document's first data point.
    """
    times = doc.get("timestamps") or []
    start = None
    domain = time_domain(doc)
    if domain is not None:
        start = domain[0]
    elif len(times) > 1:  # no data at all: the window, so the empty axes still read as time
        domain = (float(times[0]) * 1000.0, float(times[-1]) * 1000.0)
    series = doc.get("series") or {}
    specs = []
    for chart_id, title, axis_title, keys, kind in SERIES_CHARTS:
        legend = [(label, role) for label, role, _ in keys]
        if kind == "rate":
            rows = _requests_rows(doc, start)
        else:
            labelled = [(label, series.get(key) or []) for label, _, key in keys]
            scale = 1000.0 if kind == "latency" else 1.0
            rows = _rows(times, labelled, scale=scale, positive=kind == "latency", start=start)
        y_scale: dict[str, Any] = {"zero": True}
        y_format = ",.3~r"
        if kind == "latency":
            # One slow request must not flatten a steady line: a log scale keeps both readable.
            y_scale = {"type": "log", "nice": True}
            y_format = ",.3~r"
        elif kind == "share":
            y_scale = {"domain": [0, 1]}
            y_format = ".0%"
        specs.append(
            _chart(chart_id, title, axis_title, legend, rows, domain, y_scale=y_scale,
                   y_format=y_format, width=width, height=height)
        )  # fmt: skip
    replicas = doc.get("replicas") or {}
    names = sorted(replicas)
    legend = [(name, REPLICA_ROLES[i % len(REPLICA_ROLES)]) for i, name in enumerate(names)]
    for chart_id, title, axis_title, key, scale in REPLICA_CHARTS:
        labelled = [(name, replicas[name].get(key) or []) for name in names]
        rows = _rows(times, labelled, scale=scale, start=start)
        specs.append(
            _chart(chart_id, title, axis_title, legend, rows, domain, y_scale={"zero": True},
                   y_format=",.3~r", width=width, height=height)
        )  # fmt: skip
    return specs


def summary(doc: dict[str, Any]) -> str:
    """The window's totals in one line: the text/plain twin of the charts."""
    t = doc.get("totals") or {}
    share = _number(t.get(TOTAL_REWARD))
    reward = f", reward {share:.2f}" if share is not None else ""
    return (
        f"{doc.get('deploymentId', '')}, last {float(doc.get('window') or 0):g} s: "
        f"{t.get(TOTAL_REQUESTS, 0)} requests ({t.get(TOTAL_PREDICT_REQUESTS, 0)} predictions), "
        f"{t.get(TOTAL_CLIENT_ERRORS, 0)} 4xx, {t.get(TOTAL_SERVER_ERRORS, 0)} 5xx, "
        f"{t.get(TOTAL_FEEDBACK, 0)} feedback{reward}"
    )


def dashboard(doc: dict[str, Any], *, columns: int = 2) -> dict[str, Any]:
    """Every chart of a document in one Vega-Lite spec (a grid), titled with the totals."""
    charts = []
    for spec in chart_specs(doc):
        # Only a top-level spec may carry usermeta: a view inside the grid is named instead.
        inner = {k: v for k, v in spec.items() if k not in ("$schema", "usermeta")}
        charts.append({"name": spec["usermeta"]["chartId"], **inner})
    return {
        "$schema": SCHEMA,
        "title": {"text": summary(doc), "anchor": "start"},
        "columns": columns,
        "concat": charts,
        "spacing": 24,
        "resolve": {
            "scale": {"color": "independent", "y": "independent", "x": "independent"},
            "legend": {"color": "independent"},
        },
        "usermeta": {"chartIds": list(CHART_IDS)},
    }


def bundle(doc: dict[str, Any]) -> dict[str, Any]:
    """A display bundle: the Vega-Lite dashboard with its text/plain summary as fallback."""
    return {MIMETYPE: dashboard(doc), "text/plain": summary(doc)}


def comparison_chart(report: dict[str, Any], *, width: int = 220, height: int = 140) -> dict:
    """Vega-Lite bars of a ComparisonReport: latency p50/p99 (ms) and success share per predictor.

    One bar group per predictor, side by side, so a person sees at a glance whether the
    challenger is slower or succeeds less; the test's result stays in the table beside it.
    """
    latency, success = [], []
    for row in report.get("predictors") or []:
        for label, key in (("p50", "latencyP50"), ("p99", "latencyP99")):
            value = _number(row.get(key))
            if value is not None:
                latency.append({"predictor": row["name"], "series": label, "value": value * 1000})
        share = _number(row.get("successRate"))
        if share is not None:
            success.append({"predictor": row["name"], "series": "success", "value": share})

    def bars(title: str, rows: list[dict[str, Any]], legend: list[tuple[str, str]], axis: str,
             y_format: str) -> dict[str, Any]:  # fmt: skip
        labels = [label for label, _ in legend]
        return {
            "title": {"text": title, "subtitle": "" if rows else "no data yet", "anchor": "start"},
            "width": width,
            "height": height,
            "data": {"values": rows},
            "mark": {"type": "bar", "tooltip": True},
            "encoding": {
                "x": {"field": "predictor", "type": "nominal", "title": None, "sort": None},
                "xOffset": {"field": "series", "type": "nominal", "sort": labels},
                "y": {"field": "value", "type": "quantitative", "title": axis,
                      "axis": {"format": y_format, "tickCount": 4}},
                "color": {"field": "series", "type": "nominal", "title": None,
                          "scale": {"domain": labels,
                                    "range": [ROLE_COLORS[role] for _, role in legend]},
                          "legend": {"orient": "bottom", "direction": "horizontal"}},
            },
        }  # fmt: skip

    return {
        "$schema": SCHEMA,
        "title": {"text": f"Predictors of {report.get('deploymentId', '')}", "anchor": "start"},
        "hconcat": [
            bars("Latency", latency, [("p50", "brand"), ("p99", "error")], "ms", ",.3~r"),
            bars("Success share (feedback)", success, [("success", "success")], "share", ".0%"),
        ],
        "resolve": {"scale": {"color": "independent", "y": "independent"}},
        "usermeta": {"chartId": "compare"},
    }
