"""Start-time cost of the replica sandbox: time to ready with and without bubblewrap."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from primehub_jupyter.engines.local.gateway_process import child_env  # noqa: E402
from primehub_jupyter.engines.local.processes import bind_loopback, spawn  # noqa: E402
from primehub_jupyter.engines.local.sandbox import Sandbox  # noqa: E402


def make_bundle(root: Path) -> Path:
    """A scikit-learn iris bundle, the model the README's quick start deploys."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from primehub_jupyter.serving.packaging import package

    X, y = load_iris(return_X_y=True)
    return Path(package(LogisticRegression(max_iter=500).fit(X, y), root / "iris", name="iris"))


def time_to_ready(sandbox: Sandbox, bundle: Path, workdir: Path) -> float:
    """Seconds from spawn to the first answer on /health/ping (the model is loaded then)."""
    workdir.mkdir(parents=True)
    mounts = sandbox.mounts_for(bundle=bundle, writable=[workdir], secrets=[], others=[])
    sock = bind_loopback()
    argv = [sys.executable, "-m", "primehub_jupyter.serving", str(bundle)]
    argv += ["--fd", str(sock.fileno()), "--log-file", str(workdir / "output.log")]
    started = time.perf_counter()
    handle = spawn(
        sandbox.wrap(argv, mounts, chdir=workdir),
        log_file=workdir / "output.log",
        env=sandbox.environment(child_env({"PYTHONUNBUFFERED": "1"})),
        cwd=workdir,
        pass_fds=(sock.fileno(),),
        sandboxed=sandbox.enabled,
    )
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/health/ping"
    sock.close()
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            response.read()
        return time.perf_counter() - started
    finally:
        asyncio.run(handle.terminate(10))


def time_python(sandbox: Sandbox, workdir: Path) -> float:
    """Seconds to run `python -c pass` (the launcher's own cost, without a model)."""
    workdir.mkdir(parents=True, exist_ok=True)
    mounts = sandbox.mounts_for(bundle=workdir, writable=[], secrets=[], others=[])
    argv = sandbox.wrap([sys.executable, "-c", "pass"], mounts, chdir=workdir)
    started = time.perf_counter()
    subprocess.run(argv, check=True, env=sandbox.environment(child_env({})))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="runs of each, alternating")
    args = parser.parse_args()
    sandboxed = Sandbox("bwrap", python=sys.executable)
    sandboxed.check(child_env({}))
    plain = Sandbox("off", python=sys.executable)
    plain.check({})
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp:
        root = Path(tmp)
        bundle = make_bundle(root)
        times: dict[str, list[float]] = {"unsandboxed": [], "bwrap": []}
        launch: dict[str, list[float]] = {"unsandboxed": [], "bwrap": []}
        for _ in range(args.runs * 4):
            for name, sandbox in (("unsandboxed", plain), ("bwrap", sandboxed)):
                launch[name].append(time_python(sandbox, root / "empty"))
        time_to_ready(plain, bundle, root / "warm")  # page cache
        for run in range(args.runs):
            for name, sandbox in (("unsandboxed", plain), ("bwrap", sandboxed)):
                times[name].append(time_to_ready(sandbox, bundle, root / f"{name}-{run}"))
    for name, values in launch.items():
        print(f"python -c pass, {name:12} median {statistics.median(values) * 1000:.0f} ms")
    for name, values in times.items():
        shown = " ".join(f"{v:.2f}" for v in values)
        print(f"{name:12} median {statistics.median(values):.3f} s  (runs: {shown})")
    cost = statistics.median(times["bwrap"]) - statistics.median(times["unsandboxed"])
    print(f"sandbox start cost: {cost * 1000:+.0f} ms (median difference)")


if __name__ == "__main__":
    main()
