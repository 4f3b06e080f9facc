"""The local gateway process as the engine sees it: adopt or spawn, watch, push routes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from ...core.access import JwtSettings
from ...gateway.auth import internal_token
from ...gateway.server import SHUTDOWN_GRACE as GATEWAY_SHUTDOWN_GRACE
from .files import private_dir, write_private
from .processes import Prober, ProcessHandle, spawn

log = logging.getLogger(__name__)

ADMIN_HEADER = "Authorization"
INTERNAL_TOKEN_HEADER = "X-PrimeHub-Internal-Token"
INTERNAL_USER_HEADER = "X-PrimeHub-User"
# Characters of an invoke path sent as they are: '%' included, so an escape the caller wrote
# (%2F, %2e) reaches the gateway as written and is judged there, never decoded on the way.
PATH_SAFE = "/%?&=:@!$'()*+,;~-._"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class GatewayProcess:
    """Owns the gateway child: one per data dir, surviving a crash of the server."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int,
        python: str,
        prober: Prober,
        extra_args: tuple[str, ...] = (),
        jwt_settings: JwtSettings | None = None,
    ) -> None:
        self.directory = directory
        # The bearer JWT settings the gateway reads from a file (never argv; none are secret).
        self.jwt_config = jwt_settings.model_dump_json(indent=2) if jwt_settings else ""
        self.extra_args = extra_args  # e.g. the hold queue's settings
        self.requested_port = port
        self.python = python
        self.prober = prober
        self.handle: ProcessHandle | None = None
        self.port: int | None = None
        self.token = ""
        self._pushed: str | None = None
        self._lock = asyncio.Lock()
        # Deployment id -> why the gateway refused its entry in the last table it accepted.
        self.rejected: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def _state_file(self) -> Path:
        return self.directory / "gateway.json"

    @property
    def _jwt_file(self) -> Path:
        return self.directory / "jwt.json"

    def _jwt_config_running(self) -> str:
        """The JWT settings the running gateway was started with ('' for none)."""
        try:
            return self._jwt_file.read_text(encoding="utf-8")
        except OSError:
            return ""

    @property
    def _token_file(self) -> Path:
        return self.directory / "gateway.token"

    def _headers(self) -> dict[str, str]:
        return {ADMIN_HEADER: f"Bearer {self.token}"}

    async def start(self) -> None:
        """Adopt the gateway an earlier server left running, or start a new one."""
        private_dir(self.directory)
        state = self._read_state()
        if state and self._token_file.exists():
            handle = ProcessHandle.adopt(state["pid"], state["createTime"])
            if handle is not None:
                self.handle, self.port = handle, state["port"]
                self.token = self._token_file.read_text().strip()
                same_jwt = self._jwt_config_running() == self.jwt_config
                if same_jwt and await self.prober.ok(
                    f"{self.url}/_primehub/health", self._headers()
                ):
                    log.info("adopted the running gateway on %s", self.url)
                    return
                if not same_jwt:
                    log.info("restarting the gateway: its bearer JWT settings changed")
                await handle.terminate(2)
        previous = state["port"] if state else None
        await self._spawn(previous)

    def _read_state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self._state_file.read_text())
        except (OSError, ValueError):
            return None

    async def _spawn(self, previous_port: int | None) -> None:
        port = self.requested_port
        if port == 0 and previous_port and _port_free(previous_port):
            port = previous_port  # keep endpoints stable across restarts
        self.token = secrets.token_urlsafe(32)
        fd = os.open(self._token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.token)
        port_file = self.directory / "gateway.port"
        port_file.unlink(missing_ok=True)
        log_file = self.directory / "gateway.log"
        argv = [
            self.python,
            "-m",
            "primehub_jupyter.gateway",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--admin-token-file",
            str(self._token_file),
            "--port-file",
            str(port_file),
            "--log-file",
            str(log_file),
            *self.extra_args,
        ]
        if self.jwt_config:
            write_private(self._jwt_file, self.jwt_config)
            argv += ["--jwt-config", str(self._jwt_file)]
        else:
            self._jwt_file.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not _is_secret_env(k)}
        self.handle = spawn(argv, log_file=log_file, env=env, cwd=self.directory)
        self._pushed = None
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if self.handle.exit_code() is not None:
                raise RuntimeError(
                    f"the gateway could not start (port {port}); see {log_file}: "
                    + _last_lines(log_file)
                )
            if time.monotonic() > deadline:
                await self.handle.terminate(1)
                raise RuntimeError(f"the gateway did not start within 30 s; see {log_file}")
            await asyncio.sleep(0.05)
        self.port = int(port_file.read_text().strip())
        write_private(
            self._state_file,
            json.dumps(
                {"pid": self.handle.pid, "createTime": self.handle.create_time, "port": self.port}
            ),
        )
        log.info("started the gateway on %s", self.url)

    async def ensure_running(self) -> None:
        """Restart the gateway if it died; the next push re-sends the routes."""
        if self.handle is not None and self.handle.exit_code() is None:
            return
        log.warning("the gateway exited; starting it again")
        await self._spawn(self.port)

    async def push(self, routes: dict[str, Any]) -> bool:
        """Send the routing table if it changed; True once the gateway has it."""
        body = json.dumps({"deployments": routes}, sort_keys=True)
        async with self._lock:
            if body == self._pushed:
                return True
            try:
                async with self.prober.session().put(
                    f"{self.url}/_primehub/routes",
                    data=body,
                    headers={**self._headers(), "Content-Type": "application/json"},
                ) as response:
                    text = await response.text()
                    if response.status != 200:
                        log.error("the gateway refused the routes (%s): %s", response.status, text)
                        return False
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
                log.warning("could not push routes to the gateway: %s", error)
                return False
            self.rejected = _rejected(text)
            for dep_id, reason in self.rejected.items():
                log.error("the gateway refused the routing entry of %r: %s", dep_id, reason)
            self._pushed = body
            return True

    async def load(self) -> dict[str, Any]:
        """`GET /_primehub/load`: per deployment, per predictor in-flight requests, the age
        of the last request and counters; {} when the gateway cannot be asked."""
        try:
            async with self.prober.session().get(
                f"{self.url}/_primehub/load", headers=self._headers()
            ) as response:
                if response.status != 200:
                    return {}
                document = await response.json()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
            return {}
        deployments = document.get("deployments") if isinstance(document, dict) else None
        return deployments if isinstance(deployments, dict) else {}

    def internal_admin_headers(self) -> dict[str, str]:
        """The admin Authorization header, for the gateway's own endpoints (metrics)."""
        return self._headers()

    def internal_headers(self, user: str, deployment_id: str) -> dict[str, str]:
        """Headers that let the control plane call one deployment's endpoint as a signed-in user.

        The token is good for `deployment_id` only (see gateway.auth.internal_token).
        """
        token = internal_token(self.token, deployment_id)
        return {INTERNAL_TOKEN_HEADER: token, INTERNAL_USER_HEADER: user}

    def invoke_url(self, deployment_id: str, path: str) -> URL:
        """The gateway URL of `path` inside a deployment, exactly as given.

        Built with `encoded=True`, so neither yarl nor aiohttp collapses a '..' or decodes an
        escape on the way: the gateway sees the path as written and refuses an unsafe one.
        """
        tail = quote(path.lstrip("/"), safe=PATH_SAFE)
        return URL(f"{self.url}/deployment/{deployment_id}/{tail}", encoded=True)

    async def stop(self, grace: float) -> None:
        """SIGTERM the gateway and wait until it exits (SIGKILL only if it hangs).

        The gateway stops accepting connections, answers 503 on open ones and lets requests in
        flight finish (up to its own shutdown grace) before it exits, so it gets at least that
        long; call this before stopping replicas, so in-flight requests still have them.
        """
        # The state file stays: its port is reused on the next start, so endpoints are stable.
        if self.handle is not None:
            await self.handle.terminate(max(grace, GATEWAY_SHUTDOWN_GRACE + 2.0))


def _rejected(text: str) -> dict[str, str]:
    """The `rejected` map of the gateway's answer to a routes PUT (empty if absent)."""
    try:
        rejected = json.loads(text).get("rejected")
    except (ValueError, AttributeError):
        return {}
    if not isinstance(rejected, dict):
        return {}
    return {str(k): str(v) for k, v in rejected.items()}


def _is_secret_env(name: str) -> bool:
    """Environment our children must not inherit (Jupyter and API tokens)."""
    upper = name.upper()
    return upper in {"JUPYTER_TOKEN", "PRIMEHUB_API_TOKEN", "JPY_API_TOKEN"} or (
        upper.startswith("JUPYTERHUB_") and "TOKEN" in upper
    )


# What a replica inherits from the server's environment: nothing else (tokens, Jupyter's
# variables, cloud credentials), like a container that gets only its spec's env.
_CHILD_ENV_NAMES = frozenset(
    {
        "PATH",
        "LANG",
        "LANGUAGE",
        "TZ",
        "HOME",
        "USER",
        "LOGNAME",
        "TMPDIR",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONNOUSERSITE",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONHASHSEED",
        "PYTHONIOENCODING",
        "PYTHONUTF8",
        "PYTHONWARNINGS",
        "VIRTUAL_ENV",
        "LD_LIBRARY_PATH",
    }
)
_CHILD_ENV_PREFIXES = ("LC_", "OMP_", "MKL_", "OPENBLAS_", "NUMEXPR_", "VECLIB_", "KMP_")


def _inherited(name: str) -> bool:
    return name in _CHILD_ENV_NAMES or (
        name.startswith(_CHILD_ENV_PREFIXES) and "TOKEN" not in name.upper()
    )


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """An allowlist of os.environ (locale, PATH, Python and thread-pool settings) plus `extra`.

    Never a token or anything else of the server's: the replica gets what its spec says.
    """
    env = {k: v for k, v in os.environ.items() if _inherited(k)}
    env.update(extra)
    return env


def _last_lines(path: Path, count: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-count:])
    except OSError:
        return ""


if sys.platform == "win32":  # pragma: no cover
    raise ImportError("the local engine needs a POSIX system")
