"""Cold start: a predictor at zero replicas until its first 200, next to MLServer's start.

One run, in turns: MLServer's process start -> ready (its scikit-learn runtime, iris) and our
bare model server's; then the local engine, with and without replica templates, deploys the same
iris model as an autoscaled predictor (minReplicas 0, maxReplicas 2, scaleToZeroAfterSeconds 10),
waits until the engine has scaled it to zero by itself (status.predictors[0].phase ==
ScaledToZero) and times one request through the gateway, sent -> 200 (the gateway holds it
while a replica starts; no retry). Last, the proportional memory (PSS,
/proc/<pid>/smaps_rollup) each extra replica adds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import serving  # noqa: E402  (bench/serving.py: the MLServer peer venv and its iris model)
from journey import GROUPS, free_port, package_bundle  # noqa: E402

PAYLOAD = json.dumps({"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}}).encode()
POLL_SECONDS = 0.01
DEADLINE_SECONDS = 120.0
IDLE_SECONDS = 10  # the contract's shortest scaleToZeroAfterSeconds


# --- processes started from nothing -------------------------------------------------------------


def start_to_ready(cmd: list[str], ready_url: str, cwd: Path, log: Path) -> float:
    """Seconds from spawning `cmd` to the first 200 on `ready_url` (polled every 10 ms)."""
    with open(log, "ab") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        while time.perf_counter() - started < DEADLINE_SECONDS:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(ready_url, timeout=5) as response,
            ):
                if response.status == 200:
                    return time.perf_counter() - started
            if process.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited; see {log}")
            time.sleep(POLL_SECONDS)
        raise RuntimeError(f"{ready_url} not ready within {DEADLINE_SECONDS:g} s")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def mlserver_root(workdir: Path) -> tuple[Path, Path]:
    """MLServer's model repository with the iris model (fitted by its own scikit-learn)."""
    python = serving.peer_python("mlserver")
    root = workdir / "mlserver"
    model_dir = root / "iris"
    model_dir.mkdir(parents=True)
    serving.fit(python, model_dir / "model.joblib")
    settings = {
        "name": "iris",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
    }
    (model_dir / "model-settings.json").write_text(json.dumps(settings))
    return python, root


def mlserver_start(python: Path, root: Path) -> float:
    """`mlserver start` until the model is ready (parallel_workers 0: no worker pool to wait
    for, MLServer's quickest start)."""
    port = free_port()
    settings = {"host": "127.0.0.1", "http_port": port, "grpc_port": free_port()}
    settings |= {"metrics_port": free_port(), "parallel_workers": 0}
    (root / "settings.json").write_text(json.dumps(settings))
    cmd = [str(python.parent / "mlserver"), "start", str(root)]
    ready = f"http://127.0.0.1:{port}/v2/models/iris/ready"
    return start_to_ready(cmd, ready, root, root / "server.log")


def ours_bare_start(bundle: Path, workdir: Path) -> float:
    """Our model server process (no engine, no sandbox) until /health/ping answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "primehub_jupyter.serving", str(bundle), "--port", str(port)]
    return start_to_ready(cmd, f"http://127.0.0.1:{port}/health/ping", REPO, workdir / "bare.log")


# --- the local engine --------------------------------------------------------------------------


def record(deployment_id: str, bundle: Path) -> Any:
    """A deployment as the REST layer hands it to an engine: one predictor that idles to zero."""
    from primehub_jupyter.core.models import (
        DeploymentRecord,
        DeploymentSpec,
        DeploymentStatus,
        HistoryEntry,
        Phase,
        utcnow,
    )

    predictor: dict[str, Any] = {"instanceType": "cpu-0.5", "modelURI": str(bundle)}
    predictor |= {"minReplicas": 0, "maxReplicas": 2, "scaleToZeroAfterSeconds": IDLE_SECONDS}
    spec = DeploymentSpec.model_validate(
        {
            "displayName": deployment_id,
            "groupName": "default",
            "userName": "bench",
            "predictors": [predictor],
        }
    )
    now = utcnow()
    entry = HistoryEntry(revision=1, time=now, user="bench", spec=spec)
    status = DeploymentStatus(
        phase=Phase.DEPLOYING, creation_time=now, last_updated=now, history=[entry]
    )
    return DeploymentRecord(id=deployment_id, spec=spec, status=status)


async def wait_deployed(engine: Any, deployment_id: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while (await engine.get(deployment_id)).status.phase.value != "Deployed":
        if time.monotonic() > deadline:
            raise RuntimeError(f"{deployment_id} not Deployed: {await engine.get(deployment_id)}")
        await asyncio.sleep(0.02)


async def scale(engine: Any, deployment_id: str, replicas: int) -> None:
    """An ordinary update to a fixed replica count (for the PSS steps)."""
    current = await engine.get(deployment_id)
    spec = current.spec.model_copy(deep=True)
    spec.predictors[0] = spec.predictors[0].model_copy(
        update={
            "replicas": replicas,
            "min_replicas": None,
            "max_replicas": None,
            "scale_to_zero_after_seconds": None,
        }
    )
    spec = type(spec).model_validate(spec.model_dump(by_alias=True, exclude_none=True))
    await engine.replace(current.model_copy(update={"spec": spec}))
    await wait_deployed(engine, deployment_id)
    deadline = time.monotonic() + DEADLINE_SECONDS
    while (await engine.get(deployment_id)).status.available_replicas != replicas:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{deployment_id}: {replicas} replicas not available")
        await asyncio.sleep(0.05)


async def to_zero(engine: Any, deployment_id: str) -> float:
    """Wait until the engine has scaled the idle predictor to zero; the seconds it took.

    At zero means: status.predictors[0].phase is ScaledToZero (the scaler's decision, written
    on the reconciler's tick) and no process of the deployment's replicas is left (the last
    one drained and stopped), so the request that follows wakes a new replica rather than
    taking a retiring one back.
    """
    started = time.monotonic()
    state = engine.reconciler.deployments[deployment_id]
    while True:
        status = (await engine.get(deployment_id)).status
        scaled = status.predictors and status.predictors[0].phase.value == "ScaledToZero"
        if scaled and status.predictors[0].replicas == 0 and not state.replicas:
            return time.monotonic() - started
        if time.monotonic() - started > DEADLINE_SECONDS:
            raise RuntimeError(f"{deployment_id} not ScaledToZero: {status.predictors}")
        await asyncio.sleep(0.1)


async def one_request(url: str) -> float:
    """Seconds from sending one request to its 200 (the gateway holds it while waking)."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=DEADLINE_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        started = time.perf_counter()
        async with session.post(
            url, data=PAYLOAD, headers={"Content-Type": "application/json"}
        ) as response:
            body = await response.read()
            seconds = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"{url}: {response.status} {body[:200]!r}")
    assert json.loads(body)["data"], body
    return seconds


async def milestones(state: Any, before: set[str]) -> dict[str, float]:
    """When the new replica got its process and when the engine's probe saw it ready."""
    started = time.perf_counter()
    seen: dict[str, float] = {}
    while "ready" not in seen and time.perf_counter() - started < DEADLINE_SECONDS:
        replica = next((r for r in state.replicas if r.name not in before), None)
        if replica is not None and replica.handle is not None:
            seen.setdefault("started", time.perf_counter() - started)
            if replica.ready:
                seen["ready"] = time.perf_counter() - started
        await asyncio.sleep(0.002)
    return seen


def pss_kib(pid: int) -> int:
    """Proportional set size of one process, from /proc/<pid>/smaps_rollup."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def deployment_pss_mib(data_dir: Path, deployment_id: str) -> float:
    """Total PSS of every process that runs the deployment (sandboxes, template, replicas)."""
    import psutil

    needle = f"--deployment\0{deployment_id}\0".encode()
    total = 0
    for pid in psutil.pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if needle not in f.read():
                    continue
            total += pss_kib(pid)
        except OSError:
            continue
    return total / 1024


async def engine_rounds(args: argparse.Namespace, workdir: Path, bundle: Path) -> dict[str, Any]:
    from primehub_jupyter.core.config import ConfigStore
    from primehub_jupyter.engines.local.engine import LocalEngine

    results: dict[str, Any] = {"cold": {}, "pss": {}}
    for mode in args.modes.split(","):
        data_dir = workdir / f"data-{mode}"
        data_dir.mkdir()
        groups = workdir / "groups.yaml"
        groups.write_text(json.dumps(GROUPS))
        engine = LocalEngine(
            config_store=ConfigStore(groups),
            data_dir=str(data_dir),
            drain_seconds=0.0,
            stop_grace_seconds=5.0,
            replica_templates=mode,
            sandbox=args.sandbox,
        )
        engine.scale_stable_window = 2.0  # scale down soon after a request; idle stays 10 s
        await engine.start()
        try:
            deployment_id = f"iris-{mode}"
            await engine.create(record(deployment_id, bundle))
            await wait_deployed(engine, deployment_id)
            url = engine.endpoint_of(deployment_id)
            await one_request(url)  # the first replica has served
            times = []
            for _ in range(args.rounds):
                idle = await to_zero(engine, deployment_id)
                state = engine.reconciler.deployments[deployment_id]
                before = {r.name for r in state.replicas}
                steps, seconds = await asyncio.gather(milestones(state, before), one_request(url))
                times.append(seconds)
                print(
                    f"  templates={mode}: ScaledToZero after {idle:.1f} s; one request at zero "
                    f"-> 200 {seconds:.3f} s; process started {steps.get('started', -1):.3f} s, "
                    f"probe saw it ready {steps.get('ready', -1):.3f} s"
                )
            results["cold"][mode] = times
            totals = []
            for replicas in range(1, args.max_replicas + 1):
                await scale(engine, deployment_id, replicas)
                await asyncio.sleep(1.0)  # let the replicas' first requests settle their pages
                for _ in range(replicas * 4):
                    await one_request(url)
                totals.append(deployment_pss_mib(data_dir, deployment_id))
            results["pss"][mode] = totals
            print(
                f"  templates={mode}: PSS with 1..{args.max_replicas} replicas: "
                + ", ".join(f"{t:.0f}" for t in totals)
                + " MiB"
            )
        finally:
            await engine.reconciler.stop()
            await engine.shutdown()
    return results


def main(argv: list[str] | None = None) -> int:
    """Measure, in one run, and print the table and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="cold starts per variant")
    parser.add_argument("--max-replicas", type=int, default=3, help="for the PSS steps")
    parser.add_argument("--modes", default="on,off", help="replica_templates values to run")
    parser.add_argument("--sandbox", default="auto", help="LocalEngine.sandbox")
    parser.add_argument(
        "--venvs", type=Path, default=serving.VENVS, help="where the MLServer venv is (reused)"
    )
    args = parser.parse_args(argv)
    serving.VENVS = args.venvs
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="bench-coldstart-") as tmp:
        workdir = Path(tmp)
        bundle = workdir / "bundle"
        package_bundle(bundle)
        python, root = mlserver_root(workdir)
        mlserver, bare = [], []
        for _ in range(args.rounds):
            mlserver.append(mlserver_start(python, root))
            bare.append(ours_bare_start(bundle, workdir))
            print(f"  MLServer start -> ready {mlserver[-1]:.3f} s; ours bare {bare[-1]:.3f} s")
        results = asyncio.run(engine_rounds(args, workdir, bundle))
    print(f"load average at end: {os.getloadavg()}")
    ml = statistics.median(mlserver)
    print()
    print(f"| medians of {args.rounds} | seconds | / MLServer |")
    print("| --- | --- | --- |")
    print(f"| MLServer process start -> model ready | {ml:.3f} | 1.00 |")
    print(
        f"| ours, bare process start -> ready | {statistics.median(bare):.3f} | "
        f"{statistics.median(bare) / ml:.2f} |"
    )
    for mode, times in results["cold"].items():
        med = statistics.median(times)
        print(
            f"| ours, request at zero -> 200, held by the gateway (templates {mode}) | {med:.3f} | "
            f"{med / ml:.2f} |"
        )
    print()
    for mode, totals in results["pss"].items():
        marginal = [b - a for a, b in itertools.pairwise(totals)]
        print(
            f"templates {mode}: total PSS {', '.join(f'{t:.0f}' for t in totals)} MiB for "
            f"1..{len(totals)} replicas; each extra replica "
            f"{', '.join(f'{m:.0f}' for m in marginal)} MiB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
