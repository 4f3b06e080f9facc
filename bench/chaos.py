"""Faults under load: failed requests by cause and recovery time, per scenario, on a real serve."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

PAYLOAD = {"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}}
SCENARIOS = ("serve-kill", "serve-restart", "gateway-kill", "replica-kill", "rolling-update")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Serve:
    """`primehub-deploy serve` that leaves replicas running on a clean stop (so a restart is
    a control-plane restart only)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/primehub/api/"
        self.token = os.urandom(12).hex()
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {self.token}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        """Start; returns the seconds until the API answered."""
        began = time.monotonic()
        env = {**os.environ, "PRIMEHUB_API_TOKEN": self.token}
        log = open(self.data_dir.parent / "serve.log", "ab")  # noqa: SIM115 - lives with the child
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "primehub_jupyter.cli",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--LocalEngine.stop_replicas_on_exit=False",
                "--LocalEngine.drain_seconds=0.5",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        while True:
            if self.proc.poll() is not None:
                raise SystemExit("serve exited; see " + str(self.data_dir.parent / "serve.log"))
            try:
                if self.session.get(self.url + "me", timeout=2).status_code == 200:
                    return time.monotonic() - began
            except requests.RequestException:
                pass
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=120)

    def call(self, method: str, path: str, body: object = None) -> dict:
        response = self.session.request(method, self.url + path, json=body, timeout=120)
        response.raise_for_status()
        return response.json() if response.content else {}

    def wait_deployed(self, deployment_id: str) -> dict:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            d = self.call("GET", f"deployments/{deployment_id}")
            ready = d["status"]["availableReplicas"] == d["spec"]["predictors"][0]["replicas"]
            if d["status"]["phase"] == "Deployed" and ready:
                return d
            time.sleep(0.2)
        raise SystemExit(f"{deployment_id} did not deploy")


@dataclass
class Load:
    """Prediction requests from a few threads, each outcome stamped with its time."""

    url: str
    concurrency: int
    outcomes: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        assert self.url.startswith("http://127.0.0.1:"), "loopback only"
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work) for _ in range(self.concurrency)]

    def _work(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            try:
                r = session.post(self.url, json=PAYLOAD, timeout=10)
                outcome = "ok" if r.status_code == 200 else str(r.status_code)
            except requests.Timeout:
                outcome = "timeout"
            except requests.ConnectionError as error:
                text = str(error)
                outcome = "refused" if "refused" in text else "reset"
                time.sleep(0.01)  # a refused connection returns at once: do not spin
            self.outcomes.append((time.monotonic(), outcome))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)


def gateway_pid(data_dir: Path) -> int:
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "primehub_jupyter.gateway" in cmdline and any(str(data_dir) in a for a in cmdline):
            return proc.info["pid"]
    raise SystemExit("no gateway found")


def replica_pid(deployment_id: str) -> int:
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "primehub_jupyter.serving" in cmdline and deployment_id in cmdline:
            return proc.info["pid"]
    raise SystemExit("no replica found")


def inject(name: str, serve: Serve, deployment_id: str, bundles: dict[str, Path]) -> str:
    """Do the fault; returns a note (e.g. how long the API was away)."""
    if name == "serve-kill":
        serve.signal(signal.SIGKILL)
        return f"API back in {serve.start():.1f} s"
    if name == "serve-restart":
        serve.signal(signal.SIGTERM)
        return f"API back in {serve.start():.1f} s"
    if name == "gateway-kill":
        os.kill(gateway_pid(serve.data_dir), signal.SIGKILL)
        return ""
    if name == "replica-kill":
        os.kill(replica_pid(deployment_id), signal.SIGKILL)
        return ""
    current = serve.call("GET", f"deployments/{deployment_id}")["spec"]["predictors"][0]
    uri = str(bundles["v2" if current["modelURI"] == str(bundles["v1"]) else "v1"])
    patch = {"spec": {"predictors": [{"modelURI": uri}]}}
    serve.call("PATCH", f"deployments/{deployment_id}", patch)
    return ""


def report(name: str, load: Load, fault_at: float, note: str) -> None:
    outcomes = list(load.outcomes)
    causes = Counter(o for _, o in outcomes if o != "ok")
    failed_times = [t for t, o in outcomes if o != "ok"]
    recovery = (max(failed_times) - fault_at) if failed_times else 0.0
    detail = ", ".join(f"{c} {n}" for c, n in sorted(causes.items())) or "-"
    print(
        f"{name:<15} sent {len(outcomes):>6}  failed {sum(causes.values()):>5}  "
        f"({detail})  recovery {recovery:.2f} s  {note}",
        flush=True,
    )


def make_bundles(root: Path) -> dict[str, Path]:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    from primehub_jupyter.serving.packaging import package

    X, y = load_iris(return_X_y=True)
    models = {
        "v1": LogisticRegression(max_iter=1000).fit(X, y),
        "v2": DecisionTreeClassifier(max_depth=2).fit(X, y),
    }
    return {k: Path(package(m, root / k, name=f"iris-{k}")) for k, m in models.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="Load per scenario.")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--scenario", action="append", choices=SCENARIOS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="primehub-chaos-") as tmp:
        root = Path(tmp)
        bundles = make_bundles(root)
        serve = Serve(root / "data")
        serve.start()
        try:
            body = {
                "spec": {
                    "displayName": "Chaos",
                    "groupName": "default",
                    "predictors": [
                        {"instanceType": "cpu-0.5", "replicas": 2, "modelURI": str(bundles["v1"])}
                    ],
                }
            }
            deployment_id = serve.call("POST", "deployments", body)["id"]
            endpoint = serve.wait_deployed(deployment_id)["status"]["endpoint"]
            print(
                f"{args.seconds:g} s of load per scenario, concurrency {args.concurrency}, "
                f"2 replicas, fault after a quarter of it; {os.cpu_count()} cores",
                flush=True,
            )
            for name in args.scenario or SCENARIOS:
                with Load(endpoint, args.concurrency) as load:
                    time.sleep(args.seconds / 4)
                    fault_at = time.monotonic()
                    note = inject(name, serve, deployment_id, bundles)
                    # The rest of the run, and at least 5 s after a slow fault (a restart).
                    remaining = args.seconds * 0.75 - (time.monotonic() - fault_at)
                    time.sleep(max(5.0, remaining))
                report(name, load, fault_at, note)
                serve.wait_deployed(deployment_id)
        finally:
            if serve.proc is not None and serve.proc.poll() is None:
                serve.signal(signal.SIGTERM)
            # The replicas and gateway outlive serve by design here: end them.
            for proc in psutil.process_iter(["pid", "cmdline"]):
                if any(str(root) in a for a in proc.info["cmdline"] or []):
                    proc.kill()


if __name__ == "__main__":
    main()
