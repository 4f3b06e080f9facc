"""Crashes and restarts: a killed replica comes back, and no request fails meanwhile."""

from __future__ import annotations

import os
import signal

import psutil

from .conftest import RequestLoop, spec, wait_until

PAYLOAD = {"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}}


def replica_pid(name: str) -> int | None:
    """The model server of a replica (inside its sandbox: not the bwrap processes around it)."""
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "bwrap":
            continue
        if "primehub_jupyter.serving" in cmdline and name in cmdline:
            return proc.info["pid"]
    return None


async def test_killed_replica_restarts_without_failed_requests(api, bundles):
    body = {"spec": spec(bundles["v1"], replicas=2)}
    deployment_id = (await api.ok("POST", "deployments", body))["id"]
    deployed = await api.wait_phase(deployment_id, "Deployed")
    endpoint = deployed["status"]["endpoint"]
    victim = deployed["status"]["replicaStatuses"][0]["name"]
    pid = replica_pid(victim)
    assert pid is not None

    with RequestLoop(endpoint, PAYLOAD, concurrency=4, max_requests=4000) as loop:
        await wait_until(lambda: loop.count >= 10, what="the request loop to run")
        os.kill(pid, signal.SIGKILL)

        async def back() -> bool:
            d = await api.ok("GET", f"deployments/{deployment_id}")
            replica = next(r for r in d["status"]["replicaStatuses"] if r["name"] == victim)
            return replica["ready"] and replica["restarts"] >= 1

        await wait_until(back, what="the killed replica to come back")
        mark = loop.count
        await wait_until(lambda: loop.count > mark + 20, what="traffic after the restart")
    assert loop.count > 50
    assert loop.errors == [], loop.errors[:5]
    new_pid = replica_pid(victim)
    assert new_pid is not None and new_pid != pid
    deployment = await api.wait_phase(deployment_id, "Deployed")
    assert deployment["status"]["availableReplicas"] == 2
    logs = await api.ok("GET", f"deployments/{deployment_id}/logs", replica=victim)
    assert "killed by signal 9" in logs
    assert "restarting replica (restart 1)" in logs


async def test_model_that_fails_to_load_is_failed_with_the_loader_error(api, bundles):
    body = {"spec": spec(bundles["broken"])}
    deployment_id = (await api.ok("POST", "deployments", body))["id"]
    failed = await api.wait_phase(deployment_id, "Failed")
    message = failed["status"]["message"]
    assert "model failed to load" in message
    # The user sees the traceback in the replica's log too.
    logs = await api.ok("GET", f"deployments/{deployment_id}/logs")
    assert "Traceback" in logs or "failed to load" in logs
    # A fix through an update recovers it.
    await api.ok(
        "PATCH",
        f"deployments/{deployment_id}",
        {"spec": {"predictors": [{"modelURI": str(bundles["v1"])}]}},
    )
    await api.wait_phase(deployment_id, "Deployed")


async def test_failed_update_keeps_the_previous_version_serving(api, bundles):
    deployment_id = (await api.ok("POST", "deployments", {"spec": spec(bundles["v1"])}))["id"]
    endpoint = (await api.wait_phase(deployment_id, "Deployed"))["status"]["endpoint"]
    with RequestLoop(endpoint, PAYLOAD, concurrency=2, max_requests=2000) as loop:
        await api.ok(
            "PATCH",
            f"deployments/{deployment_id}",
            {"spec": {"predictors": [{"modelURI": str(bundles["broken"])}]}},
        )
        failed = await api.wait_phase(deployment_id, "Failed")
    assert "the previous version keeps serving" in failed["status"]["message"]
    assert loop.count > 10 and loop.errors == []
