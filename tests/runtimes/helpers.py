"""A real model-server process per bundle, and the tiny data the runtime tests train on."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import yaml

REPO = Path(__file__).resolve().parents[2]
PREDICT = "/api/v1.0/predictions"
# Generous: only a hung server ever waits this long; nothing asserts on durations.
DEADLINE = 120.0


class Served:
    """`python -m primehub_jupyter.serving BUNDLE --fd N` on 127.0.0.1, until `stop()`."""

    def __init__(self, bundle: Path, workdir: Path, env: dict[str, str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.bundle = bundle
        self.log_file = workdir / "server.log"
        self.termination_log = workdir / "termination.log"
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        command = [
            sys.executable,
            "-m",
            "primehub_jupyter.serving",
            str(bundle),
            "--fd",
            str(listener.fileno()),
            "--log-file",
            str(self.log_file),
            "--termination-log",
            str(self.termination_log),
        ]
        # Not started from the repository, so nothing imports from the working directory.
        self.proc = subprocess.Popen(
            command,
            cwd=workdir,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
            pass_fds=(listener.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        listener.close()
        self._wait_ready()

    def log(self) -> str:
        """What the server wrote so far."""
        return self.log_file.read_text() if self.log_file.exists() else ""

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                why = self.termination_log.read_text() if self.termination_log.exists() else ""
                pytest.fail(f"server exited with {self.proc.returncode}: {why}\n{self.log()}")
            try:
                # The socket listens before the model is loaded: the answer comes once it is.
                requests.get(self.url + "/health/ping", timeout=DEADLINE)
                return
            except requests.RequestException:
                time.sleep(0.05)
        pytest.fail(f"server not ready:\n{self.log()}")

    def post(self, payload: Any, path: str = PREDICT) -> requests.Response:
        """POST a JSON document."""
        return requests.post(self.url + path, json=payload, timeout=60)

    def predict(self, rows: Any) -> np.ndarray:
        """Send rows as a Seldon ndarray and return the answer's ndarray."""
        response = self.post({"data": {"ndarray": np.asarray(rows).tolist()}})
        assert response.status_code == 200, response.text
        return np.asarray(response.json()["data"]["ndarray"])

    def stop(self) -> int:
        """SIGTERM and wait; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def serve(bundle: Path, workdir: Path, **kwargs: Any):
    """Generator body for a fixture: yield a Served, then stop it and check it stopped cleanly."""
    server = Served(bundle, workdir, **kwargs)
    try:
        yield server
    finally:
        code = server.stop()
    assert code == 0, server.log()


def descriptor(bundle: Path) -> dict[str, Any]:
    """bundle.yaml as a dict."""
    return yaml.safe_load((bundle / "bundle.yaml").read_text())


def iris() -> tuple[np.ndarray, np.ndarray]:
    """Iris features and integer labels (150 rows, 4 features, 3 classes)."""
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    return X, y
