"""Crashes of `primehub-deploy serve`: no orphan or duplicate replica, no request dropped."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .conftest import RequestLoop
from .serve_helpers import (
    PAYLOAD,
    Serve,
    deployment_spec,
    replica_names,
    replica_processes,
    wait_for,
)


@pytest.fixture
def serve(tmp_path: Path):
    server = Serve(tmp_path / "data", tmp_path / "serve.log")
    server.start()
    yield server
    server.cleanup()


@pytest.mark.parametrize("offset_ms", [0, 10, 20, 30, 60])
def test_kill_right_after_create_leaves_no_orphan(serve: Serve, bundles, offset_ms: int):
    created = serve.ok("POST", "deployments", deployment_spec(bundles["v1"], replicas=2))
    deployment_id = created["id"]
    time.sleep(offset_ms / 1000)  # the fault's timing, not a synchronisation
    serve.kill()
    serve.start()
    deployed = serve.wait_phase(deployment_id, "Deployed")
    names = [r["name"] for r in deployed["status"]["replicaStatuses"]]
    # Exactly one process per replica slot, and they are the ones the engine reports.
    assert replica_names(deployment_id) == sorted(names) and len(names) == 2
    assert serve.ok("POST", f"deployments/{deployment_id}/invoke", PAYLOAD)["data"]

    serve.ok("DELETE", f"deployments/{deployment_id}")
    assert replica_processes(deployment_id) == []
    assert serve.call("GET", f"deployments/{deployment_id}").status_code == 404


def test_delete_ends_a_replica_process_the_server_has_no_record_of(serve: Serve, bundles):
    deployment_id = serve.ok("POST", "deployments", deployment_spec(bundles["v1"]))["id"]
    serve.wait_phase(deployment_id, "Deployed")
    serve.kill()
    # As if the server had crashed between the spawn and the replica's record.
    import sqlite3

    with sqlite3.connect(serve.data_dir / "state.sqlite3") as db:
        db.execute("DELETE FROM replicas")
    serve.start()
    deployed = serve.wait_phase(deployment_id, "Deployed")
    assert [r["restarts"] for r in deployed["status"]["replicaStatuses"]] == [0]
    assert len(replica_processes(deployment_id)) == 1, "adopted by its mark, not duplicated"
    serve.ok("DELETE", f"deployments/{deployment_id}")
    assert replica_processes(deployment_id) == []


@pytest.mark.parametrize("how", ["crash", "clean"])
def test_restart_of_serve_drops_no_request(tmp_path: Path, bundles, how: str):
    extra = "--LocalEngine.stop_replicas_on_exit=False"
    serve = Serve(tmp_path / "data", tmp_path / "serve.log", extra)
    serve.start()
    try:
        body = deployment_spec(bundles["v1"], replicas=2)
        deployment_id = serve.ok("POST", "deployments", body)["id"]
        endpoint = serve.wait_phase(deployment_id, "Deployed")["status"]["endpoint"]
        with RequestLoop(endpoint, PAYLOAD, concurrency=4, max_requests=20000) as loop:
            wait_for(lambda: loop.count > 50, what="traffic before the restart")
            serve.kill() if how == "crash" else serve.stop()
            before = loop.count
            serve.start()
            restarted = loop.count
            wait_for(lambda: loop.count > restarted + 300, what="traffic after the restart")
        assert loop.count > before, "requests kept flowing while the server was down"
        assert loop.errors == [], loop.errors[:5]
        deployed = serve.wait_phase(deployment_id, "Deployed")
        assert [r["restarts"] for r in deployed["status"]["replicaStatuses"]] == [0, 0]
        assert len(replica_processes(deployment_id)) == 2
    finally:
        serve.extra = []
        serve.cleanup()


def test_clean_stop_drains_through_the_gateway_before_replicas_stop(serve: Serve, bundles):
    deployment_id = serve.ok("POST", "deployments", deployment_spec(bundles["v1"], replicas=2))[
        "id"
    ]
    endpoint = serve.wait_phase(deployment_id, "Deployed")["status"]["endpoint"]
    with RequestLoop(endpoint, PAYLOAD, concurrency=4, max_requests=20000) as loop:
        wait_for(lambda: loop.count > 50, what="traffic before the stop")
        serve.stop()
        stopped = loop.count + len(loop.errors)
        wait_for(lambda: len(loop.errors) > 0, what="the endpoint to go away")
    # Once the server stopped nothing serves: every failure is a refused connection, never a
    # 502 from a gateway whose replicas went first.
    assert not any(e.startswith("502") for e in loop.errors), loop.errors[:5]
    assert stopped > 50
    assert replica_processes(deployment_id) == []
