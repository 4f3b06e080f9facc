"""The seconds a user waits, on the embedded engine, side by side in one run.

Times three journeys and prints each next to the first:
  bare     a model-server process (`python -m primehub_jupyter.serving BUNDLE`) from start to its
           first 200 on /health/ping: the floor every deployment pays;
  create   POST deployments (2 replicas) through a real `primehub-deploy serve` until the
           deployment is Deployed (what `primehub-deploy create --wait` waits for);
  %deploy  `d = %deploy model --name ...` in a real IPython kernel, packaging included, until the
           magic returns a Deployed deployment.
Targets (issue 13): create <= 1.3x bare, %deploy <= 2x bare. Everything binds 127.0.0.1.

    python bench/journey.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

PYTHON = sys.executable
GROUPS = {
    "admins": ["bench"],
    "instanceTypes": [{"name": "cpu-0.5", "cpu": 0.5, "memory": "512Mi"}],
    "groups": [
        {
            "name": "default",
            "enabledDeployment": True,
            "members": ["bench"],
            "quota": {"cpu": 8, "memory": "16Gi"},
            "instanceTypes": ["cpu-0.5"],
        }
    ],
}
SETUP_CELL = """
import time
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True)
model = LogisticRegression(max_iter=1000).fit(X, y)
%load_ext primehub_jupyter
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def call(url: str, token: str, method: str, body: object | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        raw = response.read()
        return json.loads(raw) if raw else {}


def package_bundle(path: Path) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from primehub_jupyter.serving.packaging import package

    X, y = load_iris(return_X_y=True)
    package(LogisticRegression(max_iter=1000).fit(X, y), path, name="iris", sample_input=X[:1])


def bare_start(bundle: Path) -> float:
    """Seconds from spawning a model server to its first 200 on /health/ping."""
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [PYTHON, "-m", "primehub_jupyter.serving", str(bundle), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = started + 120
        while time.perf_counter() < deadline:
            if get(f"http://127.0.0.1:{port}/health/ping", timeout=5)[0] == 200:
                return time.perf_counter() - started
            if process.poll() is not None:
                raise RuntimeError("the model server exited")
            time.sleep(0.01)
        raise RuntimeError("the model server did not become ready in 120 s")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


@contextlib.contextmanager
def serve(workdir: Path) -> Iterator[tuple[str, str]]:
    """A `primehub-deploy serve` on a fresh data dir; yields (base URL, token)."""
    data = workdir / "data"
    data.mkdir()
    (data / "config.yaml").write_text(json.dumps(GROUPS))
    port = free_port()
    token = secrets.token_hex(16)
    env = {**os.environ, "PRIMEHUB_API_TOKEN": token, "USER": "bench", "JUPYTERHUB_USER": "bench"}
    process = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "primehub_jupyter.cli",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "serve.log", "wb"),  # noqa: SIM115 - closed with the process
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while get(url + "primehub/api/me", {"Authorization": f"token {token}"})[0] != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve did not start; see {workdir / 'serve.log'}")
            time.sleep(0.05)
        yield url, token
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def create_to_deployed(url: str, token: str, bundle: Path, name: str) -> float:
    api = url + "primehub/api/deployments"
    body = {
        "id": name,
        "spec": {
            "displayName": name,
            "groupName": "default",
            "predictors": [{"instanceType": "cpu-0.5", "replicas": 2, "modelURI": str(bundle)}],
        },
    }
    started = time.perf_counter()
    call(api, token, "POST", body)
    deadline = started + 300
    while time.perf_counter() < deadline:
        phase = call(f"{api}/{name}", token, "GET")["status"]["phase"]
        if phase == "Deployed":
            return time.perf_counter() - started
        if phase == "Failed":
            raise RuntimeError(f"{name} failed")
        time.sleep(0.01)
    raise RuntimeError(f"{name} not Deployed in 300 s")


def deploy_magic(url: str, token: str, workdir: Path, rounds: int) -> list[float]:
    """Seconds of `%deploy` (packaging included) in a real kernel, one per round."""
    from jupyter_client.manager import KernelManager

    env = {**os.environ, "PRIMEHUB_API_URL": url, "PRIMEHUB_API_TOKEN": token}
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(env=env, cwd=str(workdir))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)

        def run(code: str) -> str:
            out: list[str] = []

            def hook(msg: dict) -> None:
                if msg["msg_type"] == "stream":
                    out.append(msg["content"]["text"])
                elif msg["msg_type"] == "error":
                    out.append("ERROR " + msg["content"]["evalue"])

            client.execute_interactive(code, timeout=600, output_hook=hook)
            return "".join(out)

        run(SETUP_CELL)
        times = []
        for index in range(rounds):
            text = run(
                "t0 = time.perf_counter()\n"
                f"d = %deploy model --name magic-{index}\n"
                "print('SECONDS', time.perf_counter() - t0, d.phase)"
            )
            line = next((x for x in text.splitlines() if x.startswith("SECONDS")), None)
            if line is None or not line.endswith("Deployed"):
                raise RuntimeError(f"%deploy did not deploy: {text[-500:]}")
            times.append(float(line.split()[1]))
            run("%phdeploy delete {d.id}")
        return times
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="primehub-journey-"))
    try:
        bundle = workdir / "iris-bundle"
        package_bundle(bundle)
        bare = [bare_start(bundle) for _ in range(args.rounds)]
        with serve(workdir) as (url, token):
            created = []
            for index in range(args.rounds):
                name = f"journey-{index}"
                created.append(create_to_deployed(url, token, bundle, name))
                call(f"{url}primehub/api/deployments/{name}", token, "DELETE")
            magic = deploy_magic(url, token, workdir, args.rounds)
        base = statistics.median(bare)
        rows = [
            ("bare model server start -> ready", bare, None),
            ("create (2 replicas) -> Deployed", created, 1.3),
            ("%deploy (packaging included) -> Deployed", magic, 2.0),
        ]
        print(f"{'journey':44} {'median s':>9} {'min s':>7} {'x bare':>7} {'target':>7}")
        for label, values, target in rows:
            ratio = statistics.median(values) / base
            goal = f"<= {target:g}" if target else ""
            print(
                f"{label:44} {statistics.median(values):9.2f} {min(values):7.2f} "
                f"{ratio:7.2f} {goal:>7}"
            )
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
