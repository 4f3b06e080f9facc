"""Cost of bearer JWTs at the gateway: a cached valid token against no auth and HTTP Basic."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import bcrypt

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.jwt_helpers
from gateway import PAYLOAD, REPO, _ms, cpu_seconds, start_backend, stopping  # bench/gateway.py

from tests.jwt_helpers import AUDIENCE, Issuer, ec_key, rsa_key, settings_file

CLIENT_TOKEN = "bench-" + secrets.token_urlsafe(24)


def micro(issuer: Issuer, jwks: Path, count: int) -> None:
    """In-process: microseconds per check of a cached token, and of a first validation."""
    from primehub_jupyter.core.access import JwtSettings
    from primehub_jupyter.gateway.auth import ClientAuthenticator, FailureLimiter
    from primehub_jupyter.gateway.jwt_auth import BearerAuthenticator
    from primehub_jupyter.gateway.routes import parse_routes

    async def run() -> None:
        settings = JwtSettings(issuer=issuer.claims()["iss"], audience=AUDIENCE, jwks=str(jwks))
        bearer = BearerAuthenticator(settings, FailureLimiter(burst=10**9), refresh_interval=0)
        loading = bearer.keys.refresh()
        assert loading is not None
        await loading
        for kid in ("rsa-1", "ec-1"):
            tokens = [issuer.token(kid) for _ in range(200)]
            started = time.perf_counter()
            for token in tokens:
                await bearer.authenticate(token, "127.0.0.1")
            first = (time.perf_counter() - started) / len(tokens) * 1e6
            token = tokens[0]
            started = time.perf_counter()
            for _ in range(count):
                await bearer.authenticate(token, "127.0.0.1")
            cached = (time.perf_counter() - started) / count * 1e6
            alg = "RS256" if kid.startswith("rsa") else "ES256"
            print(f"{alg}: first validation {first:8.1f} us/token, cached {cached:6.2f} us/token")
        bearer.close()
        # The peer: an HTTP Basic client's cached check on the same machine, same run.
        hashed = bcrypt.hashpw(CLIENT_TOKEN.encode(), bcrypt.gensalt(rounds=4)).decode()
        entry = {"accessType": "private", "clients": {"app": hashed}, "replicas": []}
        route = parse_routes({"deployments": {"b": entry}})[0]["b"]
        basic = ClientAuthenticator()
        header = "Basic " + base64.b64encode(f"app:{CLIENT_TOKEN}".encode()).decode()
        assert await basic.authenticate(route, header, "127.0.0.1") == "app"
        started = time.perf_counter()
        for _ in range(count):
            await basic.authenticate(route, header, "127.0.0.1")
        cached = (time.perf_counter() - started) / count * 1e6
        print(f"Basic: cached {cached:6.2f} us/credential (bcrypt cost 4 for the first)")
        basic.close()

    asyncio.run(run())


def start_gateway(workdir: Path, replica: str, config: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The gateway with bearer JWTs on; routes `pub`, `basic` and `jwt` to `replica`."""
    token = secrets.token_urlsafe(24)
    (workdir / "admin-token").write_text(token)
    port_file = workdir / "gateway.port"
    cmd = [sys.executable, "-m", "primehub_jupyter.gateway", "--port", "0"]
    cmd += ["--admin-token-file", str(workdir / "admin-token"), "--port-file", str(port_file)]
    cmd += ["--log-file", str(workdir / "gateway.log"), "--jwt-config", str(config)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(cmd, env=env, cwd=REPO)
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("gateway did not start; see " + str(workdir / "gateway.log"))
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port_file.read_text().strip()}"
    entry = {"phase": "Deployed", "replicas": [{"name": "bench-0", "url": replica}]}
    hashed = bcrypt.hashpw(CLIENT_TOKEN.encode(), bcrypt.gensalt(rounds=12)).decode()
    private = {**entry, "accessType": "private", "group": "team-a"}
    routes = {"pub": entry, "basic": {**private, "clients": {"app": hashed}}, "jwt": private}
    put = urllib.request.Request(
        f"{base}/_primehub/routes",
        data=json.dumps({"deployments": routes}).encode(),
        method="PUT",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    urllib.request.urlopen(put, timeout=10).close()
    return process, base


def wrk(url: str, header: str, seconds: float, connections: int, workdir: Path, pid: int) -> str:
    """One wrk run; a summary line of req/s, p50, p99 and the gateway's CPU per request."""
    script = workdir / "post.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = '{PAYLOAD.decode()}'"]
    lines.append('wrk.headers["Content-Type"] = "application/json"')
    if header:
        lines.append(f'wrk.headers["Authorization"] = "{header}"')
    script.write_text("\n".join(lines) + "\n")
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    cpu_before = cpu_seconds(pid)
    out = subprocess.run(
        [*cmd, "-s", str(script), url], capture_output=True, text=True, timeout=seconds + 60
    )
    cpu = cpu_seconds(pid) - cpu_before
    text = out.stdout
    total = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = int(non2xx.group(1)) if non2xx else 0
    # CPU per request hardly moves when other work shares the machine; req/s does.
    gateway_us = cpu / max(1, total) * 1e6
    return (
        f"{rps:7,.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  gateway {gateway_us:5.1f} "
        f"us/req  non-2xx {errors}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    parser.add_argument("--count", type=int, default=100_000, help="cached checks timed in-process")
    args = parser.parse_args(argv)
    issuer = Issuer()
    issuer.add("rsa-1", rsa_key())
    issuer.add("ec-1", ec_key())
    with tempfile.TemporaryDirectory(prefix="bench-jwt-") as tmp:
        workdir = Path(tmp)
        jwks = workdir / "jwks.json"
        issuer.write(jwks)
        micro(issuer, jwks, args.count)
        config = settings_file(workdir / "jwt.json", str(jwks))
        backend, replica = start_backend("echo", workdir, 1)
        gateway, base = start_gateway(workdir, replica, config)
        with stopping(gateway, backend):
            basic = "Basic " + base64.b64encode(f"app:{CLIENT_TOKEN}".encode()).decode()
            cases = [
                ("public, no auth", "pub", ""),
                ("private, Basic (cached)", "basic", basic),
                ("private, bearer RS256 (cached)", "jwt", f"Bearer {issuer.token('rsa-1')}"),
            ]
            for _, dep, header in cases:  # warm: the first check of a credential is not cached
                url = f"{base}/deployment/{dep}/api/v1.0/predictions"
                request = urllib.request.Request(url, data=PAYLOAD, method="POST")
                if header:
                    request.add_header("Authorization", header)
                urllib.request.urlopen(request, timeout=30).close()
            for round_ in range(args.rounds):
                for label, dep, header in cases:
                    url = f"{base}/deployment/{dep}/api/v1.0/predictions"
                    line = wrk(url, header, args.duration, args.connections, workdir, gateway.pid)
                    print(f"round {round_ + 1}  {label:32} {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
