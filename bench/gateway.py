"""Gateway overhead: requests/s and latency straight to a replica vs through the local gateway."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAYLOAD = b'{"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}}'
PREDICT_PATH = "/api/v1.0/predictions"
DEPLOYMENT = "bench-gw"
# Stand-in model response of the size a 3-class predict_proba answer has.
ECHO_RESPONSE = b'{"data":{"names":["t:0","t:1","t:2"],"ndarray":[[0.97,0.02,0.01]]},"meta":{}}'
ECHO_LENGTH = str(len(ECHO_RESPONSE)).encode()
WRK_SCRIPT = """wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


@dataclass
class Result:
    """One load run."""

    label: str
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    # CPU time per request of the replica and the gateway processes, in microseconds: unlike
    # requests/s this hardly moves when other work shares the machine.
    replica_us: float = 0.0
    gateway_us: float = 0.0
    # Cores kept busy by processes outside this benchmark during the run (other work on a
    # shared machine): when this is large, requests/s says more about the neighbours.
    others_cores: float = 0.0


def machine_busy_seconds() -> float:
    """CPU seconds all processes used since boot (Linux /proc/stat), 0 elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(f) for f in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_seconds() -> float:
    """CPU seconds used by finished child processes (the load generator, wrk)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (model server workers)."""
    import psutil

    try:
        process = psutil.Process(pid)
        total = sum(process.cpu_times()[:2])
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += sum(child.cpu_times()[:2])
        return total
    except psutil.Error:
        return 0.0


def free_port() -> int:
    """A free loopback port (for the backends that need a port number up front)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float, process: subprocess.Popen[bytes]) -> None:
    """Poll `url` until any HTTP answer arrives."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


# --- the stand-in backend: a raw ASGI app on uvicorn, the model server's own stack ---------------


async def echo_app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    """Reads the body and answers a fixed prediction-sized JSON document."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", ECHO_LENGTH),
            ],
        }
    )
    await send({"type": "http.response.body", "body": ECHO_RESPONSE})


def run_echo_backend(port: int) -> None:
    """Serve `echo_app` (invoked in a child process of this script)."""
    import uvicorn

    uvicorn.run(
        echo_app,
        host="127.0.0.1",
        port=port,
        access_log=False,
        log_level="warning",
        http="httptools",
        loop="uvloop",
        lifespan="off",
    )


def start_backend(kind: str, workdir: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    """Start the replica the gateway routes to; returns the process and its base URL."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if kind == "echo":
        cmd = [sys.executable, __file__, "--serve-echo", str(port)]
        ready = f"http://127.0.0.1:{port}/"
    else:
        bundle = workdir / "bundle"
        package_model(bundle)
        cmd = [sys.executable, "-m", "primehub_jupyter.serving", str(bundle), "--port", str(port)]
        cmd += ["--no-access-log"]
        if workers > 1:
            cmd += ["--workers", str(workers)]
        ready = f"http://127.0.0.1:{port}/health/ping"
    with open(workdir / "replica.log", "ab") as log:
        process = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(ready, 60, process)
    except RuntimeError:
        process.kill()
        sys.stderr.write((workdir / "replica.log").read_text(errors="replace")[-4000:])
        raise
    return process, f"http://127.0.0.1:{port}"


def package_model(path: Path) -> None:
    """Fit a small iris classifier and package it as a bundle."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    if str(REPO) not in sys.path:  # run as `python bench/gateway.py` from a checkout
        sys.path.insert(0, str(REPO))
    from primehub_jupyter.serving.packaging import package

    features, target = load_iris(return_X_y=True)
    package(LogisticRegression(max_iter=500).fit(features, target), str(path))


def start_gateway(workdir: Path, replica: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start the gateway on a free port and route DEPLOYMENT to `replica`."""
    token = secrets.token_urlsafe(24)
    token_file = workdir / "admin-token"
    token_file.write_text(token)
    port_file = workdir / "gateway.port"
    cmd = [sys.executable, "-m", "primehub_jupyter.gateway", "--port", "0"]
    cmd += ["--admin-token-file", str(token_file), "--port-file", str(port_file)]
    cmd += ["--log-file", str(workdir / "gateway.log")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(cmd, env=env, cwd=REPO)
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("gateway did not start; see " + str(workdir / "gateway.log"))
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port_file.read_text().strip()}"
    route = {"phase": "Deployed", "message": "", "replicas": [{"name": "bench-0", "url": replica}]}
    routes = {"deployments": {DEPLOYMENT: route}}
    put = urllib.request.Request(
        f"{base}/_primehub/routes",
        data=json.dumps(routes).encode(),
        method="PUT",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    urllib.request.urlopen(put, timeout=10).close()
    return process, f"{base}/deployment/{DEPLOYMENT}"


# --- load generators -----------------------------------------------------------------------------


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:  # e.g. "-nanus" when no request completed
        print(f"warning: cannot read wrk latency {text!r}", file=sys.stderr)
        return float("nan")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}[unit]


def load_wrk(label: str, url: str, seconds: float, connections: int, workdir: Path) -> Result:
    """Drive `url` with wrk (one thread: the machine has two cores to share with the servers)."""
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT.format(body=PAYLOAD.decode()))
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    cmd += ["-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 60)
    text = out.stdout
    if "requests in" not in text:
        raise RuntimeError(f"wrk printed no result:\n{text}\n{out.stderr}")
    total = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (
        sum(int(g) for g in sock.groups()) if sock else 0
    )
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    return Result(label, total, errors, rps, p50, p99)


async def _python_load(url: str, seconds: float, connections: int, cap: int) -> Result:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline and len(latencies) + errors < cap:
                started = time.perf_counter()
                try:
                    async with session.post(url, data=PAYLOAD, headers=headers) as response:
                        await response.read()
                        ok = response.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    count = len(latencies)

    def pct(q: float) -> float:
        return latencies[min(count - 1, int(q * count))] * 1000 if count else float("nan")

    return Result("", count + errors, errors, count / elapsed, pct(0.50), pct(0.99))


def load_python(label: str, url: str, seconds: float, connections: int) -> Result:
    """Bounded asyncio load generator, used when wrk is not installed (it is the slower one)."""
    result = asyncio.run(_python_load(url, seconds, connections, cap=2_000_000))
    result.label = label
    return result


# --- the run -------------------------------------------------------------------------------------


@contextlib.contextmanager
def stopping(*processes: subprocess.Popen[bytes]) -> Iterator[None]:
    """Terminate the started processes whatever happens."""
    try:
        yield
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def choose_backend(requested: str) -> str:
    """`auto`: the real model server when it is installed, else the stand-in."""
    if requested != "auto":
        return requested
    serving = REPO / "primehub_jupyter" / "serving" / "__main__.py"
    return "model" if serving.exists() else "echo"


def main(argv: list[str] | None = None) -> int:
    """Measure direct vs gateway in one run and print both and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=("auto", "model", "echo"), default="auto")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; medians shown")
    parser.add_argument("--workers", type=int, default=1, help="model server workers")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--serve-echo", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_echo:
        run_echo_backend(args.serve_echo)
        return 0
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"
    backend = choose_backend(args.backend)
    warmup = min(2.0, args.duration)

    pids: dict[str, int] = {}

    def load(label: str, url: str, seconds: float, workdir: Path) -> Result:
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        machine, generator_cpu, self_cpu = machine_busy_seconds(), children_seconds(), _self()
        started = time.perf_counter()
        if generator == "wrk":
            result = load_wrk(label, url, seconds, args.connections, workdir)
        else:
            result = load_python(label, url, seconds, args.connections)
        elapsed = time.perf_counter() - started
        used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        ours = sum(used.values()) + children_seconds() - generator_cpu + _self() - self_cpu
        result.others_cores = max(0.0, machine_busy_seconds() - machine - ours) / elapsed
        per_request = 1e6 / max(1, result.requests)
        result.replica_us = used.get("replica", 0.0) * per_request
        result.gateway_us = used.get("gateway", 0.0) * per_request
        return result

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        workdir = Path(tmp)
        replica, replica_url = start_backend(backend, workdir, args.workers)
        with stopping(replica):
            gateway, gateway_url = start_gateway(workdir, replica_url)
            pids.update(replica=replica.pid, gateway=gateway.pid)
            with stopping(gateway):
                direct = replica_url + PREDICT_PATH
                proxied = gateway_url + PREDICT_PATH
                load("warmup", direct, warmup, workdir)
                load("warmup", proxied, warmup, workdir)
                runs: dict[str, list[Result]] = {"direct": [], "gateway": []}
                for _ in range(args.rounds):
                    runs["direct"].append(load("direct", direct, args.duration, workdir))
                    runs["gateway"].append(load("gateway", proxied, args.duration, workdir))
    print(
        f"backend={backend} generator={generator} connections={args.connections} "
        f"duration={args.duration:g}s rounds={args.rounds} cpus={os.cpu_count()} "
        f"loadavg-before={load_before:.2f}"
    )
    print(
        f"{'target':<10}{'requests':>10}{'errors':>8}{'req/s':>11}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'replica us/req':>16}{'gateway us/req':>16}{'other cores':>13}"
    )
    summary = {}
    for label, results in runs.items():
        rps = statistics.median(r.rps for r in results)
        p50 = statistics.median(r.p50_ms for r in results)
        p99 = statistics.median(r.p99_ms for r in results)
        total = sum(r.requests for r in results)
        errors = sum(r.errors for r in results)
        replica_us = statistics.median(r.replica_us for r in results)
        gateway_us = statistics.median(r.gateway_us for r in results)
        others = statistics.median(r.others_cores for r in results)
        summary[label] = (rps, p99)
        print(
            f"{label:<10}{total:>10}{errors:>8}{rps:>11.0f}{p50:>9.2f}{p99:>9.2f}"
            f"{replica_us:>16.0f}{gateway_us:>16.0f}{others:>13.2f}"
        )
    if any(r.others_cores > 0.2 for results in runs.values() for r in results):
        print("note: other processes used the CPUs during the run; req/s and ratio are noisy")
    ratio = summary["gateway"][0] / summary["direct"][0]
    verdict = "meets" if ratio >= 0.8 else "BELOW"
    print(f"gateway/direct throughput ratio: {ratio:.2f} ({verdict} the 0.80 target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
