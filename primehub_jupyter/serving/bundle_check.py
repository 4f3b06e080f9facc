"""`primehub-deploy package test`: serve a bundle locally and check its recorded sample."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .bundle import load_bundle
from .errors import BundleError

PREDICT_PATH = "/api/v1.0/predictions"
DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-6


@dataclass
class CheckResult:
    """What `check_bundle` saw: the request, both responses and the differences."""

    request: dict[str, Any]
    expected: dict[str, Any] | None
    actual: Any = None
    status: int | None = None
    differences: list[str] = field(default_factory=list)
    error: str = ""
    server_log: str = ""

    @property
    def ok(self) -> bool:
        """True when the server answered 200 with the recorded response."""
        return not self.error and self.status == 200 and not self.differences


def compare_responses(
    expected: Any, actual: Any, *, rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL
) -> list[str]:
    """Where `actual` differs from `expected`; numbers within rtol/atol are equal.

    The top-level `meta` is ignored: it carries per-request values (puid, tags, metrics).
    """
    if isinstance(expected, dict) and isinstance(actual, dict):
        expected = {k: v for k, v in expected.items() if k != "meta"}
        actual = {k: v for k, v in actual.items() if k != "meta"}
    differences: list[str] = []
    _compare(expected, actual, "response", rtol, atol, differences)
    return differences


def _compare(
    expected: Any, actual: Any, where: str, rtol: float, atol: float, out: list[str]
) -> None:
    if len(out) >= 20:  # enough to see what is wrong
        return
    if _is_number(expected) and _is_number(actual):
        if not math.isclose(float(expected), float(actual), rel_tol=rtol, abs_tol=atol):
            out.append(f"{where}: expected {expected!r}, got {actual!r}")
        return
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual)):
            if key not in actual:
                out.append(f"{where}.{key}: missing from the response")
            elif key not in expected:
                out.append(f"{where}.{key}: not in the recorded response")
            else:
                _compare(expected[key], actual[key], f"{where}.{key}", rtol, atol, out)
        return
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            out.append(f"{where}: expected {len(expected)} items, got {len(actual)}")
            return
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            _compare(want, got, f"{where}[{index}]", rtol, atol, out)
        return
    if expected != actual:
        out.append(f"{where}: expected {expected!r}, got {actual!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_bundle(
    bundle: str | os.PathLike[str],
    *,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    timeout: float = 180.0,
) -> CheckResult:
    """Start the model server on 127.0.0.1 (a free port), send the bundle's sample request and
    compare the answer with the recorded response. Raises BundleError for a bundle that cannot
    be checked (not a bundle, no sample)."""
    import requests

    bundle_dir = Path(bundle).expanduser().absolute()
    descriptor = load_bundle(bundle_dir)
    if descriptor.sample is None or descriptor.sample.response is None:
        raise BundleError(
            f"{bundle_dir} records no sample request and response; package the model again "
            "with sample_input="
        )
    result = CheckResult(request=descriptor.sample.request, expected=descriptor.sample.response)
    with tempfile.TemporaryDirectory(prefix="primehub-package-test-") as scratch:
        log_path = Path(scratch) / "server.log"
        termination = Path(scratch) / "termination-log"
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        command = [
            sys.executable,
            "-m",
            "primehub_jupyter.serving",
            str(bundle_dir),
            "--fd",
            str(listener.fileno()),
            "--termination-log",
            str(termination),
            "--no-access-log",
        ]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                pass_fds=(listener.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        listener.close()  # the server holds its own copy
        try:
            if _wait_ready(process, url, timeout, result, termination):
                response = requests.post(url + PREDICT_PATH, json=result.request, timeout=timeout)
                result.status = response.status_code
                try:
                    result.actual = response.json()
                except ValueError:
                    result.actual = response.text
                if response.status_code != 200:
                    result.error = f"the server answered HTTP {response.status_code}"
                else:
                    result.differences = compare_responses(
                        result.expected, result.actual, rtol=rtol, atol=atol
                    )
        except requests.RequestException as exc:
            result.error = f"the request failed: {exc}"
        finally:
            _stop(process)
            result.server_log = log_path.read_text(encoding="utf-8", errors="replace")
    return result


def _wait_ready(
    process: subprocess.Popen[bytes],
    url: str,
    timeout: float,
    result: CheckResult,
    termination: Path,
) -> bool:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            why = termination.read_text().strip() if termination.exists() else ""
            result.error = f"the model server exited with code {process.returncode}" + (
                f": {why}" if why else ""
            )
            return False
        try:
            # The socket listens before the model is loaded; the answer comes once it is.
            requests.get(url + "/health/ping", timeout=max(deadline - time.monotonic(), 1.0))
            return True
        except requests.RequestException:
            time.sleep(0.1)
    result.error = f"the model server was not ready within {timeout:.0f} s"
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
