"""A real `primehub-deploy serve` to drive, crash and restart; process scans independent of it."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import requests
import yaml

CLI = [sys.executable, "-m", "primehub_jupyter.cli"]
PAYLOAD = {"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Serve:
    """`primehub-deploy serve` on one data dir and port; the token goes in the environment.

    Restartable on the same data dir and port (the endpoint URLs stay the same); `cli()` runs
    `primehub-deploy` against it.
    """

    def __init__(self, data_dir: Path, log: Path, *extra: str) -> None:
        self.data_dir = data_dir
        self.log = log
        self.extra = list(extra)
        self.port = free_port()
        self.token = "serve-token-" + os.urandom(6).hex()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc: subprocess.Popen | None = None
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {self.token}"

    @classmethod
    def with_groups(cls, root: Path, groups: dict[str, Any], owner: str, *extra: str) -> Serve:
        """A server whose data dir, log and groups file (`groups`, written here) are under
        `root`, run as the single user `owner`."""
        groups_file = root / "groups.yaml"
        groups_file.write_text(yaml.safe_dump(groups, sort_keys=False))
        return cls(
            root / "data",
            root / "serve.log",
            f"--PrimeHubApp.groups_file={groups_file}",
            f"--PrimeHubApp.owner={owner}",
            *extra,
        )

    @property
    def runtime_dir(self) -> Path:
        return self.data_dir.parent / "runtime"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PRIMEHUB_API_URL": self.url,
            "PRIMEHUB_API_TOKEN": self.token,
            "JUPYTER_RUNTIME_DIR": str(self.runtime_dir),
        }

    def start(self, *extra: str) -> None:
        """Start and wait until the API answers (the engine has adopted what was running)."""
        self.session.headers["Authorization"] = f"token {self.token}"  # it may have been set
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    *CLI,
                    "serve",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                    "--LocalEngine.drain_seconds=0.3",
                    "--LocalEngine.restart_backoff_max=1",
                    *self.extra,
                    *extra,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if self.session.get(self.url + "primehub/api/me", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError("serve did not start: " + self.log.read_text()[-3000:])

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        self.stop(signal.SIGKILL)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the server (a clean stop by default) and wait until it has exited."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=90)

    def cli(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess:
        """`primehub-deploy <args>` against this server; checked for success by default."""
        result = subprocess.run(
            [*CLI, *args], env=self.env, capture_output=True, text=True, timeout=180, input=stdin
        )
        if check:
            assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
        return result

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def call(self, method: str, path: str, body: Any = None) -> requests.Response:
        return self.session.request(
            method, self.url + "primehub/api/" + path, json=body, timeout=120
        )

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        response = self.call(method, path, body)
        assert response.status_code < 300, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        return response.json() if response.content else None

    def wait_phase(self, deployment_id: str, phase: str, limit: float = 90) -> dict:
        """Poll until the phase is reached; the limit only bounds a hang."""
        deadline = time.monotonic() + limit
        while True:
            d = self.ok("GET", f"deployments/{deployment_id}")
            if d["status"]["phase"] == phase:
                return d
            if time.monotonic() > deadline:
                raise AssertionError(f"{deployment_id} never reached {phase}: {d['status']}")
            time.sleep(0.1)

    def cleanup(self) -> None:
        """End the server and everything it started (a clean stop, after a crash a clean run)."""
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        if self.proc is not None and self.proc.returncode == -signal.SIGKILL:
            self.start()
            self.stop()
        for proc in processes_of_data_dir(self.data_dir):
            proc.kill()


def serve_deployed(root: Path, bundle: Path) -> Serve:
    """A started server under `root` with one Deployed deployment of `bundle`
    (its id in `deployment_id`); `cleanup()` removes both."""
    server = Serve(root / "data", root / "serve.log")
    server.start()
    deployment = server.ok("POST", "deployments", deployment_spec(bundle))
    server.wait_phase(deployment["id"], "Deployed")
    server.deployment_id = deployment["id"]  # type: ignore[attr-defined]
    return server


def deployment_spec(bundle: Path, replicas: int = 1, **top: Any) -> dict[str, Any]:
    return {
        "spec": {
            "displayName": "Iris classifier",
            "groupName": "default",
            **top,
            "predictors": [
                {"instanceType": "cpu-0.5", "replicas": replicas, "modelURI": str(bundle)}
            ],
        }
    }


def _top_level(found: dict[int, tuple[psutil.Process, int]]) -> list[psutil.Process]:
    # A sandbox wrapper and the model server it runs both match: count the wrapper only.
    return [proc for proc, parent in found.values() if parent not in found]


def replica_processes(deployment_id: str) -> list[psutil.Process]:
    """Live model-server processes of a deployment, found from their command line alone."""
    found: dict[int, tuple[psutil.Process, int]] = {}
    for proc in psutil.process_iter(["pid", "ppid", "cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE or "primehub_jupyter.serving" not in cmdline:
            continue
        if any(a == "--deployment" and b == deployment_id for a, b in itertools.pairwise(cmdline)):
            found[proc.info["pid"]] = (proc, proc.info["ppid"] or 0)
    return _top_level(found)


def replica_names(deployment_id: str) -> list[str]:
    """The --replica argument of each live process of a deployment (sorted; repeats kept)."""
    names = []
    for proc in replica_processes(deployment_id):
        with_next = itertools.pairwise(proc.cmdline())
        names.extend(b for a, b in with_next if a == "--replica")
    return sorted(names)


def processes_of_data_dir(data_dir: Path) -> list[psutil.Process]:
    """Every live process whose command line names a path in the data dir (replicas, gateway)."""
    needle = str(data_dir)
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.info["pid"] == os.getpid():
            continue
        if any(needle in arg for arg in proc.info["cmdline"] or []):
            found.append(proc)
    return found


def gateway_process(data_dir: Path) -> psutil.Process | None:
    for proc in processes_of_data_dir(data_dir):
        if "primehub_jupyter.gateway" in proc.info["cmdline"]:
            return proc
    return None


def wait_for(predicate: Any, what: str = "condition", limit: float = 60) -> Any:
    """Poll until truthy (from a thread, no event loop); the limit only bounds a hang."""
    deadline = time.monotonic() + limit
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value
