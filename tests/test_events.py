"""The change stream GET /primehub/api/events over real HTTP, and its shared change feed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest

from primehub_jupyter.core.charts import CHART_IDS
from primehub_jupyter.core.feed import feed_of

from .conftest import OWNER, spec, wait_until


class Stream:
    """A raw HTTP/1.0 text/event-stream reader on a loopback socket (no client library)."""

    def __init__(self, port: int, base_url: str, user: str | None, query: str = "") -> None:
        self.port, self.base_url, self.user, self.query = port, base_url, user, query
        self.status = 0
        self.headers: dict[str, str] = {}
        self.events: list[dict[str, Any]] = []
        self.comments: list[str] = []
        self.body = b""
        self._task: asyncio.Task | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> Stream:
        reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        auth = f"Authorization: token {self.user}\r\n" if self.user else ""
        path = f"{self.base_url.rstrip('/')}/primehub/api/events{self.query}"
        self._writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode())
        await self._writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                self.headers[name.strip().lower()] = value.strip()
        if self.status != 200:
            self.body = await reader.read()
            return self
        self._task = asyncio.ensure_future(self._read(reader))
        return self

    async def _read(self, reader: asyncio.StreamReader) -> None:
        fields: dict[str, str] = {}
        while line := await reader.readline():
            text = line.decode().rstrip("\n")
            if text.startswith(":"):
                self.comments.append(text)
            elif text == "":
                if "data" in fields:
                    self.events.append({"event": fields.get("event"), **json.loads(fields["data"])})
                fields = {}
            else:
                name, _, value = text.partition(":")
                fields[name] = value.removeprefix(" ")

    def of(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["type"] == kind and all(e.get(k) == v for k, v in match.items())
        ]

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


@pytest.fixture
def stream(jp_http_port: int, jp_base_url: str, jp_fetch: Any):
    # jp_fetch: the fixture that makes the test server listen.
    opened: list[Stream] = []

    async def connect(user: str | None, query: str = "") -> Stream:
        s = await Stream(jp_http_port, jp_base_url, user, query).open()
        opened.append(s)
        return s

    yield connect
    for s in opened:
        if s._writer is not None:
            s._writer.close()
        if s._task is not None:
            s._task.cancel()


async def test_a_create_elsewhere_reaches_the_groups_members_and_nobody_else(api, stream, bundles):
    bob = await stream("bob")  # member of "default"
    carol = await stream("carol")  # member of "team-c" only
    assert bob.status == 200 and bob.headers["content-type"].startswith("text/event-stream")
    await wait_until(lambda: bob.of("ready") and carol.of("ready"), 30, "both streams ready")

    # Another client (alice, over the REST API) creates a deployment in "default".
    created = await api.ok("POST", "deployments", {"spec": spec(bundles["v1"])})
    deployment_id = created["id"]
    await wait_until(
        lambda: bob.of("deployment", id=deployment_id, action="created"), 15, "created event"
    )
    (event,) = bob.of("deployment", id=deployment_id, action="created")
    assert event["group"] == "default" and event["event"] == "deployment"
    await api.ok("DELETE", f"deployments/{deployment_id}")
    await wait_until(
        lambda: bob.of("deployment", id=deployment_id, action="deleted"), 30, "deleted event"
    )

    # An admin changes carol's group: carol hears of that, after everything before it.
    await api.ok("PATCH", "groups/team-c", {"enabledDeployment": False})
    await wait_until(lambda: carol.of("groups"), 15, "groups event for carol")
    assert carol.of("groups")[0]["groups"] == ["team-c"]
    assert carol.of("deployment") == [], carol.events
    assert all(deployment_id not in json.dumps(e) for e in carol.events)
    # ...and bob, not a member of team-c, hears nothing of it (only of his own group's change).
    await api.ok("PATCH", "groups/default", {"enabledDeployment": False})
    await wait_until(lambda: bob.of("groups"), 15, "groups event for bob")
    assert [e["groups"] for e in bob.of("groups")] == [["default"]]


async def test_heartbeats_keep_an_idle_stream_alive_and_bad_parameters_are_400(stream):
    quiet = await stream("bob", "?heartbeat=1")
    await wait_until(lambda: len(quiet.comments) >= 2, 15, "two heartbeats")
    assert quiet.comments[0] == ": heartbeat"
    for query in ("?heartbeat=0", "?heartbeat=abc", "?heartbeat=5%0A"):
        bad = await stream("bob", query)
        assert bad.status == 400, query
        assert "heartbeat" in json.loads(bad.body)["message"]
    anonymous = await stream(None)
    assert anonymous.status == 403


async def test_one_shared_poll_that_stops_without_subscribers(stream, jp_serverapp):
    first = await stream("bob")
    second = await stream(OWNER)
    await wait_until(lambda: first.of("ready") and second.of("ready"), 30, "ready")
    service = jp_serverapp.web_app.settings["primehub_app"].service
    feed = feed_of(service)
    assert len(feed.subscribers) == 2
    before = feed.polls
    await wait_until(lambda: feed.polls >= before + 2, 10, "polls while subscribed")
    await first.close()
    await second.close()
    await wait_until(lambda: not feed.subscribers, 10, "subscribers gone")
    await wait_until(lambda: feed._task is not None and feed._task.done(), 10, "poll ended")
    stopped = feed.polls
    quiet = await stream("bob", "?heartbeat=1")
    await wait_until(lambda: len(quiet.comments) >= 1, 15, "a heartbeat")
    # The new subscriber restarted the poll: it runs again, once for everybody.
    assert feed.polls > stopped


async def test_a_subscriber_that_does_not_keep_up_is_dropped_not_buffered(api, jp_serverapp):
    await api.ok("GET", "me")  # starts the service
    service = jp_serverapp.web_app.settings["primehub_app"].service
    feed = feed_of(service)
    feed.queue_size = 2
    try:
        slow = await feed.subscribe(OWNER)
        dropped: list[bool] = []
        slow.on_drop = lambda: dropped.append(True)
        for count, enabled in enumerate((False, True, False), start=1):
            await api.ok("PATCH", "groups/team-c", {"enabledDeployment": enabled})
            await wait_until(
                lambda n=count: slow.dropped or slow.queue.qsize() >= n, 15, f"event {count}"
            )
        await wait_until(lambda: slow.dropped, 15, "dropped")
        assert dropped == [True] and slow not in feed.subscribers
        assert slow.queue.qsize() <= 2
    finally:
        feed.queue_size = 256
        await feed.close()


async def test_metrics_charts_route_answers_specs_and_readable_errors(api, bundles):
    created = await api.ok("POST", "deployments", {"spec": spec(bundles["v1"])})
    deployment_id = created["id"]
    try:
        answer = await api.ok("GET", f"deployments/{deployment_id}/metrics/charts", window="300")
        assert [c["id"] for c in answer["charts"]] == list(CHART_IDS)
        assert answer["summary"].startswith(f"{deployment_id}, last 300 s:")
        assert all(c["spec"]["$schema"].endswith("vega-lite/v5.json") for c in answer["charts"])
        code, body = await api.call("GET", f"deployments/{deployment_id}/metrics/charts",
                                    window="soon")  # fmt: skip
        assert code == 400 and "window and step" in body["message"]
        code, body = await api.call("GET", f"deployments/{deployment_id}/metrics/charts",
                                    window="5")  # fmt: skip
        assert code == 422 and "window" in body["message"]
        # Another group's deployment does not exist for carol; an unknown user gets nothing.
        code, body = await api.as_user("carol").call(
            "GET", f"deployments/{deployment_id}/metrics/charts"
        )
        assert code == 404 and "not found" in body["message"]
        code, _ = await api.as_user("intruder").call(
            "GET", f"deployments/{deployment_id}/metrics/charts"
        )
        assert code in (401, 403)
    finally:
        await api.ok("DELETE", f"deployments/{deployment_id}")
