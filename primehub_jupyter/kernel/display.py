"""Output in notebooks and terminals: live progress, one-line errors and tables."""

from __future__ import annotations

import html
import sys
from collections.abc import Sequence
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


# Predictor phases a person reads as words beside the replica count.
SCALE_WORDS = {"ScaledToZero": "Scaled to zero", "WakingUp": "Waking up"}


def replicas_text(predictor: dict[str, Any], status: dict[str, Any] | None) -> str:
    """One predictor's replicas: `Scaled to zero`/`Waking up`, available/wanted, and the
    autoscaling range (`1/2 available (autoscaled 1-4)`); `status` is its status.predictors
    entry, or the deployment's status when the engine reports no predictors."""
    status = status or {}
    available = status.get("availableReplicas", 0)
    word = SCALE_WORDS.get(status.get("phase", ""), "")
    if predictor.get("maxReplicas") is not None:
        text = f"{available}/{status.get('replicas', 0)} available"
        text += f" (autoscaled {replica_range(predictor)})"
    else:
        text = f"{available}/{predictor.get('replicas') or 1} available"
    return f"{word}: {text}" if word else text


def replica_range(predictor: dict[str, Any]) -> str:
    """A predictor's replica setting as written: `3`, or `1-4` when autoscaled."""
    if predictor.get("maxReplicas") is not None:
        low = predictor.get("minReplicas")
        return f"{1 if low is None else low}-{predictor['maxReplicas']}"
    return str(predictor.get("replicas") or 1)


def ready_text(spec: dict[str, Any], status: dict[str, Any]) -> str:
    """A deployment's ready replicas in one cell: `2/3`, with `Scaled to zero` or `Waking up`
    when a predictor is."""
    statuses = {p.get("name"): p for p in status.get("predictors") or []}
    wanted = 0
    words = []
    for predictor in spec.get("predictors") or []:
        own = statuses.get(predictor.get("name"), {})
        if predictor.get("maxReplicas") is not None:
            wanted += own.get("replicas", status.get("replicas", 0))
        else:
            wanted += predictor.get("replicas") or 1
        word = SCALE_WORDS.get(own.get("phase", ""))
        if word and word not in words:
            words.append(word)
    text = f"{status.get('availableReplicas', 0)}/{wanted}"
    return f"{text} {', '.join(words)}" if words else text


def predictor_replicas(spec: dict[str, Any], status: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) per predictor: `Replicas` alone for one predictor, else its name."""
    predictors = spec.get("predictors") or []
    statuses = {p.get("name"): p for p in status.get("predictors") or []}
    rows = []
    for predictor in predictors:
        own = statuses.get(predictor.get("name"))
        if own is None and len(predictors) == 1:
            own = status  # an engine without per-predictor status
        label = "Replicas" if len(predictors) == 1 else f"Replicas ({predictor.get('name')})"
        rows.append((label, replicas_text(predictor, own)))
    return rows


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
