"""Gateway test harness: the gateway process, echo backends in killable processes, load loops."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent


@dataclass
class Backend:
    """A running echo backend process."""

    name: str
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        """Base URL, as the engine would list it in the routing table."""
        return f"http://127.0.0.1:{self.port}"

    def wait_for_slow_request(self) -> None:
        """Block until the backend has received a request for /slow."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().strip()
        assert line == "SLOW", f"backend {self.name} said {line!r}"

    def kill(self) -> None:
        """SIGKILL, like a crashed replica: open connections are reset, nothing is drained."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def start_backend(name: str) -> Backend:
    """Start an echo backend on a free loopback port and wait until it answers."""
    process = subprocess.Popen(
        [sys.executable, str(HERE), "--name", name],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode().strip()
    if not line.startswith("PORT "):
        process.kill()
        raise RuntimeError(f"backend {name} did not start: {line!r}")
    backend = Backend(name=name, process=process, port=int(line.split()[1]))
    deadline = time.monotonic() + 15
    while True:
        try:
            requests.get(f"{backend.url}/ping", timeout=2)
            return backend
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                backend.kill()
                raise
            time.sleep(0.05)


class RawServer:
    """A loopback TCP server that answers every connection with fixed bytes, then closes it.

    For replies aiohttp would never produce: a body ended by closing the connection, garbage,
    or no reply at all.
    """

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    received = b""
                    while b"\r\n\r\n" not in received:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        received += chunk
                    conn.sendall(self.reply)

    def close(self) -> None:
        """Stop accepting connections."""
        self.sock.close()


class _SourceAddressAdapter(HTTPAdapter):
    """Connects from a chosen local address (any of 127.0.0.0/8 works on Linux loopback)."""

    def __init__(self, source: str) -> None:
        self._source = (source, 0)
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = self._source
        super().init_poolmanager(*args, **kwargs)


def session_from(address: str) -> requests.Session:
    """A requests session whose connections come from `address` (e.g. 127.0.0.2)."""
    session = requests.Session()
    session.mount("http://", _SourceAddressAdapter(address))
    return session


def post_from(address: str, url: str, **kwargs: Any) -> requests.Response:
    """One POST from the loopback address `address`, as a different client would send it."""
    with session_from(address) as session:
        return session.post(url, timeout=60, **kwargs)


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Gateway:
    """A gateway process started by the tests."""

    process: subprocess.Popen[bytes]
    url: str
    log_file: Path
    port_file: Path
    admin_token: str

    def admin(self, token: str | None = None) -> dict[str, str]:
        """The admin Authorization header (with the right token unless `token` is given)."""
        return {"Authorization": f"Bearer {token or self.admin_token}"}

    def put_routes(self, body: Any, token: str | None = None) -> requests.Response:
        """PUT the routing table (any JSON value, or raw bytes)."""
        if isinstance(body, bytes):
            return requests.put(
                f"{self.url}/_primehub/routes", data=body, headers=self.admin(token), timeout=10
            )
        return requests.put(
            f"{self.url}/_primehub/routes", json=body, headers=self.admin(token), timeout=10
        )

    def route(self, **deployments: dict[str, Any]) -> None:
        """Replace the routing table and require success."""
        response = self.put_routes({"deployments": deployments})
        assert response.status_code == 200, response.text

    def endpoint(self, dep_id: str, path: str = "") -> str:
        """A deployment URL on this gateway."""
        return f"{self.url}/deployment/{dep_id}{path}"


def start_gateway(directory: Path, admin_token: str, *extra: str) -> Gateway:
    """Start `python -m primehub_jupyter.gateway --port 0` and wait until it is healthy."""
    token_file = directory / "admin.token"
    token_file.write_text(admin_token + "\n")
    port_file = directory / "gateway.port"
    log_file = directory / "gateway.log"
    argv = [sys.executable, "-m", "primehub_jupyter.gateway", "--host", "127.0.0.1"]
    argv += ["--port", "0", "--admin-token-file", str(token_file)]
    argv += ["--port-file", str(port_file), "--log-file", str(log_file), *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(argv, cwd=directory, env=env)
    deadline = time.monotonic() + 30
    while not port_file.exists():
        assert process.poll() is None, f"gateway exited: {log_file.read_text()}"
        assert time.monotonic() < deadline, "gateway wrote no port file in 30 s"
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port_file.read_text().strip()}"
    gateway = Gateway(process, url, log_file, port_file, admin_token)
    health = requests.get(f"{gateway.url}/_primehub/health", headers=gateway.admin(), timeout=10)
    assert health.status_code == 200, health.text
    return gateway


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM and wait; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def run_load(
    url: str, total: int, concurrency: int, at: int, action: Callable[[], None]
) -> list[tuple[int, str]]:
    """POST `total` requests, `concurrency` at a time; call `action` once `at` have finished.

    Returns (status, backend name or error) per request, in completion order.
    """
    results: list[tuple[int, str]] = []
    lock = threading.Lock()
    reached = threading.Event()
    local = threading.local()

    def one(index: int) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        try:
            response = session.post(url, data=b'{"data": {"ndarray": [[1, 2]]}}', timeout=30)
            outcome = (response.status_code, response.headers.get("X-Backend", response.text))
        except requests.RequestException as exc:
            outcome = (0, repr(exc))
        with lock:
            results.append(outcome)
            if len(results) == at:
                reached.set()

    with ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(one, i) for i in range(total)]
        assert reached.wait(60), "the load loop stalled"
        action()
        for future in futures:
            future.result()
    return results


async def _serve(name: str) -> None:
    from aiohttp import web

    async def echo(request: web.BaseRequest) -> web.StreamResponse:
        body = await request.content.read()  # no 1 MiB cap: the tests send larger bodies
        if request.path == "/slow":
            # Tells the test (on stdout) that the request is in flight, then answers late: after
            # `seconds`, or once the file `release` exists (at most a minute).
            print("SLOW", flush=True)
            if "release" in request.query:
                release = Path(request.query["release"])
                for _ in range(6000):
                    if release.exists():
                        break
                    await asyncio.sleep(0.01)
            else:
                await asyncio.sleep(float(request.query.get("seconds", "1")))
        if request.query.get("hold") == name:
            # Only the backend named by `hold` waits (a slow shadow beside a quick primary):
            # says HELD on stdout, then answers once the file `release` exists (at most a minute).
            print("HELD", flush=True)
            release = Path(request.query["release"])
            for _ in range(6000):
                if release.exists():
                    break
                await asyncio.sleep(0.01)
        if "delay" in request.query:  # keeps requests in flight while a test kills this process
            await asyncio.sleep(float(request.query["delay"]))
        if request.path == "/stream":
            # A chunked response larger than the gateway's buffering threshold.
            size = int(request.query.get("size", "0"))
            response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            block = bytes(range(256)) * 256
            sent = 0
            while sent < size:
                piece = block[: min(len(block), size - sent)]
                await response.write(piece)
                sent += len(piece)
            await response.write_eof()
            return response
        payload = {
            "name": name,
            "method": request.method,
            "path": request.raw_path.partition("?")[0],
            "query": request.raw_path.partition("?")[2],
            "headers": [[k, v] for k, v in request.headers.items()],
            "body": body.decode("latin-1"),
        }
        status = int(request.headers.get("X-Echo-Status", "200"))
        return web.Response(
            status=status,
            body=json.dumps(payload),
            headers={"Content-Type": "application/json", "X-Backend": name},
        )

    # Bodies are echoed as they arrived, compressed or not (the tests check what was sent).
    server = web.Server(echo, access_log=None, auto_decompress=False)
    runner = web.ServerRunner(server)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    options = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(options.name))
