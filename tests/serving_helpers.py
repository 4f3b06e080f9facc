"""A real model-server process for tests: start, wait until ready, talk HTTP, stop."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
PREDICT = "/api/v1.0/predictions"
# Generous: only a hung server ever waits this long; nothing asserts on durations.
DEADLINE = 60.0
#: Runs the model server with the test-only runtimes of tests/serving_models.py registered.
WITH_TEST_RUNTIMES = (sys.executable, str(TESTS / "serving_models.py"))
MODEL_SERVER = (sys.executable, "-m", "primehub_jupyter.serving")


def env() -> dict[str, str]:
    """The environment for server processes: this checkout and tests/ importable."""
    env = dict(os.environ)
    # The trouble model is pickled under whichever module name the test imported it as.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS), env.get("PYTHONPATH", "")])
    env.pop("PYTHONUNBUFFERED", None)
    return env


class ModelServer:
    """`python -m primehub_jupyter.serving` in a subprocess, on --port 0 or an inherited --fd."""

    def __init__(
        self,
        bundle: Path,
        workdir: Path,
        *extra: str,
        workers: int = 1,
        entry: tuple[str, ...] = MODEL_SERVER,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.bundle = bundle
        self.log_file = workdir / "server.log"
        self.termination_log = workdir / "termination.log"
        args = [*entry, str(bundle)]
        args += ["--log-file", str(self.log_file), "--termination-log", str(self.termination_log)]
        self.args = [*args, "--workers", str(workers), *extra]
        self.pass_fds: tuple[int, ...] = ()
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def on_port(
        cls,
        bundle: Path,
        workdir: Path,
        *extra: str,
        workers: int = 1,
        entry: tuple[str, ...] = MODEL_SERVER,
    ) -> ModelServer:
        """Start on --port 0 and learn the port from the startup line in the log."""
        server = cls(bundle, workdir, *extra, workers=workers, entry=entry)
        server.args += ["--port", "0"]
        server._start()
        match = server.wait_for_log(r"serving \S+ \(\S+\) on http://127\.0\.0\.1:(\d+)")
        server.url = f"http://127.0.0.1:{match.group(1)}"
        server.wait_ready()
        return server

    @classmethod
    def on_fd(cls, bundle: Path, workdir: Path, *extra: str, workers: int = 1) -> ModelServer:
        """Bind 127.0.0.1:0 here and hand the listening socket to the server as --fd."""
        server = cls(bundle, workdir, *extra, workers=workers)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        server.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        server.args += ["--fd", str(listener.fileno())]
        server.pass_fds = (listener.fileno(),)
        try:
            server._start()
        finally:
            listener.close()  # the server holds its own copy now
        server.wait_ready()
        return server

    def _start(self) -> None:
        self.proc = subprocess.Popen(
            self.args,
            cwd=REPO,
            env=env(),
            pass_fds=self.pass_fds,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def log(self) -> str:
        """Everything the server wrote to --log-file so far."""
        return self.log_file.read_text() if self.log_file.exists() else ""

    def wait_for_log(self, pattern: str) -> re.Match[str]:
        """Wait until a log line matches `pattern`; fail with the log if the server dies."""
        assert self.proc is not None
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log())
            if match:
                return match
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        pytest.fail(f"no log line matching {pattern!r}:\n{self.log()}")

    def wait_ready(self) -> None:
        """Poll /health/ping until it answers."""
        assert self.proc is not None
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/health/ping", timeout=5).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):
                # On an inherited --fd the socket listens while the model still loads: a
                # slow load (a busy machine) is a read timeout, not a failure.
                pass
            time.sleep(0.05)
        pytest.fail(f"server not ready:\n{self.log()}")

    def post(self, payload: object = None, *, path: str = PREDICT, **kwargs) -> requests.Response:
        """POST JSON (or raw `data=`) to the server."""
        if payload is not None:
            kwargs["json"] = payload
        return requests.post(self.url + path, timeout=30, **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        """GET a path of the server."""
        return requests.get(self.url + path, timeout=30, **kwargs)

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        """The parsed samples of GET /metrics."""
        response = self.get("/metrics")
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return metric_samples(response.text)

    def stop(self) -> int:
        """SIGTERM the server and return its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=DEADLINE)

    def kill(self) -> None:
        """Last-resort cleanup."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def serve(factory, *args, **kwargs):
    """Yield a started server; stop it afterwards and check it exited cleanly."""
    server = factory(*args, **kwargs)
    yield server
    try:
        assert server.stop() == 0, server.log()
    finally:
        server.kill()


def metric_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(sample name, labels, value) of every sample in Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def metric_value(samples, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    return sum(
        value
        for sample, have, value in samples
        if sample == name and all(have.get(k) == v for k, v in labels.items())
    )
