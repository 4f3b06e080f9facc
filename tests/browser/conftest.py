"""A real `jupyter lab` with the embedded engine, and headless Debian chromium driving it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
import yaml

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OWNER = "alice"
BUNDLE_DIR = "iris-bundle"

#: Groups of the test server: one enabled, one disabled (it must not be offered).
GROUPS = {
    "admins": [OWNER],
    "instanceTypes": [
        {"name": "cpu-0.5", "description": "half a core", "cpu": 0.5, "memory": "512Mi"},
        {"name": "cpu-1", "cpu": 1, "memory": "1Gi"},
    ],
    "groups": [
        {"name": "everyone", "instanceTypes": ["cpu-0.5", "cpu-1"]},
        {
            "name": "default",
            "enabledDeployment": True,
            "members": [OWNER],
            "quota": {"cpu": 4, "memory": "8Gi", "maxDeployments": 10},
        },
        {"name": "research", "enabledDeployment": False, "members": [OWNER]},
    ],
}


def pytest_configure(config: pytest.Config) -> None:
    # Registered here too, so that `--strict-markers` accepts it wherever pyproject stands.
    config.addinivalue_line("markers", "browser: drives JupyterLab in headless chromium")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Lab:
    """A running `jupyter lab` and what the tests need to reach it."""

    url: str
    token: str
    root_dir: Path
    data_dir: Path
    log_file: Path
    process: subprocess.Popen[bytes]

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Call the PrimeHub REST API with the server's token (for setup and checks)."""
        response = requests.request(
            method,
            f"{self.url}primehub/api/{path}",
            headers={"Authorization": f"token {self.token}"},
            json=body,
            timeout=30,
        )
        assert response.status_code < 300, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        return response.json() if response.content else None

    def lab_url(self, path: str = "lab") -> str:
        return f"{self.url}{path}?token={self.token}&reset"


def _fresh_labextension(home: Path) -> dict[str, str]:
    """Serve the labextension built in this checkout, not a copy an earlier install left.

    An editable install copies the built assets into the environment once; `jlpm build`
    afterwards updates only primehub_jupyter/labextension. JUPYTER_PATH comes first in the
    labextension search path, so a link there makes the lab load what the sources say now.
    """
    built = REPO / "primehub_jupyter" / "labextension"
    if not (built / "package.json").is_file():
        return {}
    labextensions = home / "jupyter-path" / "labextensions"
    labextensions.mkdir(parents=True, exist_ok=True)
    link = labextensions / "primehub-jupyter"
    if not link.exists():
        link.symlink_to(built, target_is_directory=True)
    return {"JUPYTER_PATH": str(home / "jupyter-path")}


def start_lab(home: Path, *, server_extension: bool = True) -> Lab:
    """Start `jupyter lab` on 127.0.0.1 (free port, a token) with its own data and root dirs.

    `server_extension=False` disables primehub_jupyter's server extension, as a user whose
    Python environment lacks it would have: the frontend must say how to install it.
    """
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    import primehub_jupyter

    root_dir = home / "root"
    data_dir = home / "data"
    root_dir.mkdir()
    data_dir.mkdir()
    (data_dir / "config.yaml").write_text(yaml.safe_dump(GROUPS, sort_keys=False))
    if server_extension:
        X, y = load_iris(return_X_y=True)
        model = LogisticRegression(max_iter=1000).fit(X, y)
        primehub_jupyter.package(model, root_dir / BUNDLE_DIR, sample_input=X[:1])

    token = secrets.token_hex(16)
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("JUPYTER_", "PRIMEHUB_", "JUPYTERHUB_"))
    }
    config_dir = home / "config"
    env.update(
        {
            "JUPYTER_CONFIG_DIR": str(config_dir),
            "JUPYTER_DATA_DIR": str(home / "jupyter-data"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        }
    )
    env.update(_fresh_labextension(home))
    # No "get notified about Jupyter news?" toast over the screenshots; `window.jupyterapp`
    # lets a test switch the theme the way the Settings menu does.
    labconfig = config_dir / "labconfig"
    labconfig.mkdir(parents=True)
    (labconfig / "page_config.json").write_text(
        json.dumps(
            {
                "disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True},
                "exposeAppInBrowser": True,
            }
        )
    )
    if not server_extension:
        (config_dir / "jupyter_server_config.json").write_text(
            json.dumps({"ServerApp": {"jpserver_extensions": {"primehub_jupyter": False}}})
        )
    log_file = home / "jupyter-lab.log"
    args = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        "--ServerApp.allow_root=True",
        f"--ServerApp.root_dir={root_dir}",
        f"--PrimeHubApp.data_dir={data_dir}",
        f"--PrimeHubApp.owner={OWNER}",
        "--PrimeHubApp.bcrypt_rounds=4",
        "--LocalEngine.drain_seconds=0.2",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    server = Lab(f"http://127.0.0.1:{port}/", token, root_dir, data_dir, log_file, process)
    try:
        _wait_until_up(server, "primehub/api/me" if server_extension else "api/status")
    except BaseException:
        _stop(process)
        raise
    print(f"\njupyter lab for the browser tests: {server.url} (log: {log_file})")
    return server


# Package scope, not session: Playwright's sync API holds an event loop on the main thread
# while it runs, so it must be stopped before the rest of the suite (pytest-jupyter, asyncio).
@pytest.fixture(scope="package")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The lab most tests share, with the server extension and the embedded engine."""
    server = start_lab(tmp_path_factory.mktemp("lab"))
    try:
        yield server
    finally:
        _stop(server.process)


def _wait_until_up(server: Lab, probe: str, limit: float = 120) -> None:
    """Poll until `probe` answers 200; the limit only bounds a hang, it measures nothing."""
    deadline = time.monotonic() + limit
    last: Exception | str = "no answer"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        try:
            response = requests.get(
                f"{server.url}{probe}",
                headers={"Authorization": f"token {server.token}"},
                timeout=5,
            )
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except requests.RequestException as error:
            last = error
        time.sleep(0.25)
    log = server.log_file.read_text(errors="replace")[-4000:]
    raise AssertionError(f"jupyter lab did not come up ({last}); its log ends with:\n{log}")


def stop_lab(server: Lab) -> None:
    """Stop a lab started by `start_lab`; its gateway and replicas stop with it."""
    _stop(server.process)
    # The engine's processes are detached (they outlive a crashed server on purpose): if the
    # lab could not stop them, nothing of this test may keep running after it.
    for proc in psutil.process_iter(["cmdline"]):
        if str(server.data_dir) in " ".join(proc.info["cmdline"] or []):
            with contextlib.suppress(psutil.Error):
                proc.kill()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    # SIGTERM is Jupyter's clean stop; SIGINT would ask for a confirmation on stdin first.
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(60)
        return
    process.kill()
    process.wait(10)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go: test-results/browser/ in the repository (git-ignored)."""
    path = REPO / "test-results" / "browser"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, driven by Playwright (never a downloaded browser)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


HTTP_ERROR = re.compile(r"^Failed to load resource: the server responded with a status of (\d+)")


@dataclass
class ConsoleLog:
    """Console errors and uncaught exceptions of a page.

    Chromium also logs every 4xx/5xx answer as a console error. A test that provokes one on
    purpose (a 422 to show a field's message) declares it with `allow_http`; any other stays
    an error.
    """

    errors: list[str] = field(default_factory=list)
    allowed: list[tuple[int, re.Pattern[str]]] = field(default_factory=list)

    def allow_http(self, status: int, url: str) -> None:
        """Expect answers with this status from URLs matching this pattern."""
        self.allowed.append((status, re.compile(url)))

    def on_console(self, message: Any) -> None:
        if message.type != "error":
            return
        match = HTTP_ERROR.match(message.text)
        url = (message.location or {}).get("url", "")
        if match and any(
            int(match.group(1)) == status and pattern.search(url)
            for status, pattern in self.allowed
        ):
            return
        self.errors.append(f"console.error: {message.text} ({url})")

    def on_page_error(self, error: Any) -> None:
        self.errors.append(f"uncaught: {error}")


@pytest.fixture
def console() -> ConsoleLog:
    return ConsoleLog()


@contextlib.contextmanager
def open_page(browser: Any, lab: Lab, console: ConsoleLog) -> Iterator[Any]:
    """A fresh browser context on JupyterLab, with the clipboard allowed."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=lab.url.rstrip("/"))
    page = context.new_page()
    page.on("console", console.on_console)
    page.on("pageerror", console.on_page_error)
    page.set_default_timeout(30_000)
    try:
        page.goto(lab.lab_url())
        page.wait_for_selector("#jp-main-dock-panel", state="attached", timeout=60_000)
        yield page
    finally:
        context.close()


@pytest.fixture
def page(
    browser: Any, lab: Lab, console: ConsoleLog, artifacts: Path, request: Any
) -> Iterator[Any]:
    """A fresh page on the shared lab; the test asserts on `console` at its end."""
    with open_page(browser, lab, console) as page:
        yield page
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            with contextlib.suppress(Exception):
                path = artifacts / f"{request.node.name}-failure.png"
                page.screenshot(path=str(path), full_page=True)
                print(f"screenshot of the failure: {path}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(autouse=True)
def jp_asyncio_loop() -> Iterator[None]:
    """Overrides pytest-jupyter's: no in-process server here, Playwright owns the event loop."""
    yield None


@pytest.fixture(autouse=True)
def jp_server_cleanup() -> Iterator[None]:
    """Overrides pytest-jupyter's: the server is a separate process, stopped by `lab`."""
    yield
