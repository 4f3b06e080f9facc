"""Cold start: a predictor at zero replicas until its first 200, next to MLServer's start.

One run, in turns: MLServer's process start -> ready (its scikit-learn runtime, iris) and our
bare model server's; then the local engine, with and without replica templates, takes a
deployment of the same iris model to zero replicas and measures "the engine is asked for a
replica -> first 200 through the gateway" (a request retried until answered, with a deadline).
Last, the proportional memory (PSS, /proc/<pid>/smaps_rollup) each extra replica adds.
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


def record(deployment_id: str, bundle: Path, replicas: int) -> Any:
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
            "predictors": [
                {"instanceType": "cpu-0.5", "replicas": replicas, "modelURI": str(bundle)}
            ],
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
    """An ordinary update of the replica count (the template stays: same deployment template)."""
    current = await engine.get(deployment_id)
    spec = current.spec.model_copy(deep=True)
    spec.predictors[0].replicas = replicas
    await engine.replace(current.model_copy(update={"spec": spec}))
    await wait_deployed(engine, deployment_id)


async def to_zero(engine: Any, deployment_id: str) -> None:
    """Get the deployment's predictor to zero replicas, its template (if any) kept warm.

    Until the engine scales to zero by itself, this pauses the reconciler, stops the replicas
    and pushes routes without them (the gateway answers 503). The caller's "wake" step is
    then `reconciler.start()`: the engine wants its replica back at once. With scale to zero,
    this becomes "wait until the idle predictor is at zero" and the wake is the request.
    """
    reconciler = engine.reconciler
    await reconciler.stop()
    state = reconciler.deployments[deployment_id]
    for replica in list(state.replicas):
        await reconciler.launcher.terminate(state, replica, drain=False)
    state.routed = []
    await reconciler.push_routes()


async def first_answer(url: str) -> tuple[float, int]:
    """Seconds until `url` answers 200 (retried every 10 ms) and how many tries it took."""
    import aiohttp

    started = time.perf_counter()
    tries = 0
    timeout = aiohttp.ClientTimeout(total=DEADLINE_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.perf_counter() - started < DEADLINE_SECONDS:
            tries += 1
            with contextlib.suppress(aiohttp.ClientError):
                async with session.post(
                    url, data=PAYLOAD, headers={"Content-Type": "application/json"}
                ) as response:
                    body = await response.read()
                    if response.status == 200:
                        assert json.loads(body)["data"], body
                        return time.perf_counter() - started, tries
            await asyncio.sleep(POLL_SECONDS)
    raise RuntimeError(f"no 200 from {url} within {DEADLINE_SECONDS:g} s")


async def milestones(state: Any) -> dict[str, float]:
    """When the new replica got its process and when the engine's probe saw it ready."""
    started = time.perf_counter()
    seen: dict[str, float] = {}
    while "ready" not in seen and time.perf_counter() - started < DEADLINE_SECONDS:
        replica = next(iter(state.replicas), None)
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
        await engine.start()
        try:
            deployment_id = f"iris-{mode}"
            await engine.create(record(deployment_id, bundle, 1))
            await wait_deployed(engine, deployment_id)
            url = engine.endpoint_of(deployment_id)
            times = []
            for _ in range(args.rounds):
                await to_zero(engine, deployment_id)
                state = engine.reconciler.deployments[deployment_id]
                engine.reconciler.start()  # the engine is asked for a replica
                steps, (seconds, tries) = await asyncio.gather(milestones(state), first_answer(url))
                times.append(seconds)
                print(
                    f"  templates={mode}: zero -> first 200 {seconds:.3f} s ({tries} tries); "
                    f"process started {steps['started']:.3f} s, probe saw it ready "
                    f"{steps['ready']:.3f} s"
                )
            results["cold"][mode] = times
            totals = []
            for replicas in range(1, args.max_replicas + 1):
                await scale(engine, deployment_id, replicas)
                await asyncio.sleep(1.0)  # let the replicas' first requests settle their pages
                await first_answer(url)
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
            f"| ours, zero -> first 200 via gateway (templates {mode}) | {med:.3f} | "
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
