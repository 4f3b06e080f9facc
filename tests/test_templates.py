"""Replica templates: replicas forked from one warm, sandboxed process keep every guarantee."""

from __future__ import annotations

import itertools
import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from primehub_jupyter.engines.local import adoption
from primehub_jupyter.engines.local.files import replica_dir
from primehub_jupyter.engines.local.logs import LOG_NAME

from .conftest import RequestLoop, spec, wait_until
from .serve_helpers import PAYLOAD, Serve, deployment_spec, processes_of_data_dir, wait_for

# The sandbox test of test_sandbox.py, run again with replicas forked from a template: the
# model's code runs in a forked replica and must see no more than a spawned one.
from .test_sandbox import (  # noqa: F401  (fixtures and a test collected here too)
    layout,
    spy_bundle,
    test_model_code_sees_no_secret_of_the_server,
)


@pytest.fixture
def engine_config() -> dict[str, Any]:
    return {
        "drain_seconds": 0.2,
        "stop_grace_seconds": 5.0,
        "restart_backoff_max": 1.0,
        "sandbox": "bwrap",
        "replica_templates": "on",
    }


@pytest.fixture
def jp_server_config(tmp_path: Path, groups_file: Path, engine_config: dict) -> dict:
    return {
        "ServerApp": {
            "jpserver_extensions": {"primehub_jupyter": True},
            "identity_provider_class": "tests.users.NamedTokenIdentityProvider",
        },
        "NamedTokenIdentityProvider": {"users": ["alice", "bob"]},
        "PrimeHubApp": {
            "data_dir": str(tmp_path / "primehub-data"),
            "groups_file": str(groups_file),
            "bcrypt_rounds": 4,
        },
        "LocalEngine": engine_config,
    }


@pytest.fixture(autouse=True)
def forked_for_the_spy(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> Any:
    """The spy test passes only if its replicas really were forked (no silent fallback)."""
    yield
    if request.node.name != "test_model_code_sees_no_secret_of_the_server":
        return
    messages = [r.getMessage() for r in caplog.get_records("call")]
    assert not [m for m in messages if "replica template" in m and "failed" in m], messages
    assert len([m for m in messages if m.startswith("replica template")]) == 2, messages


def templates_of(deployment_id: str) -> list[psutil.Process]:
    """The template processes (the Python inside any sandbox) of a deployment."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status", "name"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE or "bwrap" in (proc.info["name"] or ""):
            continue
        if "primehub_jupyter.serving.template" not in cmdline:
            continue
        with_next = itertools.pairwise(cmdline)
        if not any(a == "--deployment" and b == deployment_id for a, b in with_next):
            continue
        parent = proc.parent()
        if (
            parent is not None
            and parent.name() != "bwrap"
            and ("primehub_jupyter.serving.template" in parent.cmdline())
        ):
            continue  # a replica it forked (same command line)
        found.append(proc)
    return found


def replica_log(data_dir: Path, deployment_id: str, name: str) -> str:
    return (replica_dir(data_dir, deployment_id, name) / LOG_NAME).read_text()


def marked_replicas(data_dir: Path, deployment_id: str) -> dict[str, adoption.MarkedProcess]:
    """The replicas the engine's own scan finds (by the marks a forked replica writes)."""
    engine = adoption.engine_id(data_dir)
    return {m.replica: m for m in adoption.scan(engine, deployment_id)}


def predict(endpoint: str) -> requests.Response:
    return requests.post(endpoint, json=PAYLOAD, timeout=30)


async def test_replicas_fork_from_one_template_and_a_crash_stays_in_its_replica(
    api, bundles, jp_server_config
):
    data_dir = Path(jp_server_config["PrimeHubApp"]["data_dir"])
    created = await api.ok("POST", "deployments", {"spec": spec(bundles["v1"], replicas=2)})
    deployment_id = created["id"]
    deployed = await api.wait_phase(deployment_id, "Deployed")
    endpoint = deployed["status"]["endpoint"]
    assert predict(endpoint).status_code == 200

    [template] = templates_of(deployment_id)
    marked = marked_replicas(data_dir, deployment_id)
    names = sorted(r["name"] for r in deployed["status"]["replicaStatuses"])
    assert sorted(marked) == names  # found by the engine's scan, each under its own name
    for name, process in marked.items():
        replica = psutil.Process(process.pid)
        assert replica.ppid() == template.pid  # forked, not spawned
        assert os.getpgid(process.pid) == process.pid  # its own group, which the engine signals
        assert process.port and requests.get(  # the port in its mark is the one it serves
            f"http://127.0.0.1:{process.port}/health/ping", timeout=10
        ).status_code in (200, 403)
        text = replica_log(data_dir, deployment_id, name)
        assert "forked from template" in text and "serving" in text  # its own log

    # A replica that crashes (a fault in native code) takes neither the template nor the other
    # replica down; the engine restarts it, forked again from the same template.
    crashed, survivor = sorted(marked)
    os.kill(marked[crashed].pid, signal.SIGSEGV)
    await wait_until(
        lambda: (
            not psutil.pid_exists(marked[crashed].pid)
            or psutil.Process(marked[crashed].pid).status() == psutil.STATUS_ZOMBIE
        ),
        what="the replica to die",
    )
    assert template.is_running()
    assert psutil.Process(marked[survivor].pid).is_running()
    assert predict(endpoint).status_code == 200

    async def restarted() -> bool:
        d = await api.ok("GET", f"deployments/{deployment_id}")
        status = {r["name"]: r for r in d["status"]["replicaStatuses"]}
        return d["status"]["phase"] == "Deployed" and status[crashed]["restarts"] == 1

    await wait_until(restarted, what="the crashed replica to be back")
    again = marked_replicas(data_dir, deployment_id)
    assert again[crashed].pid != marked[crashed].pid
    assert psutil.Process(again[crashed].pid).ppid() == template.pid
    assert again[survivor].pid == marked[survivor].pid
    logs = replica_log(data_dir, deployment_id, crashed)
    assert f"killed by signal {signal.SIGSEGV}" in logs  # the template reported its exit code
    for _ in range(5):
        assert predict(endpoint).status_code == 200

    # Deleting the deployment ends the replicas and the template.
    await api.ok("DELETE", f"deployments/{deployment_id}")
    await wait_until(lambda: not template.is_running() or template.status() == "zombie")
    assert marked_replicas(data_dir, deployment_id) == {}


async def test_a_rollout_to_a_new_template_drops_no_request(api, bundles):
    created = await api.ok("POST", "deployments", {"spec": spec(bundles["v1"], replicas=2)})
    deployment_id = created["id"]
    deployed = await api.wait_phase(deployment_id, "Deployed")
    endpoint = deployed["status"]["endpoint"]
    [old] = templates_of(deployment_id)
    with RequestLoop(endpoint, PAYLOAD, concurrency=2, max_requests=4000) as loop:
        await wait_until(lambda: loop.count >= 10, what="the request loop to run")
        await api.ok(
            "PATCH",
            f"deployments/{deployment_id}",
            {
                "spec": {"predictors": [{"modelURI": str(bundles["v2"])}]},
                "resourceVersion": deployed["resourceVersion"],
            },
        )
        await api.wait_phase(deployment_id, "Deployed")
        # The old template ends once its replicas have drained, not before.
        await wait_until(lambda: not old.is_running() or old.status() == "zombie")
        mark = loop.count
        await wait_until(lambda: loop.count > mark + 10, what="traffic after the rollout")
    assert loop.errors == [], loop.errors[:5]
    [new] = templates_of(deployment_id)
    assert new.pid != old.pid


async def test_a_template_that_cannot_load_leaves_replicas_to_report_it(api, bundles):
    created = await api.ok("POST", "deployments", {"spec": spec(bundles["broken"])})
    failed = await api.wait_phase(created["id"], "Failed")
    assert "model failed to load" in failed["status"]["message"]
    assert templates_of(created["id"]) == []  # not left running


@pytest.mark.parametrize("engine_config", [{"sandbox": "bwrap", "replica_templates": "auto"}])
async def test_autoscaled_predictors_use_templates_by_default(api, bundles):
    fixed = await api.ok("POST", "deployments", {"spec": spec(bundles["v1"])})
    scaled = await api.ok(
        "POST",
        "deployments",
        {"spec": spec(bundles["v1"], replicas=None, minReplicas=1, maxReplicas=2)},
    )
    await api.wait_phase(fixed["id"], "Deployed")
    await api.wait_phase(scaled["id"], "Deployed")
    assert templates_of(fixed["id"]) == []
    assert len(templates_of(scaled["id"])) == 1


@pytest.fixture
def serve(tmp_path: Path):
    server = Serve(
        tmp_path / "data",
        tmp_path / "serve.log",
        "--LocalEngine.replica_templates=on",
        "--LocalEngine.sandbox=bwrap",
    )
    server.start()
    yield server
    server.cleanup()


def test_an_engine_crash_leaves_no_orphan(serve: Serve, bundles):
    created = serve.ok("POST", "deployments", deployment_spec(bundles["v1"], replicas=2))
    deployment_id = created["id"]
    deployed = serve.wait_phase(deployment_id, "Deployed")
    names = sorted(r["name"] for r in deployed["status"]["replicaStatuses"])
    before = marked_replicas(serve.data_dir, deployment_id)
    assert sorted(before) == names

    serve.kill()
    # The replicas keep serving while no engine runs, and the next engine adopts them.
    for process in before.values():
        assert requests.get(f"http://127.0.0.1:{process.port}/health/ping", timeout=10).ok
    serve.start()
    again = serve.wait_phase(deployment_id, "Deployed")
    assert sorted(r["name"] for r in again["status"]["replicaStatuses"]) == names
    after = marked_replicas(serve.data_dir, deployment_id)
    assert {n: m.pid for n, m in after.items()} == {n: m.pid for n, m in before.items()}
    assert serve.ok("POST", f"deployments/{deployment_id}/invoke", PAYLOAD)["data"]

    # Deleted by the new engine: its replicas end, and the template that forked them (no
    # engine's channel left, no replica left) ends by itself.
    serve.ok("DELETE", f"deployments/{deployment_id}")
    wait_for(lambda: not templates_of(deployment_id), what="the template to end")
    assert marked_replicas(serve.data_dir, deployment_id) == {}

    # A clean stop ends the templates of the deployments still there.
    other = serve.ok("POST", "deployments", deployment_spec(bundles["v1"]))["id"]
    serve.wait_phase(other, "Deployed")
    assert len(templates_of(other)) == 1
    serve.stop()
    assert templates_of(other) == [] and marked_replicas(serve.data_dir, other) == {}
    assert [p for p in processes_of_data_dir(serve.data_dir) if p.is_running()] == []
