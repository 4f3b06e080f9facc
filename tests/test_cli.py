"""The primehub-deploy CLI against a real `primehub-deploy serve`, including server restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import joblib
import numpy as np
import pytest
import requests
import yaml

from primehub_jupyter.kernel.client import Client, ServerNotFound

from .conftest import RequestLoop
from .serve_helpers import CLI, Serve, replica_processes, wait_for


@pytest.fixture
def server(tmp_path: Path):
    srv = Serve(tmp_path / "data", tmp_path / "serve.log")
    srv.start()
    yield srv
    # Anything the server left behind (after a SIGKILL) is cleaned up by a last clean run.
    srv.cleanup()


def test_cli_journey_and_server_restarts(server: Serve, models, iris, tmp_path: Path):
    X, _ = iris
    model_file = tmp_path / "iris.joblib"
    joblib.dump(models["v1"], model_file)
    out = server.cli("package", str(model_file), "-o", str(tmp_path / "work" / "bundle-v1"))
    assert "bundle written" in out.stdout
    joblib.dump(models["v2"], tmp_path / "iris2.joblib")
    server.cli(
        "package", str(tmp_path / "iris2.joblib"), "-o", str(tmp_path / "work" / "bundle-v2")
    )

    # A deployment file with a modelURI relative to the file itself.
    deploy = tmp_path / "work" / "deploy.yaml"
    deploy.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "primehub.io/v1alpha1",
                "kind": "PhDeployment",
                "metadata": {"name": "iris-cli"},
                "spec": {
                    "displayName": "Iris (CLI)",
                    "groupName": "default",
                    "description": "from the CLI",
                    "predictors": [
                        {"instanceType": "cpu-0.5", "replicas": 2, "modelURI": "bundle-v1"}
                    ],
                },
            }
        )
    )
    out = server.cli("create", "-f", str(deploy), "--wait")
    assert "Deployed" in out.stdout and "curl -X POST" in out.stdout

    table = server.cli("get").stdout
    assert "iris-cli" in table and "Deployed" in table and "Iris (CLI)" in table
    detail = json.loads(server.cli("get", "iris-cli", "-o", "json").stdout)
    assert detail["spec"]["predictors"][0]["modelURI"] == str(
        (tmp_path / "work" / "bundle-v1").resolve()
    )
    endpoint = detail["status"]["endpoint"]

    answer = json.loads(
        server.cli(
            "invoke", "iris-cli", "--data", json.dumps({"data": {"ndarray": X[:3].tolist()}})
        ).stdout
    )
    np.testing.assert_allclose(answer["data"]["ndarray"], models["v1"].predict_proba(X[:3]))
    curl = requests.post(endpoint, json={"data": {"ndarray": X[:3].tolist()}}, timeout=30)
    np.testing.assert_allclose(curl.json()["data"]["ndarray"], models["v1"].predict_proba(X[:3]))

    # The update to the second model runs under a bounded loop of requests: none fails.
    payload = {"data": {"ndarray": X[:1].tolist()}}
    with RequestLoop(endpoint, payload, concurrency=4, max_requests=4000) as loop:
        wait_for(lambda: loop.count >= 10, what="the request loop to run")
        out = server.cli(
            "update",
            "iris-cli",
            "--set",
            f"modelURI={tmp_path / 'work' / 'bundle-v2'}",
            "-m",
            "second model",
            "--wait",
        )
        # The old replicas drain and stop while traffic continues.
        mark = loop.count
        wait_for(lambda: len(replica_processes("iris-cli")) == 2, what="the old replicas to go")
        wait_for(lambda: loop.count > mark + 20, what="traffic after the rollout")
    assert "2/2 available" in out.stdout
    assert loop.count > 50 and loop.errors == [], loop.errors[:5]
    history = server.cli("history", "iris-cli").stdout
    assert "second model" in history and history.count("alice") == 0
    entries = json.loads(server.cli("history", "iris-cli", "-o", "json").stdout)
    assert [e["revision"] for e in entries] == [2, 1]
    assert entries[0]["spec"]["predictors"][0]["replicas"] == 2

    # Roll back to the first model, then forward again: history keeps every step.
    out = server.cli("rollback", "iris-cli", "1", "--wait", "-y")
    assert "bundle-v1" in out.stdout
    curl = requests.post(endpoint, json={"data": {"ndarray": X[:3].tolist()}}, timeout=30)
    np.testing.assert_allclose(curl.json()["data"]["ndarray"], models["v1"].predict_proba(X[:3]))
    server.cli("rollback", "iris-cli", "2", "-m", "forward again", "--wait", "-y")
    entries = json.loads(server.cli("history", "iris-cli", "-o", "json").stdout)
    assert [e["updateMessage"] for e in entries[:2]] == ["forward again", "rollback to revision 1"]
    table = server.cli("metrics", "iris-cli", "--window", "120", "--step", "10").stdout
    assert "REQ/S" in table and "window 120 s:" in table

    logs = server.cli("logs", "iris-cli", "--tail", "50").stdout
    assert "POST /api/v1.0/predictions 200" in logs or "replica ready" in logs
    assert len(logs.splitlines()) <= 50
    one = server.cli("logs", "iris-cli", "--replica", "0", "--tail", "5").stdout
    assert 0 < len(one.splitlines()) <= 5
    saved = server.cli("logs", "iris-cli", "--download", str(tmp_path / "all.log")).stdout
    assert "saved" in saved and (tmp_path / "all.log").stat().st_size > 0

    # Follow streams new lines until the client goes away.
    follower = subprocess.Popen(
        [*CLI, "logs", "iris-cli", "--follow", "--tail", "0"],
        env=server.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    # Requests until the follower shows one: it may subscribe after the first (bounded loop).
    read = threading.Event()

    def post_until_read() -> None:
        for _ in range(200):
            if read.is_set():
                return
            requests.post(endpoint, json={"data": {"ndarray": X[:1].tolist()}}, timeout=30)
            read.wait(0.5)

    poster = threading.Thread(target=post_until_read, daemon=True)
    poster.start()
    line = follower.stdout.readline()
    read.set()
    poster.join(timeout=60)
    follower.send_signal(signal.SIGINT)
    follower.wait(timeout=10)
    assert "Z" in line[:25]

    # A clean restart of the server brings the deployment back without user action.
    server.stop(signal.SIGTERM)
    assert not _reachable(endpoint), "a clean stop stops the replicas and the gateway"
    server.start()
    out = server.cli("wait", "iris-cli", "--timeout", "90")
    assert "Deployed" in out.stdout
    curl = requests.post(endpoint, json={"data": {"ndarray": X[:3].tolist()}}, timeout=30)
    assert curl.status_code == 200, "the endpoint URL is stable across restarts"
    np.testing.assert_allclose(curl.json()["data"]["ndarray"], models["v2"].predict_proba(X[:3]))

    # A crash (SIGKILL) of the server: replicas keep serving and are adopted on start.
    server.stop(signal.SIGKILL)
    curl = requests.post(endpoint, json={"data": {"ndarray": X[:1].tolist()}}, timeout=30)
    assert curl.status_code == 200, "inference does not depend on the server process"
    server.start()
    out = server.cli("get", "iris-cli", "-o", "json")
    status = json.loads(out.stdout)["status"]
    assert [r["restarts"] for r in status["replicaStatuses"]] == [0, 0]
    server.cli("wait", "iris-cli", "--timeout", "60")

    out = server.cli("stop", "iris-cli", "--wait", "-y")
    assert "Stopped" in out.stdout
    out = server.cli("start", "iris-cli", "--wait")
    assert "Deployed" in out.stdout
    server.cli("delete", "iris-cli", "-y")
    gone = server.cli("get", "iris-cli", check=False)
    assert gone.returncode == 1 and "not found" in gone.stderr
    assert "Traceback" not in gone.stderr


def _reachable(url: str) -> bool:
    try:
        requests.get(url, timeout=2)
    except requests.RequestException:
        return False
    return True


def test_cli_errors_are_one_readable_line(server: Serve, tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed")
    result = server.cli("create", "-f", str(bad), check=False)
    assert result.returncode == 1 and "not valid YAML" in result.stderr
    missing = tmp_path / "missing.yaml"
    missing.write_text(
        yaml.safe_dump(
            {
                "spec": {
                    "displayName": "x",
                    "groupName": "default",
                    "predictors": [
                        {"instanceType": "cpu-1", "modelURI": str(tmp_path / "nothing-here")}
                    ],
                }
            }
        )
    )
    result = server.cli("create", "-f", str(missing), check=False)
    assert result.returncode == 1 and "model URI cannot be used" in result.stderr
    assert "Traceback" not in result.stderr
    result = server.cli("update", "nope", "--set", "replicas=2", check=False)
    assert result.returncode == 1 and "not found" in result.stderr
    result = server.cli("invoke", "nope", "--data", "{bad", check=False)
    assert result.returncode == 1 and "not valid JSON" in result.stderr
    result = subprocess.run(
        [*CLI, "get"],
        env={**os.environ, "PRIMEHUB_API_URL": "http://127.0.0.1:9/"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "cannot reach" in result.stderr
    result = server.cli("package", str(bad), "-o", str(tmp_path / "b"), check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr


def test_client_finds_a_running_server_from_jupyter_runtime_files(server: Serve, monkeypatch):
    monkeypatch.delenv("PRIMEHUB_API_URL", raising=False)
    monkeypatch.delenv("PRIMEHUB_API_TOKEN", raising=False)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(server.runtime_dir))
    client = Client()
    assert client.base_url == f"http://127.0.0.1:{server.port}/"
    assert client.me()["groups"][0]["name"] == "default"
    # The CLI finds it the same way.
    env = {k: v for k, v in server.env.items() if not k.startswith("PRIMEHUB_API")}
    result = subprocess.run([*CLI, "get"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "No deployments yet" in result.stdout
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(server.runtime_dir.parent / "empty"))
    with pytest.raises(ServerNotFound, match="no PrimeHub server found"):
        Client()
