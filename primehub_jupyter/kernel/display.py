"""Output in notebooks and terminals: live progress, one-line errors, tables and SVG charts."""

from __future__ import annotations

import html
import math
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from .words import PHASES, local_time, phase_color, phase_text_color, utc_time

PHASE_COLORS = {phase: colors[0] for phase, colors in PHASES.items()}


def in_notebook() -> bool:
    """True in a Jupyter kernel (rich output), False in a terminal or a plain script."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with every kernel
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def show(html_text: str, plain: str, *, update: Any = None) -> Any:
    """Display HTML with a readable text/plain twin; with `update`, replace that display."""
    from IPython.display import display

    bundle = {"text/html": html_text, "text/plain": plain}
    if update is not None:
        update.update(bundle, raw=True)
        return update
    return display(bundle, raw=True, display_id=True)


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def phase_badge(phase: str) -> str:
    color, text = phase_color(phase), phase_text_color(phase)
    return (
        f'<span class="ph-phase" data-phase="{esc(phase)}" style="background:{color};color:{text};'
        f'border-radius:10px;padding:1px 8px;font-size:0.85em;font-weight:600">{esc(phase)}</span>'
    )


def time_html(iso: str | None) -> str:
    """A time in the local zone with its abbreviation, the ISO UTC time in the tooltip."""
    return (
        f'<span class="ph-time" title="{esc(utc_time(iso))}" style="white-space:nowrap">'
        f"{esc(local_time(iso))}</span>"
    )


def copy_button(text: str, label: str = "Copy") -> str:
    """A button that copies `text` to the clipboard in the browser (inline handler, no script)."""
    quoted = html.escape(repr(text), quote=True)
    return (
        f'<button class="ph-copy" title="Copy to the clipboard" '
        f"onclick=\"navigator.clipboard.writeText({quoted});this.textContent='Copied'\">"
        f"{esc(label)}</button>"
    )


class Progress:
    """Shows a deployment's phase as it changes: a live output in Jupyter, one line elsewhere."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.notebook = in_notebook()
        self._handle: Any = None
        self._last = ""

    def update(self, phase: str, message: str = "") -> None:
        text = f"{self.title}: {phase}" + (f" - {message}" if message else "")
        if text == self._last:
            return
        self._last = text
        if self.notebook:
            body = (
                f'<div class="ph-progress">{esc(self.title)}: {phase_badge(phase)} '
                f"<span>{esc(message)}</span></div>"
            )
            self._handle = show(body, text, update=self._handle)
        else:
            sys.stdout.write("\r\033[K" + text)
            sys.stdout.flush()

    def done(self, summary: str, phase: str | None = None) -> None:
        """Replace the live line with a one-line summary."""
        if self.notebook:
            badge = phase_badge(phase) + " " if phase else ""
            show(
                f'<div class="ph-progress">{badge}{esc(summary)}</div>',
                summary,
                update=self._handle,
            )
        else:
            sys.stdout.write("\r\033[K" + summary + "\n")
            sys.stdout.flush()


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, raw: bool = False) -> str:
    """An HTML table; cells are escaped unless `raw` (then they are trusted HTML)."""
    head = "".join(f"<th style='text-align:left'>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f"<td style='text-align:left'>{cell if raw else esc(cell)}</td>" for cell in row)
        + "</tr>"
        for row in rows
    )
    return f'<table class="ph-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A fixed-width table for terminals and text/plain output."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells
    )


class Table:
    """A table that shows as HTML in Jupyter and as aligned text elsewhere."""

    def __init__(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.headers = list(headers)
        self.rows = [list(r) for r in rows]

    def _repr_html_(self) -> str:
        return html_table(self.headers, self.rows)

    def __repr__(self) -> str:
        return text_table(self.headers, self.rows)


def svg_chart(
    timestamps: Sequence[float],
    series: dict[str, Sequence[float | None]],
    *,
    title: str,
    unit: str = "",
    width: int = 420,
    height: int = 150,
    scale: float = 1.0,
) -> str:
    """A small line chart as SVG (gaps where a value is None); no plotting library needed."""
    colors = ("#1976d2", "#c62828", "#2e7d32", "#f9a825", "#6a1b9a")
    left, right, top, bottom = 44, 8, 22, 22
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v * scale for s in series.values() for v in s if v is not None]
    high = max(values) if values else 1.0
    high = high if high > 0 else 1.0
    nice = 10 ** math.floor(math.log10(high)) if high > 0 else 1.0
    high = math.ceil(high / nice) * nice
    t0, t1 = (timestamps[0], timestamps[-1]) if timestamps else (0.0, 1.0)
    span = (t1 - t0) or 1.0

    def x(t: float) -> float:
        return left + (t - t0) / span * plot_w

    def y(v: float) -> float:
        return top + plot_h - (v / high) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="ph-chart" width="{width}" '
        f'height="{height}" role="img" aria-label="{esc(title)}">',
        f'<text x="{left}" y="14" font-size="12" font-weight="600" fill="currentColor">'
        f"{esc(title)}</text>",
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#9e9e9e" stroke-width="1"/>',
        f'<text x="{left - 4}" y="{top + 4}" font-size="10" text-anchor="end" '
        f'fill="currentColor">{_short(high)}{esc(unit)}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" font-size="10" text-anchor="end" '
        'fill="currentColor">0</text>',
    ]
    if timestamps:
        for t, anchor in ((t0, "start"), (t1, "end")):
            label = datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M")
            parts.append(
                f'<text x="{x(t):.1f}" y="{height - 6}" font-size="10" text-anchor="{anchor}" '
                f'fill="currentColor">{label}</text>'
            )
    for index, (name, points) in enumerate(series.items()):
        color = colors[index % len(colors)]
        segments: list[list[str]] = [[]]
        for t, v in zip(timestamps, points, strict=False):
            if v is None:
                if segments[-1]:
                    segments.append([])
                continue
            segments[-1].append(f"{x(t):.1f},{y(v * scale):.1f}")
        for segment in segments:
            if len(segment) == 1:
                cx, cy = segment[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{color}"/>')
            elif segment:
                parts.append(
                    f'<polyline fill="none" stroke="{color}" stroke-width="1.5" '
                    f'points="{" ".join(segment)}"/>'
                )
        if len(series) > 1:
            parts.append(
                f'<text x="{left + plot_w - 4}" y="{top + 12 + 12 * index}" font-size="10" '
                f'text-anchor="end" fill="{color}">{esc(name)}</text>'
            )
    if not values:
        parts.append(
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" font-size="11" '
            'text-anchor="middle" fill="#9e9e9e">no data yet</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _short(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


# (title, {legend: series key}, unit, scale) of the charts the panel and %phdeploy metrics draw.
METRIC_CHARTS = (
    ("Requests / s", {"all": "requestsPerSecond", "predict": "predictRequestsPerSecond"}, "", 1.0),
    ("Success rate", {"success": "successRate"}, "%", 100.0),
    ("Errors / s", {"4xx": "clientErrorsPerSecond", "5xx": "serverErrorsPerSecond"}, "", 1.0),
    ("Latency", {"p50": "latencyP50", "p90": "latencyP90", "p99": "latencyP99"}, " ms", 1000.0),
    ("Feedback reward", {"reward": "reward"}, "", 1.0),
)


def metric_charts(data: dict[str, Any]) -> list[str]:
    """SVG charts of a metrics document (GET .../metrics)."""
    times, series = data["timestamps"], data["series"]
    return [
        svg_chart(
            times,
            {label: series[key] for label, key in keys.items()},
            title=title,
            unit=unit,
            scale=scale,
        )
        for title, keys, unit, scale in METRIC_CHARTS
    ]
