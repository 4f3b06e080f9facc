"""Echo backends for the gateway tests: real HTTP servers in their own (killable) processes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

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


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _serve(name: str) -> None:
    from aiohttp import web

    async def echo(request: web.BaseRequest) -> web.StreamResponse:
        body = await request.content.read()  # no 1 MiB cap: the tests send larger bodies
        if request.path == "/slow":
            # Tells the test (on stdout) that the request is in flight, then answers late.
            print("SLOW", flush=True)
            await asyncio.sleep(float(request.query.get("seconds", "1")))
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

    server = web.Server(echo, access_log=None)
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
