"""Public latency through the gateway while a private deployment is flooded with bad passwords."""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import secrets
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import bcrypt
import requests
from requests.adapters import HTTPAdapter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway import start_backend, start_gateway, stopping  # bench/gateway.py

PUBLIC = "bench-gw"
PRIVATE = "vault"


class _FromAddress(HTTPAdapter):
    def __init__(self, source: str) -> None:
        self._source = (source, 0)
        super().__init__()

    def init_poolmanager(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        kwargs["source_address"] = self._source
        super().init_poolmanager(*args, **kwargs)


def add_private_route(public_url: str, replica: str, workdir: Path, rounds: int) -> str:
    """Route PRIVATE (one client, a bcrypt hash of `rounds`) beside PUBLIC; its URL."""
    base = public_url.split("/deployment/")[0]
    token = (workdir / "admin-token").read_text()
    hashed = bcrypt.hashpw(b"the-right-token", bcrypt.gensalt(rounds=rounds)).decode()
    entry = {"phase": "Deployed", "replicas": [{"name": "bench-0", "url": replica}]}
    routes = {
        PUBLIC: entry,
        PRIVATE: {**entry, "accessType": "private", "clients": {"app": hashed}},
    }
    put = urllib.request.Request(
        f"{base}/_primehub/routes",
        data=json.dumps({"deployments": routes}).encode(),
        method="PUT",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    urllib.request.urlopen(put, timeout=10).close()
    return f"{base}/deployment/{PRIVATE}/api/v1.0/predictions"


def public_latencies(url: str, seconds: float) -> list[float]:
    """Sequential public predictions for `seconds`; each latency in ms."""
    times: list[float] = []
    body = b'{"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}}'
    with requests.Session() as session:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            response = session.post(url, data=body, timeout=30)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.text
    return times


def flood(url: str, addresses: list[str], stop: threading.Event, seen: Counter[int]) -> None:
    """Wrong passwords from `addresses` in turn until `stop`."""
    sessions = {}
    for address in addresses:
        session = requests.Session()
        session.mount("http://", _FromAddress(address))
        sessions[address] = session
    for attempt in itertools.count():
        if stop.is_set():
            break
        session = sessions[addresses[attempt % len(addresses)]]
        try:
            status = session.post(url, auth=("app", secrets.token_hex(8)), timeout=30).status_code
        except requests.RequestException:
            status = 0
        seen[status] += 1
    for session in sessions.values():
        session.close()


def flood_process(url: str, addresses: list[str], threads: int, stop: Any, out: Any) -> None:
    """One flooding process (own GIL, so the measuring client is not slowed by it)."""
    seen: Counter[int] = Counter()
    local_stop = threading.Event()
    share = [addresses[i::threads] or addresses for i in range(threads)]
    workers = [threading.Thread(target=flood, args=(url, s, local_stop, seen)) for s in share]
    for worker in workers:
        worker.start()
    stop.wait()
    local_stop.set()
    for worker in workers:
        worker.join(60)
    out.put(dict(seen))


def measure(
    public_url: str, private_url: str, seconds: float, addresses: list[str] | None, threads: int
) -> tuple[list[float], Counter[int]]:
    """Public latencies during a flood from `addresses` (None: no flood) and the flood's answers."""
    seen: Counter[int] = Counter()
    if not addresses:
        return public_latencies(public_url, seconds), seen
    context = multiprocessing.get_context("spawn")
    stop, out = context.Event(), context.Queue()
    processes = [
        context.Process(
            target=flood_process,
            args=(private_url, addresses[i::2] or addresses, threads // 2, stop, out),
        )
        for i in range(2)
    ]
    for process in processes:
        process.start()
    time.sleep(1.5)  # let the flood reach its steady state
    try:
        return public_latencies(public_url, seconds), seen
    finally:
        stop.set()
        for _ in processes:
            seen.update(out.get(timeout=60))
        for process in processes:
            process.join(60)


def main(argv: list[str] | None = None) -> int:
    """Print public p50/p99 without a flood, with a one-address flood, with a many-address one."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--threads", type=int, default=16, help="concurrent flooding clients")
    parser.add_argument("--rounds", type=int, default=12, help="bcrypt cost of the client hash")
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as tmp:
        workdir = Path(tmp)
        backend, replica = start_backend("echo", workdir, 1)
        gateway, public_base = start_gateway(workdir, replica)
        with stopping(backend, gateway):
            public_url = f"{public_base}/api/v1.0/predictions"
            private_url = add_private_route(public_base, replica, workdir, options.rounds)
            scenarios = [
                ("no flood", None),
                ("flood from 1 address", ["127.0.0.2"]),
                ("flood from 256 addresses", [f"127.0.1.{i}" for i in range(256)]),
            ]
            print(f"bcrypt cost {options.rounds}, {options.threads} flooding clients")
            header = f"{'scenario':28} {'public p50 ms':>14} {'p99 ms':>8} {'requests':>9}"
            print(f"{header}  flood answers")
            for label, addresses in scenarios:
                times, seen = measure(
                    public_url, private_url, options.duration, addresses, options.threads
                )
                times.sort()
                p50 = statistics.median(times)
                p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
                answers = ", ".join(f"{code}: {count}" for code, count in sorted(seen.items()))
                print(f"{label:28} {p50:14.2f} {p99:8.2f} {len(times):9d}  {answers or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
