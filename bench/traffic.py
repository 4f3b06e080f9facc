"""Traffic and scale on the local engine: weight sweep, shadow cost, a load step, in one run.

Three parts, each on a real engine (in this process), its gateway and sandboxed replicas of the
iris model, all on 127.0.0.1; the load comes from a separate process (`--load`), so it does not
share this event loop with the engine, and is bounded in time:
  sweep   v1 and v2 (one replica each); v2's weight goes 0 -> 10 -> 50 -> 100 by ordinary updates
          while 8 clients send requests: failed requests (target 0) and the split measured from
          the X-PrimeHub-Predictor headers of requests sent after the update was Deployed
          (target within 2 points of the weights);
  shadow  the same primary alone and with a shadow (by updates, alternating): its p99 latency
          under the same load, 4 clients back to back and a paced --rate, the ratio (target
          within 5%) and the CPU per request of the gateway and replicas;
  step    one autoscaled predictor (minReplicas 1, maxReplicas 4, targetConcurrency 2): 1 client,
          then 16: seconds until status.predictors[0].replicas > 1, until availableReplicas > 1
          and until all 4 are available.

    python bench/traffic.py [--seconds 6] [--rounds 2] [--rate 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from coldstart import PAYLOAD, wait_deployed  # noqa: E402
from journey import GROUPS, package_bundle  # noqa: E402

DEADLINE_SECONDS = 120.0
SWEEP = (0, 10, 50, 100)


# --- the load process ------------------------------------------------------------------------


async def load(
    url: str, clients: int, seconds: float, count: int, rate: float = 0.0
) -> list[list[Any]]:
    """`clients` loops posting the iris row until `seconds` pass or `count` requests are sent;
    back to back, or paced to `rate` requests/s in total (an open load: latency, not queueing).

    Each request: [wall time sent, latency seconds, status (0: no answer), predictor header].
    """
    import aiohttp

    results: list[list[Any]] = []
    stop = time.perf_counter() + seconds
    timeout = aiohttp.ClientTimeout(total=30)
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        print("started", flush=True)  # the parent times its update from here

        begin = time.perf_counter()

        async def client(index: int) -> None:
            sent_here = 0
            while time.perf_counter() < stop and len(results) < count:
                if rate > 0:
                    due = begin + (sent_here * clients + index) / rate
                    sent_here += 1
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                sent, started = time.time(), time.perf_counter()
                try:
                    async with session.post(url, data=PAYLOAD, headers=headers) as response:
                        await response.read()
                        status = response.status
                        predictor = response.headers.get("X-PrimeHub-Predictor", "")
                except (aiohttp.ClientError, TimeoutError):
                    status, predictor = 0, ""
                results.append([sent, time.perf_counter() - started, status, predictor])

        await asyncio.gather(*(client(i) for i in range(clients)))
    return results


async def start_load(
    url: str, clients: int, seconds: float, count: int = 10**9, rate: float = 0.0
) -> subprocess.Popen:
    """The load generator as a separate process, once it sends; its results come on stdout."""
    cmd = [sys.executable, __file__, "--load", url, "--clients", str(clients)]
    cmd += ["--seconds", str(seconds), "--count", str(count), "--rate", str(rate)]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    assert process.stdout is not None
    line = await asyncio.to_thread(process.stdout.readline)
    if line.strip() != b"started":
        raise RuntimeError(f"the load process did not start: {line!r}")
    return process


async def finish_load(process: subprocess.Popen) -> list[list[Any]]:
    """The load process's requests, once its time is up."""
    out, _ = await asyncio.to_thread(process.communicate, timeout=DEADLINE_SECONDS)
    if process.returncode != 0:
        raise RuntimeError(f"the load process exited {process.returncode}")
    return json.loads(out)


def server_cpu(workdir: Path) -> dict[int, float]:
    """CPU seconds (user + system) so far of each gateway and replica process of this run
    (every process whose command line names the run's directory; not the engine or the load)."""
    import psutil

    seconds = {}
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(str(workdir) in part for part in process.info["cmdline"] or []):
                times = process.cpu_times()
                seconds[process.pid] = times.user + times.system
        except (psutil.Error, OSError):
            continue
    return seconds


def cpu_since(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two readings by the processes alive at the second."""
    return sum(total - before.get(pid, 0.0) for pid, total in after.items())


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


# --- deployments --------------------------------------------------------------------------------


def record(deployment_id: str, predictors: list[dict[str, Any]]) -> Any:
    """A deployment as the REST layer hands it to an engine."""
    from primehub_jupyter.core.models import (
        DeploymentRecord,
        DeploymentSpec,
        DeploymentStatus,
        HistoryEntry,
        Phase,
        utcnow,
    )

    spec = DeploymentSpec.model_validate(
        {
            "displayName": deployment_id,
            "groupName": "default",
            "userName": "bench",
            "predictors": predictors,
        }
    )
    now = utcnow()
    entry = HistoryEntry(revision=1, time=now, user="bench", spec=spec)
    status = DeploymentStatus(
        phase=Phase.DEPLOYING, creation_time=now, last_updated=now, history=[entry]
    )
    return DeploymentRecord(id=deployment_id, spec=spec, status=status)


async def update(engine: Any, deployment_id: str, predictors: list[dict[str, Any]]) -> float:
    """An ordinary update of the predictors; the wall time at which it was Deployed."""
    from primehub_jupyter.core.models import DeploymentSpec

    current = await engine.get(deployment_id)
    body = current.spec.model_dump(by_alias=True, exclude_none=True)
    spec = DeploymentSpec.model_validate(body | {"predictors": predictors})
    await engine.replace(current.model_copy(update={"spec": spec}))
    await asyncio.sleep(0.3)  # let the reconciler take the new spec before reading the phase
    await wait_deployed(engine, deployment_id)
    return time.time()


# --- the three parts ---------------------------------------------------------------------------


async def sweep(engine: Any, bundle: Path, seconds: float) -> list[dict[str, Any]]:
    def predictors(v2: int) -> list[dict[str, Any]]:
        base = {"instanceType": "cpu-0.5", "modelURI": str(bundle), "replicas": 1}
        return [base | {"name": "v1", "traffic": 100 - v2}, base | {"name": "v2", "traffic": v2}]

    await engine.create(record("sweep", predictors(0)))
    await wait_deployed(engine, "sweep")
    url = engine.endpoint_of("sweep")
    rows = []
    for weight in SWEEP:
        process = await start_load(url, 8, seconds)
        await asyncio.sleep(1.0)  # the update lands under load
        changed = time.time()
        deployed = await update(engine, "sweep", predictors(weight))
        results = await finish_load(process)
        failed = [r for r in results if r[2] != 200]
        after = [r for r in results if r[0] > deployed and r[2] == 200]
        share = 100 * sum(r[3] == "v2" for r in after) / len(after) if after else float("nan")
        rows.append(
            {
                "weight": weight,
                "requests": len(results),
                "failed": len(failed),
                "statuses": sorted({r[2] for r in failed}),
                "measured": share,
                "counted": len(after),
                "update_seconds": deployed - changed,
            }
        )
        print(
            f"  sweep v2={weight}%: {len(results)} requests, {len(failed)} failed, v2 got "
            f"{share:.1f}% of {len(after)} after the update "
            f"({deployed - changed:.2f} s to Deployed)"
        )
    await engine.delete("sweep")
    return rows


async def shadow(
    engine: Any, bundle: Path, workdir: Path, args: argparse.Namespace
) -> dict[str, list[float]]:
    """Primary p99 with and without a shadow, alternating, under two loads: 4 clients back to
    back (the 2 cores saturated) and a paced `--rate` (headroom left). A control, `side`: no
    shadow, but the same paced rate sent at once to another deployment of the same model (the
    CPU a shadow's copies cost, without the mirroring)."""
    base = {"instanceType": "cpu-0.5", "modelURI": str(bundle), "replicas": 1}
    alone = [base | {"name": "v1", "traffic": 100}]  # v1 unchanged by the updates
    with_shadow = [base | {"name": "v1", "traffic": 100}, base | {"name": "v2", "shadow": True}]
    await engine.create(record("shadow", alone))
    await engine.create(record("side", alone))
    await wait_deployed(engine, "shadow")
    await wait_deployed(engine, "side")
    url, side_url = engine.endpoint_of("shadow"), engine.endpoint_of("side")
    out: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for mode, predictors in (("on", with_shadow), ("off", alone), ("side", alone)):
            await update(engine, "shadow", predictors)
            await asyncio.sleep(1.5)  # the replaced replicas have drained
            for kind, rate in (("closed", 0.0), ("paced", args.rate)):
                if mode == "side" and kind == "closed":
                    continue
                before = server_cpu(workdir)
                clients = 4 if kind == "closed" else 8
                side = None
                if mode == "side":
                    side = await start_load(side_url, clients, args.seconds, rate=rate)
                results = await finish_load(await start_load(url, clients, args.seconds, rate=rate))
                if side is not None:
                    await finish_load(side)
                cpu = cpu_since(before, server_cpu(workdir))
                ok = [r[1] for r in results if r[2] == 200]
                out.setdefault(f"{kind}-{mode}", []).append(p99(ok))
                out.setdefault(f"{kind}-{mode}-cpu", []).append(1e6 * cpu / len(results))
                out.setdefault(f"{kind}-{mode}-rps", []).append(len(results) / args.seconds)
                print(
                    f"  shadow {mode}, {kind} load: {len(results)} requests, "
                    f"{len(results) - len(ok)} failed, primary p50 "
                    f"{1000 * statistics.median(ok):.2f} ms, p99 {1000 * p99(ok):.2f} ms; "
                    f"gateway + replicas {1e6 * cpu / len(results):.0f} us CPU per request"
                )
    await engine.delete("shadow")
    await engine.delete("side")
    return out


async def step(engine: Any, bundle: Path) -> dict[str, float]:
    predictor: dict[str, Any] = {"name": "p", "instanceType": "cpu-0.5", "modelURI": str(bundle)}
    predictor |= {"minReplicas": 1, "maxReplicas": 4, "targetConcurrency": 2}
    await engine.create(record("step", [predictor]))
    await wait_deployed(engine, "step")
    url = engine.endpoint_of("step")
    await finish_load(await start_load(url, 1, 3.0))
    process = await start_load(url, 16, 30.0)
    started = time.monotonic()
    seen: dict[str, float] = {}
    try:
        while "all" not in seen and time.monotonic() - started < 30.0:
            status = (await engine.get("step")).status.predictors[0]
            if status.replicas > 1:
                seen.setdefault("added", time.monotonic() - started)
            if status.available_replicas > 1:
                seen.setdefault("available", time.monotonic() - started)
            if status.available_replicas == 4:
                seen.setdefault("all", time.monotonic() - started)
            await asyncio.sleep(0.05)
    finally:
        process.terminate()
        process.wait(30)
    print(
        f"  step 1 -> 16 clients: replicas added after {seen.get('added', -1):.2f} s, "
        f"available after {seen.get('available', -1):.2f} s, all 4 available after "
        f"{seen.get('all', -1):.2f} s"
    )
    await engine.delete("step")
    return seen


async def run(args: argparse.Namespace, workdir: Path, bundle: Path) -> dict[str, Any]:
    from primehub_jupyter.core.config import ConfigStore
    from primehub_jupyter.engines.local.engine import LocalEngine

    groups = workdir / "groups.yaml"
    groups.write_text(json.dumps(GROUPS))
    engine = LocalEngine(
        config_store=ConfigStore(groups),
        data_dir=str(workdir / "data"),
        drain_seconds=1.0,
        stop_grace_seconds=5.0,
        sandbox=args.sandbox,
    )
    await engine.start()
    try:
        return {
            "sweep": await sweep(engine, bundle, args.seconds),
            "shadow": await shadow(engine, bundle, workdir, args),
            "step": await step(engine, bundle),
        }
    finally:
        await engine.reconciler.stop()
        await engine.shutdown()


def summary(results: dict[str, Any]) -> None:
    print()
    print("| part | measured | target |")
    print("| --- | --- | --- |")
    for row in results["sweep"]:
        off = abs(row["measured"] - row["weight"])
        print(
            f"| sweep v2={row['weight']}% | {row['failed']} failed of {row['requests']}; v2 "
            f"{row['measured']:.1f}% of {row['counted']} ({off:.1f} points off) | 0 failed, "
            "<= 2 points |"
        )
    shadows = results["shadow"]
    rows = [
        ("shadow on / off, 4 clients back to back", "closed-on", "closed-off"),
        ("shadow on / off, paced", "paced-on", "paced-off"),
        ("control: side load / off, paced", "paced-side", "paced-off"),
    ]
    for label, first, second in rows:
        a, b = statistics.median(shadows[first]), statistics.median(shadows[second])
        cpu_a = statistics.median(shadows[f"{first}-cpu"])
        cpu_b = statistics.median(shadows[f"{second}-cpu"])
        rps_a = statistics.median(shadows[f"{first}-rps"])
        rps_b = statistics.median(shadows[f"{second}-rps"])
        print(
            f"| {label}, primary p99 | {1000 * a:.2f} / {1000 * b:.2f} ms = {a / b:.2f}x "
            f"({rps_a:.0f} / {rps_b:.0f} req/s; CPU per request {cpu_a:.0f} / {cpu_b:.0f} us) "
            "| <= 1.05x |"
        )
    seen = results["step"]
    print(
        f"| load step 1 -> 16 clients | replicas added {seen.get('added', -1):.2f} s, "
        f"available {seen.get('available', -1):.2f} s, all 4 {seen.get('all', -1):.2f} s | a few "
        "seconds |"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the three parts in turn and print the table (or, with --load, be the load)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="load per sweep/shadow step")
    parser.add_argument("--rounds", type=int, default=2, help="shadow on/off alternations")
    parser.add_argument("--rate", type=float, default=200.0, help="paced shadow load, req/s")
    parser.add_argument("--sandbox", default="auto", help="LocalEngine.sandbox")
    parser.add_argument("--load", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=10**9, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load:
        requests = asyncio.run(load(args.load, args.clients, args.seconds, args.count, args.rate))
        json.dump(requests, sys.stdout)
        return 0
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="bench-traffic-") as tmp:
        workdir = Path(tmp)
        bundle = workdir / "bundle"
        package_bundle(bundle)
        results = asyncio.run(run(args, workdir, bundle))
    print(f"load average at end: {os.getloadavg()}")
    summary(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
