"""Chaos on a real `serve` (bounded, seeded, loopback only): kill the server, gateway, replicas."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import psutil
import pytest
import requests

from primehub_jupyter.engines.local.adoption import ENGINE_ID_ENV, engine_id

from .conftest import RequestLoop
from .serve_helpers import (
    PAYLOAD,
    Serve,
    deployment_spec,
    gateway_process,
    replica_names,
    replica_processes,
    wait_for,
)

SEED = 9
ITERATIONS = 6


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("chaos")
    server = Serve(root / "data", root / "serve.log", "--LocalEngine.deploy_timeout=120")
    server.start()
    yield server
    server.cleanup()


def marked_deployments(data_dir: Path) -> list[str]:
    """The deployment of every live process carrying this data dir's engine mark."""
    mine = engine_id(data_dir)
    found = []
    for proc in psutil.process_iter(["status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            env = proc.environ()
        except psutil.Error:
            continue
        if env.get(ENGINE_ID_ENV) == mine:
            found.append(env.get("PRIMEHUB_DEPLOYMENT_ID", "?"))
    return found


def test_kill_of_serve_at_random_points_loses_nothing_and_orphans_nothing(serve: Serve, bundles):
    rng = random.Random(SEED)
    present: set[str] = set()  # deployments the server confirmed (201, or there after a restart)
    replicas_of: dict[str, int] = {}  # confirmed by a 200 of an update
    for iteration in range(ITERATIONS):
        operation = rng.choice(["create", "update", "delete"] if present else ["create"])
        target = rng.choice(sorted(present)) if operation != "create" else ""
        replicas = rng.choice([1, 2])
        answer: dict = {}

        def send(operation=operation, target=target, replicas=replicas, answer=answer) -> None:
            try:
                if operation == "create":
                    body = deployment_spec(bundles["v1"], replicas=replicas)
                    answer["r"] = serve.call("POST", "deployments", body)
                elif operation == "update":
                    patch = {"spec": {"predictors": [{"replicas": replicas}]}}
                    answer["r"] = serve.call("PATCH", f"deployments/{target}", patch)
                else:
                    answer["r"] = serve.call("DELETE", f"deployments/{target}")
            except requests.RequestException as error:
                answer["error"] = error

        sender = threading.Thread(target=send)
        sender.start()
        threading.Event().wait(rng.uniform(0, 0.08))  # the fault's timing, seeded
        serve.kill()
        sender.join(timeout=60)
        response = answer.get("r")
        code = response.status_code if response is not None else None
        if operation == "create" and code == 201:
            present.add(response.json()["id"])
            replicas_of[response.json()["id"]] = replicas
        elif operation == "update" and code == 200:
            replicas_of[target] = replicas
        elif operation == "delete" and code == 204:
            present.discard(target)
        elif operation == "delete" and code is None:
            present.discard(target)  # cut off: it may or may not have happened
        serve.start()

        listed = {d["id"]: d for d in serve.ok("GET", "deployments")["deployments"]}
        what = f"iteration {iteration} ({operation} {target}, answer {code})"
        assert present <= set(listed), f"{what}: a confirmed create was lost"
        if operation == "delete" and code == 204:
            assert target not in listed, f"{what}: a confirmed delete came back"
        unexpected = set(listed) - present
        assert not unexpected or (operation == "create" and code is None), what
        present = set(listed)  # a change the crash cut off may or may not have happened
        for deployment_id in present:
            d = serve.wait_phase(deployment_id, "Deployed", limit=120)
            wanted = d["spec"]["predictors"][0]["replicas"]
            if code is not None or deployment_id != target:
                assert wanted == replicas_of.get(deployment_id, wanted), what
            replicas_of[deployment_id] = wanted

            def rolled(i: str = deployment_id, w: int = wanted) -> bool:
                names = replica_names(i)
                reported = serve.ok("GET", f"deployments/{i}")["status"]["replicaStatuses"]
                return len(names) == w and names == sorted(r["name"] for r in reported)

            wait_for(rolled, what=f"{what}: one process per replica slot of {deployment_id}")
        orphans = [m for m in marked_deployments(serve.data_dir) if m not in present]
        assert orphans == [], f"{what}: orphan replicas of {orphans}"

    for deployment_id in sorted(present):
        serve.ok("DELETE", f"deployments/{deployment_id}")
        assert replica_processes(deployment_id) == []
    assert marked_deployments(serve.data_dir) == []


def test_replica_kills_under_load_fail_no_request(serve: Serve, bundles):
    body = deployment_spec(bundles["v1"], replicas=2)
    deployment_id = serve.ok("POST", "deployments", body)["id"]
    endpoint = serve.wait_phase(deployment_id, "Deployed")["status"]["endpoint"]
    with RequestLoop(endpoint, PAYLOAD, concurrency=4, max_requests=20000) as loop:
        for victim in replica_processes(deployment_id):
            cmdline = victim.cmdline()
            name = cmdline[cmdline.index("--replica") + 1]
            victim.kill()

            def back(name: str = name) -> bool:
                # It answers traffic again: its log has a prediction after its restart.
                logs = serve.session.get(
                    f"{serve.url}primehub/api/deployments/{deployment_id}/logs",
                    params={"replica": name, "tail": "200"},
                    timeout=30,
                ).text
                restarted = logs.rpartition("restarting replica")
                return bool(restarted[1]) and "POST /api/v1.0/predictions 200" in restarted[2]

            # The other replica is killed only once this one serves again.
            wait_for(back, what=f"{name} to come back")
    assert loop.errors == [], loop.errors[:5]
    serve.ok("DELETE", f"deployments/{deployment_id}")


def test_gateway_kill_under_load_recovers(serve: Serve, bundles):
    body = deployment_spec(bundles["v1"], replicas=2)
    deployment_id = serve.ok("POST", "deployments", body)["id"]
    endpoint = serve.wait_phase(deployment_id, "Deployed")["status"]["endpoint"]
    gateway = gateway_process(serve.data_dir)
    assert gateway is not None
    with RequestLoop(endpoint, PAYLOAD, concurrency=4, max_requests=20000) as loop:
        wait_for(lambda: loop.count > 50, what="traffic before the kill")
        gateway.kill()
        wait_for(lambda: loop.errors, what="requests to notice the gateway's absence")
        since = loop.count

        # The engine starts a new gateway on the same port and gives it the routes.
        def recovered() -> bool:
            return sum(1 for code in loop.statuses[since:] if code == 200) > 100

        wait_for(recovered, what="the new gateway to serve")
        failed, settled = len(loop.errors), loop.count
        wait_for(lambda: loop.count > settled + 200, what="traffic after the recovery")
    assert len(loop.errors) == failed, "no failure once the new gateway serves"
    # What the README promises: while no gateway runs, connections are refused (or, from a new
    # gateway before its first routing table, 503/404); never a wrong answer.
    causes = {e.split(":")[0] if e[:3].isdigit() else "connection" for e in loop.errors}
    assert causes <= {"connection", "503", "404"}, loop.errors[:5]
    new = gateway_process(serve.data_dir)
    assert new is not None and new.pid != gateway.pid
    serve.ok("DELETE", f"deployments/{deployment_id}")
