"""Replicas run sandboxed: model code sees its bundle and its own files, no server secret."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import requests

from primehub_jupyter.engines.local.gateway_process import child_env
from primehub_jupyter.engines.local.processes import bind_loopback, spawn
from primehub_jupyter.engines.local.sandbox import Mounts, Sandbox

from .conftest import spec, wait_until

# A Seldon-style model that also spies: in load() and predict() it tries every secret it is
# given and reports what it could see. It serves correct predictions all the same.
SPY_MODEL = textwrap.dedent(
    """
    import json
    import os
    import socket

    import numpy as np


    def probe(name, path, write):
        seen = {"exists": os.path.lexists(path), "content": None, "written": False}
        try:
            if os.path.isdir(path):
                seen["content"] = sorted(os.listdir(path))
            else:
                with open(path, "rb") as f:
                    seen["content"] = f.read(200).decode("utf-8", "replace")
        except OSError:
            pass
        if not write or name not in ("config", "data_dir", "runtime_dir", "other_bundle"):
            return seen
        try:
            if os.path.isdir(path):
                with open(os.path.join(path, "spy-was-here"), "w") as f:
                    f.write("x")
            else:
                with open(path, "a") as f:
                    f.write("admins: [mallory]\\n")
            seen["written"] = True
        except OSError:
            pass
        return seen


    def spy(targets, port, write):
        report = {name: probe(name, path, write) for name, path in targets.items()}
        processes = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        processes.append(f.read().replace(b"\\0", b" ").decode())
                except OSError:
                    pass
        report["processes"] = processes
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            report["gateway_reachable"] = True
        except OSError:
            report["gateway_reachable"] = False
        report["environment"] = dict(os.environ)
        return report


    class SpyModel:
        def load(self):
            self.at_load = spy(json.loads(os.environ.get("SPY_TARGETS", "{}")), 1, False)

        def predict(self, X, features_names, meta=None):
            if isinstance(X, dict):
                return {"load": self.at_load, "predict": spy(X["targets"], X["port"], True)}
            return np.asarray(X) * 2
    """
)
SECRET_ENV = ("PRIMEHUB_API_TOKEN", "JUPYTER_TOKEN", "JPY_API_TOKEN", "AWS_SECRET_ACCESS_KEY")


@pytest.fixture
def spy_bundle(tmp_path: Path) -> Path:
    from primehub_jupyter.serving.packaging import package

    source = tmp_path / "spy-source" / "SpyModel.py"
    source.parent.mkdir()
    source.write_text(SPY_MODEL)
    return Path(package(str(source), tmp_path / "spy", name="spy", sample_input=[[1.0, 2.0]]))


@pytest.fixture(params=["apart", "nested"])
def layout(request: pytest.FixtureRequest) -> str:
    """apart: the data dir and config elsewhere; nested: inside the very bundle the model
    sees (as a data dir inside a source checkout would be), so they must be masked."""
    return request.param


@pytest.fixture
def engine_config() -> dict[str, Any]:
    return {"drain_seconds": 0.2, "stop_grace_seconds": 5.0, "sandbox": "bwrap"}


@pytest.fixture
def jp_server_config(
    tmp_path: Path, groups_file: Path, engine_config: dict, layout: str, spy_bundle: Path
) -> dict:
    if layout == "nested":
        data_dir, config = spy_bundle / "state", spy_bundle / "groups.yaml"
        shutil.copy(groups_file, config)
    else:
        data_dir, config = tmp_path / "primehub-data", groups_file
    return {
        "ServerApp": {
            "jpserver_extensions": {"primehub_jupyter": True},
            "identity_provider_class": "tests.users.NamedTokenIdentityProvider",
        },
        "NamedTokenIdentityProvider": {"users": ["alice", "bob"]},
        "PrimeHubApp": {"data_dir": str(data_dir), "groups_file": str(config), "bcrypt_rounds": 4},
        "LocalEngine": engine_config,
    }


async def test_model_code_sees_no_secret_of_the_server(
    api, bundles, spy_bundle, jp_server_config, monkeypatch
):
    for name in SECRET_ENV:
        monkeypatch.setenv(name, f"secret-{name.lower()}")
    data_dir = Path(jp_server_config["PrimeHubApp"]["data_dir"])
    config = Path(jp_server_config["PrimeHubApp"]["groups_file"])
    config_before = config.read_text()
    home_secret = Path(os.path.expanduser("~")) / ".ssh" / "id_ed25519"
    home_secret.parent.mkdir(parents=True, exist_ok=True)
    home_secret.write_text("PRIVATE KEY")
    from jupyter_core.paths import jupyter_runtime_dir

    runtime_dir = Path(jupyter_runtime_dir())
    runtime_dir.mkdir(parents=True, exist_ok=True)
    (runtime_dir / "jpserver-1.json").write_text('{"token": "jupyter-server-token"}')

    other_id = (await api.ok("POST", "deployments", {"spec": spec(bundles["v1"])}))["id"]
    await api.wait_phase(other_id, "Deployed")
    targets = {
        "gateway_token": str(data_dir / "gateway" / "gateway.token"),
        "state": str(data_dir / "state.sqlite3"),
        "data_dir": str(data_dir),
        "config": str(config),
        "other_bundle": str(bundles["v1"]),
        "other_logs": str(data_dir / "deployments" / other_id),
        "home_secret": str(home_secret),
        "runtime_dir": str(runtime_dir),
    }
    body = spec(spy_bundle, env=[{"name": "SPY_TARGETS", "value": json.dumps(targets)}])
    spy_id = (await api.ok("POST", "deployments", {"spec": body}))["id"]
    endpoint = (await api.wait_phase(spy_id, "Deployed"))["status"]["endpoint"]
    port = urlparse(endpoint).port

    # The model itself works.
    answer = requests.post(endpoint, json={"data": {"ndarray": [[1.0, 2.5]]}}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["ndarray"] == [[2.0, 5.0]]

    answer = requests.post(endpoint, json={"jsonData": {"targets": targets, "port": port}})
    assert answer.status_code == 200, answer.text
    reports = answer.json()["jsonData"]
    token = (data_dir / "gateway" / "gateway.token").read_text()
    for when, report in reports.items():
        for name in targets:
            seen = report[name]
            assert token not in json.dumps(seen), (when, name)
            if name == "data_dir":  # at most the way to its own replica directory
                assert set(seen["content"] or []) <= {"deployments", "spy-was-here"}, seen
                continue
            # Absent, or an empty mask where a visible directory would have shown it.
            assert seen["content"] in (None, [], ""), (when, name, seen)
        # Where the config shows at all (a mask), it cannot be written; elsewhere a write
        # lands in the sandbox's private /tmp (checked on the host below).
        assert not (report["config"]["exists"] and report["config"]["written"]), when
        # Its own PID namespace: only the sandbox's init and the model server itself.
        assert report["processes"], report
        for command in report["processes"]:
            assert "bwrap" in command or "primehub_jupyter.serving" in command, command
        environment = report["environment"]
        for name in SECRET_ENV:
            assert name not in environment, (when, name)
        assert not any(k.startswith(("JUPYTER", "JPY_")) for k in environment), environment
        assert environment["PRIMEHUB_DEPLOYMENT_ID"] == spy_id
        assert "SPY_TARGETS" in environment  # the spec's own env does arrive
    assert not reports["predict"]["gateway_reachable"]
    # Nothing the model wrote reached the host.
    assert config.read_text() == config_before
    assert not (data_dir / "spy-was-here").exists()
    assert not (runtime_dir / "spy-was-here").exists()
    assert not (Path(bundles["v1"]) / "spy-was-here").exists()
    # Its own log is where the engine reads it.
    logs = await api.ok("GET", f"deployments/{spy_id}/logs")
    assert "serving" in logs


def serve_sandboxed(sandbox: Sandbox, bundle: Path, workdir: Path) -> tuple[Any, str]:
    """A model server started the way the engine starts a replica, inside `sandbox`."""
    workdir.mkdir(parents=True, exist_ok=True)
    mounts = sandbox.mounts_for(bundle=bundle, writable=[workdir], secrets=[], others=[])
    sock = bind_loopback()
    argv = [
        sys.executable,
        "-m",
        "primehub_jupyter.serving",
        str(bundle),
        "--fd",
        str(sock.fileno()),
        "--log-file",
        str(workdir / "output.log"),
        "--termination-log",
        str(workdir / "termination-log"),
    ]
    try:
        handle = spawn(
            sandbox.wrap(argv, mounts, chdir=workdir),
            log_file=workdir / "output.log",
            env=sandbox.environment(child_env({"PYTHONUNBUFFERED": "1"})),
            cwd=workdir,
            pass_fds=(sock.fileno(),),
            sandboxed=sandbox.enabled,
        )
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()
    return handle, url


def model_server_pid(handle: Any) -> int:
    """The model server inside the sandbox: the group member that is not a bwrap launcher."""
    members = handle.group()
    assert len(members) == 1, members
    return members[0]


async def test_signals_and_exit_codes_pass_through_the_sandbox(bundles, tmp_path):
    sandbox = Sandbox("bwrap", python=sys.executable)
    sandbox.check(child_env({}))
    assert sandbox.enabled

    # SIGTERM to the group reaches the model server, which stops gracefully: exit code 0.
    handle, url = serve_sandboxed(sandbox, bundles["v1"], tmp_path / "ok")
    assert requests.get(f"{url}/health/ping", timeout=60).status_code == 200
    assert handle.group() != [handle.pid]  # the launcher leads the group; the server is inside
    await handle.terminate(20)
    assert handle.exit_code() == 0
    assert "stopped serving" in (tmp_path / "ok" / "output.log").read_text()

    # A model that cannot load: exit code 3 and the reason, as without a sandbox.
    handle, _ = serve_sandboxed(sandbox, bundles["broken"], tmp_path / "broken")
    await wait_until(lambda: handle.exit_code() is not None, what="the broken model to exit")
    assert handle.exit_code() == 3
    assert "model failed to load" in (tmp_path / "broken" / "termination-log").read_text()

    # A model server killed inside the sandbox is reported as killed by that signal.
    handle, url = serve_sandboxed(sandbox, bundles["v1"], tmp_path / "killed")
    assert requests.get(f"{url}/health/ping", timeout=60).status_code == 200
    os.kill(model_server_pid(handle), signal.SIGKILL)
    await wait_until(lambda: handle.exit_code() is not None, what="the sandbox to end")
    assert handle.exit_code() == -signal.SIGKILL


def test_missing_bubblewrap_is_said_once_and_replicas_run_unsandboxed(caplog, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    caplog.set_level(logging.INFO, logger="primehub_jupyter.engines.local.sandbox")
    sandbox = Sandbox("auto", python=sys.executable)
    sandbox.check({})
    sandbox.check({})
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "WITHOUT a sandbox" in warnings[0].getMessage()
    assert "bwrap is not installed" in warnings[0].getMessage()
    assert not sandbox.enabled
    assert sandbox.wrap(["python"], Mounts(), chdir=Path("/")) == ["python"]

    with pytest.raises(RuntimeError, match="bubblewrap cannot run here"):
        Sandbox("bwrap", python=sys.executable).check({})
    quiet = Sandbox("off", python=sys.executable)
    quiet.check({})
    assert not quiet.enabled


def test_replica_environment_is_an_allowlist(monkeypatch):
    monkeypatch.setenv("PRIMEHUB_API_TOKEN", "t")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "t")
    monkeypatch.setenv("GITHUB_TOKEN", "t")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    env = child_env({"PRIMEHUB_DEPLOYMENT_ID": "iris", "MY_SETTING": "1"})
    assert {"PRIMEHUB_API_TOKEN", "JUPYTERHUB_API_TOKEN", "GITHUB_TOKEN"}.isdisjoint(env)
    assert env["OMP_NUM_THREADS"] == "3" and env["LC_ALL"] == "C.UTF-8"
    assert env["PRIMEHUB_DEPLOYMENT_ID"] == "iris" and env["MY_SETTING"] == "1"
    assert env["PATH"] == os.environ["PATH"]
