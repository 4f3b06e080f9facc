"""The change stream (server-sent events) and the metrics charts (Vega-Lite specs) routes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Any

from tornado.iostream import StreamClosedError

from ..core import charts
from ..core.errors import BadRequest
from ..core.feed import Event, Subscription, feed_of
from ..core.metrics import Chart, MetricsCharts
from .handlers import ID, PREFIX, PrimeHubHandler, api, default_handlers

HEARTBEAT_SECONDS = 15.0
RETRY_MS = 3000


def sse(event: Event) -> str:
    """One event in the text/event-stream format; the data is one line of JSON."""
    data = json.dumps({"type": event.kind, **event.data})
    return f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n"


class EventsHandler(PrimeHubHandler):
    """`GET events`: deployments of the user's groups created, changed or deleted, as they happen.

    Text/event-stream: a `ready` event once the stream watches, then `deployment` events
    `{"type", "action": created|changed|deleted, "id", "group", "phase"}` and `groups` events
    `{"type", "groups": [...]}`, and a comment line every `heartbeat` seconds (default 15).
    """

    _pump: asyncio.Task | None = None

    def _heartbeat(self) -> float:
        raw = self.get_argument("heartbeat", "", strip=False)
        if not raw:
            return HEARTBEAT_SECONDS
        if not re.fullmatch(r"[0-9]{1,2}", raw) or not 1 <= int(raw) <= 60:
            raise BadRequest("heartbeat must be a whole number of seconds from 1 to 60")
        return float(raw)

    @api
    async def get(self) -> None:
        heartbeat = self._heartbeat()
        service = await self.service()
        subscription = await feed_of(service).subscribe(self.user_name)
        subscription.on_drop = self._drop
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        self._pump = asyncio.ensure_future(self._send(subscription, heartbeat))
        try:
            await self._pump
        except (asyncio.CancelledError, StreamClosedError):
            pass
        finally:
            subscription.close()
        if not self._finished:
            with contextlib.suppress(StreamClosedError):
                self.finish()

    async def _send(self, subscription: Subscription, heartbeat: float) -> None:
        self.write(f"retry: {RETRY_MS}\nevent: ready\ndata: {json.dumps({'type': 'ready'})}\n\n")
        await self.flush()
        while not subscription.dropped:
            event = await subscription.next(heartbeat)
            self.write(": heartbeat\n\n" if event is None else sse(event))
            await self.flush()

    def _drop(self) -> None:
        # The client does not read fast enough: end its stream rather than buffer for it.
        if self._pump is not None:
            self._pump.cancel()
        with contextlib.suppress(Exception):
            self.request.connection.close()  # type: ignore[union-attr]

    def on_connection_close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        super().on_connection_close()


class MetricsChartsHandler(PrimeHubHandler):
    """`GET deployments/<id>/metrics/charts`: the metrics as Vega-Lite v5 specs, one per chart."""

    @api
    async def get(self, deployment_id: str) -> None:
        service = await self.service()
        window, step = self.window_and_step()
        report = await service.metrics(self.user_name, deployment_id, window, step)
        data = report.to_json()
        drawn = MetricsCharts(
            deployment_id=report.deployment_id,
            window=report.window,
            step=report.step,
            summary=charts.summary(data),
            totals=report.totals,
            charts=[Chart(id=s["usermeta"]["chartId"], spec=s) for s in charts.chart_specs(data)],
        )
        self.send(drawn.to_json())


event_handlers: list[tuple[str, type]] = [
    (rf"{PREFIX}/events", EventsHandler),
    (rf"{PREFIX}/deployments/{ID}/metrics/charts", MetricsChartsHandler),
]


def openapi_paths(error: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI entries of these routes; `error` is the Error response schema."""
    problems = {
        "400": {"description": "A malformed parameter.", **error},
        "404": {"description": "No such deployment visible to this user.", **error},
        "422": {"description": "window or step out of range.", **error},
    }
    return {
        "/events": {
            "get": {
                "summary": "Server-sent events: deployments of your groups created, changed or "
                "deleted, and group settings changed (docs/internals.md)",
                "parameters": [
                    {"name": "heartbeat", "in": "query", "schema": {"type": "integer"}},
                ],
                "responses": {
                    "200": {
                        "description": "A text/event-stream that stays open.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "400": problems["400"],
                },
            }
        },
        "/deployments/{id}/metrics/charts": {
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "get": {
                "summary": "The metrics as Vega-Lite v5 chart specs, one per chart",
                "parameters": [
                    {"name": "window", "in": "query", "schema": {"type": "number"}},
                    {"name": "step", "in": "query", "schema": {"type": "number"}},
                ],
                "responses": {
                    "200": {
                        "description": "The report drawn as Vega-Lite charts.",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/MetricsCharts"}
                            }
                        },
                    },
                    **problems,
                },
            },
        },
    }


default_handlers.extend(h for h in event_handlers if h not in default_handlers)
