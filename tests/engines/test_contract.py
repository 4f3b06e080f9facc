"""The engine contract: the same behaviours on the local, Kubernetes and in-memory engines."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from primehub_jupyter.core.errors import Conflict, NotFound
from primehub_jupyter.core.models import (
    MAX_HISTORY,
    ClientRef,
    DeploymentRecord,
    DeploymentSpec,
    DeploymentStatus,
    HistoryEntry,
    Phase,
    utcnow,
)
from primehub_jupyter.core.security import hash_token
from primehub_jupyter.core.service import DeploymentService
from tests.serve_helpers import wait_for

from .targets import ENGINES, TARGETS, Target, groups_file

USER = "alice"
PAYLOAD = {"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}}
TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")
SERIES = {
    "requestsPerSecond",
    "predictRequestsPerSecond",
    "successRate",
    "clientErrorsPerSecond",
    "serverErrorsPerSecond",
    "latencyP50",
    "latencyP90",
    "latencyP99",
    "reward",
}
REPLICA_SERIES = {"requestsPerSecond", "latencyP99", "cpu", "memory"}
TOTALS = {"requests", "predictRequests", "clientErrors", "serverErrors", "feedback", "reward"}


@pytest.fixture(scope="module", params=ENGINES)
def target(request, tmp_path_factory, bundles) -> Iterator[Target]:
    """One started engine per module and engine kind; tests use their own deployment ids."""
    root: Path = tmp_path_factory.mktemp(f"contract-{request.param}")
    made = TARGETS[request.param](root, groups_file(root / "config"), bundles["v1"])
    try:
        yield made.start()
    finally:
        made.close()


@dataclass
class Running:
    """A one-replica deployment: the engine's answer to its create, and it once deployed."""

    created: DeploymentRecord
    deployed: DeploymentRecord


@pytest.fixture(scope="module")
def running(target: Target) -> Running:
    """Shared by the tests that only read (and invoke) a deployed deployment."""
    created = target.run(target.engine.create, new(target, "contract-running"))
    return Running(created, target.wait_phase("contract-running", "Deployed"))


# ---- building deployments as the service does -------------------------------------------


def new(target: Target, deployment_id: str, *, stop: bool = False, **top: Any) -> DeploymentRecord:
    """A deployment as DeploymentService.create hands it to an engine (revision 1)."""
    spec = DeploymentSpec.model_validate(
        {
            "displayName": deployment_id,
            "groupName": "default",
            "userName": USER,
            "stop": stop,
            **top,
            "predictors": [{"instanceType": "cpu-0.5", "replicas": 1, **target.model()}],
        }
    )
    now = utcnow()
    entry = HistoryEntry(revision=1, time=now, user=USER, spec=spec)
    status = DeploymentStatus(
        phase=Phase.STOPPED if stop else Phase.DEPLOYING,
        creation_time=now,
        last_updated=now,
        history=[entry],
    )
    return DeploymentRecord(id=deployment_id, spec=spec, status=status)


def changed(current: DeploymentRecord, message: str = "", **spec: Any) -> DeploymentRecord:
    """`current` with spec fields changed and a new history entry, as DeploymentService._apply."""
    new_spec = current.spec.model_copy(update={**spec, "update_message": message})
    revision = current.status.history[0].revision + 1
    entry = HistoryEntry(
        revision=revision, time=utcnow(), user=USER, update_message=message, spec=new_spec
    )
    history = [entry, *current.status.history][:MAX_HISTORY]
    status = current.status.model_copy(update={"history": history})
    return current.model_copy(update={"spec": new_spec, "status": status})


def with_clients(current: DeploymentRecord, names: list[str], **spec: Any) -> DeploymentRecord:
    endpoint = current.spec.endpoint.model_copy(
        update={"access_type": "private", "clients": [ClientRef(name=n) for n in names]}
    )
    return changed(current, f"clients {names}", endpoint=endpoint, **spec)


def report_json(report: Any) -> dict[str, Any]:
    """The metrics report as JSON, whether an engine returns a dict or a MetricsReport model."""
    if hasattr(report, "model_dump"):
        return report.model_dump(mode="json", by_alias=True)
    return json.loads(json.dumps(report))


def invoke(target: Target, deployment_id: str) -> dict[str, Any]:
    body = json.dumps(PAYLOAD).encode()
    headers = {"Content-Type": "application/json"}
    result = target.run(
        target.engine.invoke, deployment_id, "api/v1.0/predictions", body, headers, USER
    )
    assert result.status == 200, result.body
    return json.loads(result.body)


# ---- create, get, list -----------------------------------------------------------------


def test_create_get_list_and_conflict_on_a_taken_id(target: Target):
    engine = target.engine
    wanted = new(target, "contract-create", stop=True, description="first")
    created = target.run(engine.create, wanted)
    assert created.id == "contract-create"
    assert created.spec == wanted.spec
    assert created.status.phase == Phase.STOPPED
    assert [h.revision for h in created.status.history] == [1]
    assert created.resource_version not in ("", "0")

    got = target.get("contract-create")
    assert got.spec == wanted.spec and got.resource_version == created.resource_version
    assert got.status.creation_time and got.status.last_updated
    listed = {d.id: d for d in target.run(engine.list_deployments)}
    assert listed["contract-create"].spec == wanted.spec

    with pytest.raises(Conflict, match="contract-create"):
        target.run(engine.create, new(target, "contract-create", description="second"))
    assert target.get("contract-create").spec.description == "first"


def test_a_running_deployment_starts_deploying(running: Running):
    assert running.created.status.phase == Phase.DEPLOYING
    deployed = running.deployed
    assert deployed.status.available_replicas == 1 and deployed.status.replicas == 1
    assert deployed.status.endpoint and deployed.status.endpoint.endswith(
        "/deployment/contract-running/api/v1.0/predictions"
    )
    assert deployed.resource_version == running.created.resource_version


def test_absent_deployments_are_not_found(target: Target):
    engine = target.engine
    for call, arg in (
        (engine.get, "contract-absent"),
        (engine.delete, "contract-absent"),
        (engine.replace, new(target, "contract-absent")),
        (engine.replica_names, "contract-absent"),
        (engine.logs, "contract-absent"),
    ):
        extra = (None, 10) if call == engine.logs else ()
        with pytest.raises(NotFound, match="contract-absent"):
            target.run(call, arg, *extra)
    assert "contract-absent" not in {d.id for d in target.run(engine.list_deployments)}


# ---- replace ---------------------------------------------------------------------------


def test_replace_with_a_stale_resource_version_conflicts(target: Target):
    engine = target.engine
    target.run(engine.create, new(target, "contract-replace", stop=True))
    read = target.wait_phase("contract-replace", "Stopped")
    assert read.resource_version == target.get("contract-replace").resource_version

    updated = target.run(engine.replace, changed(read, "second", description="second"))
    assert updated.resource_version != read.resource_version
    assert updated.spec.description == "second"
    assert [(h.revision, h.update_message) for h in updated.status.history] == [
        (2, "second"),
        (1, ""),
    ]
    # A writer that read before that change must not overwrite it.
    with pytest.raises(Conflict, match="stale"):
        target.run(engine.replace, changed(read, "lost", description="lost"))
    stored = target.get("contract-replace")
    assert stored.spec.description == "second"
    assert stored.resource_version == updated.resource_version
    assert [h.revision for h in stored.status.history] == [2, 1]


def test_history_is_capped_newest_first(target: Target):
    service = DeploymentService(target.engine, target.config_store, bcrypt_rounds=4)
    body = {"id": "contract-history", "spec": new(target, "x", stop=True).spec.to_json()}
    body["spec"]["displayName"] = "contract-history"
    target.run(service.create, USER, body)
    changes = MAX_HISTORY + 8
    for n in range(changes):
        patch = {"spec": {"description": f"change {n}", "updateMessage": f"m{n}"}}
        target.run(service.update, USER, "contract-history", patch)
    history = target.get("contract-history").status.history
    assert len(history) == MAX_HISTORY
    assert [h.revision for h in history] == list(range(changes + 1, changes + 1 - MAX_HISTORY, -1))
    assert history[0].spec.description == f"change {changes - 1}"
    assert history[0].update_message == f"m{changes - 1}"


# ---- stop, start, delete ---------------------------------------------------------------


def test_stop_start_and_delete(target: Target):
    engine = target.engine
    target.run(engine.create, new(target, "contract-stop"))
    deployed = target.wait_phase("contract-stop", "Deployed")

    stopping = target.run(engine.replace, changed(deployed, "stopped", stop=True))
    assert stopping.status.phase in (Phase.STOPPING, Phase.STOPPED)
    stopped = target.wait_phase("contract-stop", "Stopped")
    assert stopped.status.replicas == 0 and stopped.status.available_replicas == 0
    wait_for(lambda: target.running("contract-stop") == [], what="the replicas to go")

    target.run(engine.replace, changed(stopped, "started", stop=False))
    started = target.wait_phase("contract-stop", "Deployed")
    assert started.status.available_replicas == 1
    assert target.running("contract-stop") != []
    history = started.status.history
    assert [(h.revision, h.spec.stop) for h in history] == [(3, False), (2, True), (1, False)]

    # Delete: gone from get and list, and nothing of it is left running or stored.
    target.run(engine.delete, "contract-stop")
    with pytest.raises(NotFound):
        target.get("contract-stop")
    assert "contract-stop" not in {d.id for d in target.run(engine.list_deployments)}
    assert target.remnants("contract-stop") == []
    with pytest.raises(NotFound):
        target.run(engine.delete, "contract-stop")


# ---- clients ---------------------------------------------------------------------------


def test_client_secrets_are_added_replaced_and_dropped(target: Target):
    engine = target.engine
    target.run(engine.create, new(target, "contract-clients", stop=True))
    tokens = {name: f"token-of-{name}" for name in ("billing", "billing-2", "ops")}
    hashes = {name: hash_token(token, 4) for name, token in tokens.items()}

    def accepts(name: str, token: str) -> bool:
        stored = target.client_hashes("contract-clients").get(name)
        return stored is not None and bcrypt.checkpw(token.encode(), stored)

    current = target.get("contract-clients")
    target.run(
        engine.replace,
        with_clients(current, ["billing"]),
        client_secret=("billing", hashes["billing"]),
    )
    assert set(target.client_hashes("contract-clients")) == {"billing"}
    assert accepts("billing", tokens["billing"])

    # Adding a name that exists replaces its token: the old one stops working.
    current = target.get("contract-clients")
    target.run(
        engine.replace,
        with_clients(current, ["billing"]),
        client_secret=("billing", hashes["billing-2"]),
    )
    assert accepts("billing", tokens["billing-2"]) and not accepts("billing", tokens["billing"])

    current = target.get("contract-clients")
    target.run(
        engine.replace,
        with_clients(current, ["billing", "ops"]),
        client_secret=("ops", hashes["ops"]),
    )
    assert set(target.client_hashes("contract-clients")) == {"billing", "ops"}
    assert accepts("ops", tokens["ops"]) and accepts("billing", tokens["billing-2"])

    # A spec that no longer names a client drops its hash.
    current = target.get("contract-clients")
    kept = target.run(engine.replace, with_clients(current, ["ops"]))
    assert [c.name for c in kept.spec.endpoint.clients] == ["ops"]
    assert set(target.client_hashes("contract-clients")) == {"ops"}
    assert accepts("ops", tokens["ops"])


# ---- logs and metrics ------------------------------------------------------------------


def test_logs_names_tail_follow_and_download(target: Target, running: Running):
    engine = target.engine
    deployment_id = running.deployed.id
    names = target.run(engine.replica_names, deployment_id)
    current = [r.name for r in target.get(deployment_id).status.replica_statuses]
    assert names and set(current) <= set(names)

    invoke(target, deployment_id)
    lines = wait_for(
        lambda: [
            line
            for line in target.run(engine.logs, deployment_id, names[0], None)
            if "/api/v1.0/predictions" in line
        ],
        what="the request in the replica's log",
    )
    assert lines
    full = target.run(engine.logs, deployment_id, names[0], None)
    assert all(TIMESTAMPED.match(line) for line in full), full[:5]
    last_two = target.run(engine.logs, deployment_id, names[0], 2)
    assert len(last_two) == 2
    later = target.run(engine.logs, deployment_id, names[0], None)
    assert any(later[i : i + 2] == last_two for i in range(len(later) - 1))
    assert target.run(engine.logs, deployment_id, names[0], 0) == []
    merged = target.run(engine.logs, deployment_id, None, None)
    assert any("/api/v1.0/predictions" in line for line in merged)

    # Following sees a request made after it started.
    async def first_request_line() -> str:
        lines = engine.follow_logs(deployment_id, names[0])
        try:
            async for line in lines:
                if "/api/v1.0/predictions" in line:
                    return line
        finally:
            await lines.aclose()  # type: ignore[attr-defined]
        raise AssertionError("the followed log ended")

    followed = target.submit(asyncio.wait_for(first_request_line(), 60))
    try:

        def seen() -> bool:
            if not followed.done():
                invoke(target, deployment_id)
            return followed.done()

        wait_for(seen, what="the followed log to show a request made while following")
        assert "/api/v1.0/predictions" in followed.result()
    finally:
        followed.cancel()

    async def download() -> bytes:
        return b"".join([chunk async for chunk in engine.download_logs(deployment_id, names[0])])

    text = target.run(download).decode()
    assert "/api/v1.0/predictions" in text


def test_metrics_have_the_documented_shape(target: Target, running: Running):
    engine = target.engine
    deployment_id = running.deployed.id
    # The Kubernetes engine without Prometheus keeps history from the first look on: look
    # first, then send requests until they are counted.
    check_metrics_shape(
        report_json(target.run(engine.metrics, deployment_id, 60.0, 5.0)), deployment_id, 60, 5
    )

    def counted() -> dict[str, Any] | None:
        invoke(target, deployment_id)
        report = report_json(target.run(engine.metrics, deployment_id, 60.0, 5.0))
        return report if report["totals"]["predictRequests"] >= 3 else None

    report = wait_for(counted, what="the requests in the metrics totals")
    check_metrics_shape(report, deployment_id, window=60.0, step=5.0)
    assert report["totals"]["requests"] >= report["totals"]["predictRequests"]
    rates = [v for v in report["series"]["predictRequestsPerSecond"] if v is not None]
    assert sum(rates) > 0


def check_metrics_shape(
    report: dict[str, Any], deployment_id: str, window: float, step: float
) -> None:
    """docs/internals.md ("Metrics"): one document shape for every engine."""
    assert set(report) == {
        "deploymentId",
        "window",
        "step",
        "timestamps",
        "series",
        "replicas",
        "totals",
    }
    assert report["deploymentId"] == deployment_id
    used = report["step"]
    assert used >= step
    times = report["timestamps"]
    assert times and report["window"] == pytest.approx(len(times) * used)
    assert report["window"] <= window + used
    assert all(
        math.isclose(t % used, 0, abs_tol=1e-6) or math.isclose(t % used, used) for t in times
    )
    assert all(b - a == pytest.approx(used) for a, b in itertools.pairwise(times))
    assert times[-1] <= time.time() < times[-1] + used + 60
    assert set(report["series"]) == SERIES
    for name, values in report["series"].items():
        assert len(values) == len(times), name
        assert all(v is None or (isinstance(v, int | float) and v >= 0) for v in values), name
    for replica, columns in report["replicas"].items():
        assert set(columns) == REPLICA_SERIES, replica
        assert all(len(values) == len(times) for values in columns.values()), replica
    assert set(report["totals"]) == TOTALS
    for name in TOTALS - {"reward"}:
        assert isinstance(report["totals"][name], int) and report["totals"][name] >= 0, name
