"""The engine's state database: unreadable rows are quarantined, failed writes answer 507."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
from pathlib import Path

import psutil
import pytest

from .conftest import RequestLoop, spec, wait_until
from .serve_helpers import PAYLOAD, Serve, deployment_spec, replica_processes, wait_for


@pytest.fixture
def serve(tmp_path: Path):
    server = Serve(tmp_path / "data", tmp_path / "serve.log")
    server.start()
    yield server
    server.cleanup()


def test_unreadable_stored_deployments_are_quarantined_and_the_rest_served(serve: Serve, bundles):
    good = serve.ok("POST", "deployments", deployment_spec(bundles["v1"]))["id"]
    old = serve.ok("POST", "deployments", deployment_spec(bundles["v1"], displayName="Old"))["id"]
    serve.wait_phase(good, "Deployed")
    serve.wait_phase(old, "Deployed")
    serve.stop()

    # What an older version could write: a message longer than today's limit, and a damaged row.
    db = sqlite3.connect(serve.data_dir / "state.sqlite3")
    with db:
        row = db.execute("SELECT spec FROM deployments WHERE id = ?", (old,)).fetchone()
        stored = json.loads(row[0])
        stored["updateMessage"] = "x" * 1500
        db.execute("UPDATE deployments SET spec = ? WHERE id = ?", (json.dumps(stored), old))
        damaged = {"displayName": "Damaged", "groupName": "default", "predictors": "garbage"}
        db.execute(
            "INSERT INTO deployments (id, spec, history, creation_time, last_updated, version)"
            " VALUES ('damaged-x1', ?, 'not json', '2026-01-01T00:00:00.000Z',"
            " '2026-01-01T00:00:00.000Z', 3)",
            (json.dumps(damaged),),
        )
        db.execute(
            "INSERT INTO deployments (id, spec, history, creation_time, last_updated, version)"
            " VALUES ('garbage-x2', '{{{', '[]', 'x', 'y', 1)"
        )
    db.close()

    serve.start()
    invoke = f"deployments/{good}/invoke"
    wait_for(lambda: serve.call("POST", invoke, PAYLOAD).status_code == 200)
    listed = {d["id"]: d for d in serve.ok("GET", "deployments")["deployments"]}
    quarantined = serve.ok("GET", f"deployments/{old}")
    assert quarantined["status"]["phase"] == "Failed"
    message = quarantined["status"]["message"]
    assert "spec.updateMessage" in message and "1000 characters" in message
    assert quarantined["spec"]["displayName"] == "Old"
    assert replica_processes(old) == [], "nothing runs for a quarantined deployment"
    assert listed["damaged-x1"]["status"]["phase"] == "Failed"
    assert "predictors" in listed["damaged-x1"]["status"]["message"]
    # The healthy one keeps serving; the quarantined one cannot be changed, only deleted.
    assert serve.ok("GET", f"deployments/{good}")["status"]["phase"] == "Deployed"
    patched = serve.call("PATCH", f"deployments/{old}", {"spec": {"description": "fix"}})
    assert patched.status_code == 409 and "delete it" in patched.json()["message"]
    for deployment_id in (old, "damaged-x1"):
        assert serve.call("DELETE", f"deployments/{deployment_id}").status_code == 204
        assert serve.call("GET", f"deployments/{deployment_id}").status_code == 404
    assert serve.ok("GET", f"deployments/{good}")["status"]["phase"] == "Deployed"


def engine_of(jp_serverapp):
    return jp_serverapp.web_app.settings["primehub_app"].engine


async def pragma(engine, statement: str) -> None:
    """Run a PRAGMA on the engine's own SQLite connection (a real limit, a real failure)."""
    await engine.store._run(lambda: engine.store._db().execute(statement).fetchall())


async def test_full_or_read_only_state_answers_507_and_serving_continues(
    api, bundles, jp_serverapp
):
    body = {"spec": spec(bundles["v1"], replicas=2)}
    serving = (await api.ok("POST", "deployments", body))["id"]
    endpoint = (await api.wait_phase(serving, "Deployed"))["status"]["endpoint"]
    engine = engine_of(jp_serverapp)
    pages = (
        await engine.store._run(lambda: engine.store._db().execute("PRAGMA page_count").fetchone())
    )[0]

    with RequestLoop(endpoint, PAYLOAD, concurrency=2, max_requests=20000) as loop:
        # The database may not grow: it is full, for real.
        await pragma(engine, f"PRAGMA max_page_count = {pages}")
        big = {"spec": spec(bundles["v1"], description="d" * 3900, displayName="Big")}
        code, answer = await api.call("POST", "deployments", big)
        assert code == 507, answer
        assert "database or disk is full" in answer["message"]
        listed = await api.ok("GET", "deployments")
        assert [d["id"] for d in listed["deployments"]] == [serving], (
            "a failed create is not half-created"
        )

        # The reconciler keeps running: a killed replica comes back while writes fail.
        victim = replica_processes(serving)[0]
        os.kill(victim.pid, signal.SIGKILL)

        async def restarted() -> bool:
            d = await api.ok("GET", f"deployments/{serving}")
            return d["status"]["availableReplicas"] == 2 and any(
                r["restarts"] >= 1 for r in d["status"]["replicaStatuses"]
            )

        await wait_until(restarted, what="the killed replica to come back")

        async def nothing_left_of_the_victim() -> bool:
            # Its group (a sandbox under the killed launcher) must not live on as an orphan.
            def members() -> list[int]:
                found = []
                for proc in psutil.process_iter():
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        if os.getpgid(proc.pid) == victim.pid:
                            found.append(proc.pid)
                return found

            return not await asyncio.to_thread(members)

        await wait_until(nothing_left_of_the_victim, what="the killed replica's leftovers to end")

        # Read-only: every change is refused with the reason, nothing changes in memory.
        await pragma(engine, "PRAGMA query_only = 1")
        code, answer = await api.call(
            "PATCH", f"deployments/{serving}", {"spec": {"predictors": [{"replicas": 1}]}}
        )
        assert code == 507 and "readonly database" in answer["message"], answer
        code, answer = await api.call("DELETE", f"deployments/{serving}")
        assert code == 507, answer
        current = await api.ok("GET", f"deployments/{serving}")
        assert current["spec"]["predictors"][0]["replicas"] == 2
        assert current["status"]["phase"] == "Deployed"
        count = loop.count
        await wait_until(lambda: loop.count > count + 20, what="traffic while writes fail")

        # Once the condition clears, writes work again.
        await pragma(engine, "PRAGMA query_only = 0")
        await pragma(engine, "PRAGMA max_page_count = 1073741823")
        created = await api.ok("POST", "deployments", big)
        await api.wait_phase(created["id"], "Deployed")
    assert loop.errors == [], loop.errors[:5]
    assert loop.count > 20
    await api.ok("DELETE", f"deployments/{created['id']}")
