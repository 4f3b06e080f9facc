"""Where the seconds of bench/journey.py go: a per-phase breakdown of each journey.

  bare     interpreter start, our imports, the framework's imports, model load, warm-up,
           uvicorn start to the first answer; plus a `python -X importtime` summary by package;
  create   POST round trip, POST -> replica spawned, spawn -> model loaded (the model server's
           "serving" line), loaded -> the engine's probe saw it ready, last ready -> Deployed
           (reconcile tick, route push, phase saved), Deployed -> the client saw it, and the
           first prediction through the gateway; with the engine's tick, probe and push counts;
  %deploy  in a real kernel: packaging, each REST round trip, the polls of Client.wait and its
           lag behind the engine's Deployed, first deploy of a kernel apart from later ones.
The engine is traced by wrapping a few of its methods in the `serve` process this script
starts (bench only; nothing in the package changes). Everything binds 127.0.0.1.

    python bench/journey_profile.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from journey import (  # type: ignore[import-not-found]  # bench/ is the script's directory
    GROUPS,
    PYTHON,
    SETUP_CELL,
    call,
    free_port,
    get,
    package_bundle,
)

# Run inside the model server's interpreter: stamps between the phases of its start, then the
# real server (serve() loads again, from warm imports, which costs milliseconds).
STAGES = r"""
import sys, time, json
stamps = {"main": time.time()}
def mark(name):
    stamps[name] = time.time()
from pathlib import Path
import primehub_jupyter.serving.server as server
mark("cli")
from primehub_jupyter.serving import app, bundle, metrics, registry, requestlog
mark("ours")
bundle_dir = Path(sys.argv[1])
descriptor = bundle.load_bundle(bundle_dir)
mark("descriptor")
import pickletools
modules = set()
ops = []
try:  # joblib writes raw array bytes into the pickle: read the opcodes up to the first
    with open(bundle_dir / descriptor.artifact, "rb") as f:
        for op in pickletools.genops(f):
            ops.append(op)
except Exception:
    pass
for index, (op, arg, _) in enumerate(ops):
    if op.name == "GLOBAL":
        modules.add(arg.split(" ")[0])
    elif op.name == "STACK_GLOBAL":
        strings = [a for o, a, _ in ops[max(0, index - 4):index] if isinstance(a, str)]
        if len(strings) >= 2:
            modules.add(strings[-2])
import importlib
for module in sorted(modules):
    try:
        importlib.import_module(module)
    except Exception:
        pass
mark("framework")
runtime = registry.load_runtime(descriptor.bundle_dir, descriptor)
mark("load")
if descriptor.sample is not None:
    server._warm_up(runtime, descriptor.sample.request)
mark("warmup")
print(json.dumps(stamps), file=sys.stderr, flush=True)
sys.exit(server.main([str(bundle_dir), "--port", sys.argv[2]]))
"""

# Run as `serve`: wraps engine methods to log what they do, with wall-clock times, to a file.
TRACED_SERVE = r"""
import functools, json, os, runpy, sys, time
out = open(os.environ["JOURNEY_TRACE"], "a", buffering=1)
def log(**fields):
    out.write(json.dumps(fields) + "\n")
from primehub_jupyter.engines.local import gateway_process, launcher, reconciler, rows
def traced(cls, name, describe, what=None):
    original = getattr(cls, name, None)
    if original is None:
        return
    @functools.wraps(original)
    async def wrapper(self, *args, **kwargs):
        start = time.time()
        before = describe(self, args, None)
        result = await original(self, *args, **kwargs)
        log(what=what or name, start=start, end=time.time(), before=before,
            after=describe(self, args, result))
        return result
    setattr(cls, name, wrapper)
traced(reconciler.Reconciler, "_tick_locked", lambda s, a, r: None, "_tick")
traced(launcher.ReplicaLauncher, "probe", lambda s, a, r: [a[0].name, a[0].state], "_probe")
traced(rows.ReplicaRows, "save_phase", lambda s, a, r: [a[0].id, a[0].phase.value], "_save_phase")
traced(gateway_process.GatewayProcess, "push", lambda s, a, r: hash(getattr(s, "_pushed", None)))
sys.argv = ["primehub-deploy", *sys.argv[1:]]
runpy.run_module("primehub_jupyter.cli", run_name="__main__")
"""

# Run in the kernel before the %deploy rounds: times packaging, every REST call and the waits.
KERNEL_TRACE = r"""
import functools, time
import primehub_jupyter.kernel.magics as _m
import primehub_jupyter.kernel.client as _c
_trace = []
def _timed(owner, name, label):
    original = getattr(owner, name)
    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        start = time.time()
        try:
            return original(*args, **kwargs)
        finally:
            detail = ""
            if label == "request":
                detail = args[1] + " " + args[2].split("?")[0]
            _trace.append((label, detail, start, time.time()))
    setattr(owner, name, wrapper)
_timed(_m, "package_for_deploy", "package")
_timed(_c.Client, "request", "request")
_timed(_c.Client, "wait", "wait")
"""


def log_time(line: str) -> float | None:
    """The wall-clock time of a replica log line ("2026-...Z text")."""
    match = re.match(r"(\d{4}-\d\d-\d\dT[\d:.]+Z) ", line)
    if not match:
        return None
    return datetime.fromisoformat(match.group(1).replace("Z", "+00:00")).timestamp()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def stage_run(bundle: Path) -> dict[str, float]:
    """One model-server start with stamps between its phases; seconds per phase."""
    port = free_port()
    spawned = time.time()
    process = subprocess.Popen(
        [PYTHON, "-c", STAGES, str(bundle), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while get(f"http://127.0.0.1:{port}/health/ping", timeout=5)[0] != 200:
            if process.poll() is not None:
                raise RuntimeError("the staged model server exited")
            time.sleep(0.01)
        ready = time.time()
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    stamps = json.loads(next(x for x in err.splitlines() if x.startswith('{"main"')))
    order = ["main", "cli", "ours", "descriptor", "framework", "load", "warmup"]
    phases = {"interpreter start (site, .pth)": stamps["main"] - spawned}
    labels = {
        "cli": "import server + click",
        "ours": "import our serving modules (numpy, pydantic...)",
        "descriptor": "read bundle.yaml",
        "framework": "import the model's framework (from the pickle)",
        "load": "unpickle + runtime setup",
        "warmup": "warm-up prediction",
    }
    for before, after in itertools.pairwise(order):
        phases[labels[after]] = stamps[after] - stamps[before]
    phases["uvicorn start + first /health/ping"] = ready - stamps["warmup"]
    phases["total"] = ready - spawned
    return phases


def python_pass() -> float:
    started = time.perf_counter()
    subprocess.run([PYTHON, "-c", "pass"], check=True)
    return time.perf_counter() - started


def import_summary(bundle: Path, top: int = 10) -> list[tuple[str, float, float]]:
    """(package, self seconds, cumulative seconds of its top-level imports), biggest first."""
    code = STAGES.split("runtime = runtimes.load_runtime")[0]
    code += "runtime = registry.load_runtime(descriptor.bundle_dir, descriptor)\n"
    result = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", code, str(bundle), "0"],
        capture_output=True,
        text=True,
        check=True,
    )
    self_by: dict[str, float] = defaultdict(float)
    cumulative_by: dict[str, float] = defaultdict(float)
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        parts = line[len("import time:") :].split("|")
        own, cumulative, name = int(parts[0]), int(parts[1]), parts[2]
        package = name.strip().split(".")[0]
        self_by[package] += own / 1e6
        if len(name) - len(name.lstrip()) <= 1:  # imported by the script itself
            cumulative_by[package] += cumulative / 1e6
    ranked = sorted(self_by, key=lambda p: -self_by[p])[:top]
    return [(p, self_by[p], cumulative_by.get(p, 0.0)) for p in ranked]


def read_trace(path: Path, since: float) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["start"] >= since]


def replica_timeline(data: Path, deployment_id: str) -> list[dict[str, float]]:
    """Per replica: wall times of spawn, model loaded ('serving' line) and ready, from its log."""
    timeline = []
    for log in sorted(data.glob(f"**/deployments/{deployment_id}/replicas/*/output.log")):
        marks: dict[str, float] = {}
        for line in log.read_text(errors="replace").splitlines():
            stamp = log_time(line)
            if stamp is None:
                continue
            if "[engine] starting replica" in line:
                marks.setdefault("spawn", stamp)
            elif re.search(r"\] serving |Z serving ", line):
                marks.setdefault("loaded", stamp)
            elif "[engine] replica ready" in line:
                marks.setdefault("ready", stamp)
        timeline.append(marks)
    return timeline


def deployed_at(trace: list[dict], deployment_id: str) -> float | None:
    for row in trace:
        if row["what"] == "_save_phase" and row["after"] == [deployment_id, "Deployed"]:
            return row["end"]
    return None


def engine_phases(trace: list[dict], data: Path, deployment_id: str, t0: float) -> dict[str, float]:
    """Engine-side phases of one deployment, in seconds from t0 (the request's start)."""
    replicas = replica_timeline(data, deployment_id)
    phases: dict[str, float] = {}
    spawns = [r["spawn"] for r in replicas if "spawn" in r]
    loads = [r["loaded"] - r["spawn"] for r in replicas if "loaded" in r and "spawn" in r]
    probe_lag = [r["ready"] - r["loaded"] for r in replicas if "ready" in r and "loaded" in r]
    readies = [r["ready"] for r in replicas if "ready" in r]
    deployed = deployed_at(trace, deployment_id)
    if spawns:
        phases["request -> first replica spawned"] = min(spawns) - t0
    if loads:
        phases["spawn -> model loaded ('serving' line), slowest"] = max(loads)
    if probe_lag:
        phases["loaded -> engine saw ready (probe), slowest"] = max(probe_lag)
    if readies and deployed:
        phases["last ready -> Deployed saved (tick, push, save)"] = deployed - max(readies)
    return phases


def engine_counts(trace: list[dict], start: float, end: float) -> dict[str, float]:
    window = [r for r in trace if start <= r["start"] <= end]
    ticks = [r for r in window if r["what"] == "_tick"]
    probes = [r for r in window if r["what"] == "_probe"]
    # push() returns at once when the table is unchanged: count the ones that sent it.
    pushes = [r for r in window if r["what"] == "push" and r["before"] != r["after"]]
    return {
        "ticks": len(ticks),
        "tick ms (median)": 1000 * median([r["end"] - r["start"] for r in ticks]),
        "probes": len(probes),
        "probe ms (max)": 1000 * max((r["end"] - r["start"] for r in probes), default=0.0),
        "route pushes": len(pushes),
        "push ms (max)": 1000 * max((r["end"] - r["start"] for r in pushes), default=0.0),
    }


def create_round(url: str, token: str, bundle: Path, name: str, trace_file: Path, data: Path):
    api = url + "primehub/api/deployments"
    body = {
        "id": name,
        "spec": {
            "displayName": name,
            "groupName": "default",
            "predictors": [{"instanceType": "cpu-0.5", "replicas": 2, "modelURI": str(bundle)}],
        },
    }
    t0 = time.time()
    call(api, token, "POST", body)
    posted = time.time()
    while True:
        document = call(f"{api}/{name}", token, "GET")
        if document["status"]["phase"] == "Deployed":
            break
        if time.time() - t0 > 300:
            raise RuntimeError(f"{name} not Deployed in 300 s")
        time.sleep(0.01)
    seen = time.time()
    endpoint = document["status"]["endpoint"]
    sample = {"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}}
    import urllib.request

    request = urllib.request.Request(
        endpoint, data=json.dumps(sample).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        status = response.status
    predicted = time.time()
    time.sleep(0.3)  # the last ticks' trace lines
    trace = read_trace(trace_file, t0)
    phases = {"POST round trip": posted - t0}
    phases.update(engine_phases(trace, data, name, t0))
    deployed = deployed_at(trace, name)
    if deployed:
        phases["Deployed saved -> client saw it (10 ms polls)"] = seen - deployed
    phases[f"first prediction through the gateway ({status})"] = predicted - seen
    phases["total: request -> Deployed seen"] = seen - t0
    return phases, engine_counts(trace, t0, seen)


def deploy_rounds(url: str, token: str, workdir: Path, rounds: int, trace_file: Path, data: Path):
    from jupyter_client.manager import KernelManager

    env = {**os.environ, "PRIMEHUB_API_URL": url, "PRIMEHUB_API_TOKEN": token}
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(env=env, cwd=str(workdir))
    client = manager.client()
    client.start_channels()
    results = []
    try:
        client.wait_for_ready(timeout=120)

        def run(code: str) -> str:
            out: list[str] = []

            def hook(msg: dict) -> None:
                if msg["msg_type"] == "stream":
                    out.append(msg["content"]["text"])
                elif msg["msg_type"] == "error":
                    out.append("ERROR " + msg["content"]["evalue"])

            client.execute_interactive(code, timeout=600, output_hook=hook)
            return "".join(out)

        run(SETUP_CELL + KERNEL_TRACE)
        for index in range(rounds):
            text = run(
                "_trace.clear()\n"
                "t0 = time.time()\n"
                f"d = %deploy model --name magic-{index}\n"
                "import json as _json\n"
                "print('TRACE', _json.dumps({'t0': t0, 'end': time.time(), 'phase': d.phase, "
                "'id': d.id, 'trace': _trace}))"
            )
            line = next((x for x in text.splitlines() if x.startswith("TRACE ")), None)
            if line is None:
                raise RuntimeError(f"%deploy did not deploy: {text[-500:]}")
            info = json.loads(line[len("TRACE ") :])
            time.sleep(0.3)
            results.append(kernel_phases(info, read_trace(trace_file, info["t0"]), data))
            run("%phdeploy delete {d.id}")
        return results
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def kernel_phases(info: dict, trace: list[dict], data: Path):
    t0, end = info["t0"], info["end"]
    phases: dict[str, float] = {}
    rows = info["trace"]
    package = [r for r in rows if r[0] == "package"]
    wait = [r for r in rows if r[0] == "wait"]
    requests = [r for r in rows if r[0] == "request"]
    wait_start = wait[0][2] if wait else end
    before_wait = [r for r in requests if r[3] <= wait_start]
    if package:
        phases["packaging (package_for_deploy)"] = package[0][3] - package[0][2]
    phases[f"REST calls before the wait ({len(before_wait)})"] = sum(
        r[3] - r[2] for r in before_wait
    )
    create = [r for r in before_wait if r[1].startswith("POST deployments")]
    if create:
        phases.update(
            {
                k.replace("request", "create request"): v
                for k, v in engine_phases(trace, data, info["id"], create[0][2]).items()
            }
        )
    deployed = deployed_at(trace, info["id"])
    polls = [r for r in requests if r[2] >= wait_start]
    if wait and deployed:
        phases["Deployed saved -> Client.wait returned"] = wait[0][3] - deployed
    phases["Client.wait polls (GET)"] = len(polls)
    phases["rest of the magic (parse, group, Deployment)"] = (
        (end - t0)
        - sum(v for k, v in phases.items() if k.startswith(("packaging", "REST")))
        - ((wait[0][3] - wait[0][2]) if wait else 0.0)
    )
    phases["total: %deploy returned"] = end - t0
    return phases


def print_table(title: str, runs: list[dict[str, float]], first_apart: bool = False) -> None:
    print(f"\n{title}")
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run if k not in keys]
    later = runs[1:] if first_apart and len(runs) > 1 else runs
    head = f"{'phase':58} {'median':>8}" + (f" {'first':>8}" if first_apart else "")
    print(head)
    for key in keys:
        values = [r[key] for r in later if key in r]
        row = f"{key:58} {median(values):8.3f}"
        if first_apart:
            row += f" {runs[0].get(key, float('nan')):8.3f}"
        print(row)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="primehub-journey-profile-"))
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    try:
        bundle = workdir / "iris-bundle"
        package_bundle(bundle)
        passes = [python_pass() for _ in range(args.rounds)]
        stages = [stage_run(bundle) for _ in range(args.rounds)]
        print(f"\n`python -c pass`: {median(passes):.3f} s")
        print_table("bare model server start, seconds per phase (median)", stages)
        print("\n`python -X importtime` of the start path, by top-level package (s):")
        print(f"{'package':24} {'self':>7} {'as imported':>12}")
        for package, own, cumulative in import_summary(bundle):
            print(f"{package:24} {own:7.3f} {cumulative:12.3f}")

        data = workdir / "data"
        data.mkdir()
        (data / "config.yaml").write_text(json.dumps(GROUPS))
        trace_file = workdir / "engine-trace.jsonl"
        port = free_port()
        token = os.urandom(16).hex()
        env = {
            **os.environ,
            "PRIMEHUB_API_TOKEN": token,
            "USER": "bench",
            "JUPYTERHUB_USER": "bench",
            "JOURNEY_TRACE": str(trace_file),
        }
        process = subprocess.Popen(
            [PYTHON, "-c", TRACED_SERVE, "serve", "--port", str(port), "--data-dir", str(data)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(workdir / "serve.log", "wb"),  # noqa: SIM115 - closed with the process
        )
        url = f"http://127.0.0.1:{port}/"
        try:
            deadline = time.monotonic() + 120
            while get(url + "primehub/api/me", {"Authorization": f"token {token}"})[0] != 200:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"serve did not start: {workdir / 'serve.log'}")
                time.sleep(0.05)
            created, counts = [], []
            for index in range(args.rounds):
                name = f"profile-{index}"
                phases, count = create_round(url, token, bundle, name, trace_file, data)
                created.append(phases)
                counts.append(count)
                call(f"{url}primehub/api/deployments/{name}", token, "DELETE")
            magic = deploy_rounds(url, token, workdir, args.rounds, trace_file, data)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        print_table("create (2 replicas) -> Deployed, seconds (median)", created)
        print_table("engine work during a create (median)", counts)
        print_table(
            "%deploy in a kernel, seconds (median of later rounds; first deploy of the kernel)",
            magic,
            first_apart=True,
        )
        print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
