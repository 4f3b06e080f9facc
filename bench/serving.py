"""Model server speed: ours against MLServer and seldon-core's microservice, in turns, one run.

Every server serves the same scikit-learn LogisticRegression fitted on iris (predict_proba), with
the same worker count, on 127.0.0.1. Each peer runs in its own virtual environment, created
under bench/.venvs on first use. Load comes from wrk (one thread) at each concurrency; the
script prints requests/s, p50, p99, the servers' CPU per request and the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from gateway import (  # noqa: E402  (bench/gateway.py: shared measuring helpers)
    _ms,
    children_seconds,
    cpu_seconds,
    free_port,
    machine_busy_seconds,
)

VENVS = HERE / ".venvs"
ROW = [5.1, 3.5, 1.4, 0.2]
SELDON_BODY = json.dumps({"data": {"ndarray": [ROW]}})
V2_BODY = json.dumps(
    {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW}]}
)
# MLServer's scikit-learn runtime answers predict() unless predict_proba is asked for by name.
MLSERVER_BODY = json.dumps(
    {
        "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW}],
        "outputs": [{"name": "predict_proba"}],
    }
)
PEER_PACKAGES = {
    # uvloop 0.22 made get_event_loop() raise, which breaks MLServer 1.7.1's inference workers;
    # its PandasCodec maps dtypes through numpy and fails on pandas 3's string dtype (KeyError 'O').
    "mlserver": ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22", "pandas<3"],
    # gunicorn 20 (pinned by seldon-core) still imports pkg_resources.
    "seldon-core": ["seldon-core==1.18.2", "setuptools<70", "scikit-learn", "joblib"],
}
FIT_SCRIPT = """
import sys, joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True)
joblib.dump(LogisticRegression(max_iter=1000).fit(X, y), sys.argv[1])
"""
SELDON_MODEL = """
import joblib

class IrisModel:
    def __init__(self):
        self.model = joblib.load({path!r})

    def predict(self, X, features_names=None):
        return self.model.predict_proba(X)
"""
# The table case: four mixed columns (int, float, text category, bool) through a Pipeline with a
# ColumnTransformer, fitted (mode "fit") by each environment's own scikit-learn on the same rows,
# and requests (mode "body") built by MLServer's own PandasCodec.encode_request.
TABLE_SCRIPT = """
import json, sys
import numpy as np
import pandas as pd

def frame(n, seed):
    rng = np.random.RandomState(seed)
    return pd.DataFrame({
        "age": rng.randint(18, 80, n).astype("int64"),
        "income": rng.normal(5000, 1500, n).round(2),
        "city": rng.choice(["Paris", "Rome", "Oslo", "Lima"], n),
        "member": rng.rand(n) < 0.4,
    })

if sys.argv[1] == "fit":
    import joblib
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    df = frame(400, 0)
    score = (df["age"] - 45) / 10 + (df["income"] - 5000) / 1500 + df["member"] - 1.5 * (
        df["city"] == "Oslo") + np.random.RandomState(1).normal(0, 0.5, len(df))
    y = (score > 0).astype(int)
    prep = ColumnTransformer([
        ("num", StandardScaler(), ["age", "income"]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
        ("flag", "passthrough", ["member"]),
    ])
    pipe = Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=1000))]).fit(df, y)
    joblib.dump(pipe, sys.argv[2])
    frame(2, 1).to_pickle(sys.argv[3])  # ours: the bundle's sample rows
else:
    from mlserver.codecs import PandasCodec
    request = PandasCodec.encode_request(frame(int(sys.argv[2]), 2))
    print(request.model_dump_json())
"""
WRK_SCRIPT = """wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


@dataclass
class Target:
    """One server under test and how to call it."""

    label: str
    path: str
    body: str
    check_body: str = ""  # table case: several rows, compared across servers before loading
    process: subprocess.Popen[bytes] | None = None
    url: str = ""
    results: dict[int, list[dict[str, float]]] = field(default_factory=dict)


# --- environments ------------------------------------------------------------------------------


def peer_python(name: str) -> Path:
    """The venv of a peer, created and installed on first use."""
    venv = VENVS / name
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    wanted = " ".join(PEER_PACKAGES[name])
    if marker.exists() and marker.read_text() == wanted:
        return python
    print(f"creating {venv} ({wanted}); this happens once", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *PEER_PACKAGES[name]], check=True)
    marker.write_text(wanted)
    return python


def fit(python: Path, target: Path) -> None:
    """Fit the iris model with the scikit-learn of `python`'s environment."""
    subprocess.run([str(python), "-c", FIT_SCRIPT, str(target)], check=True)


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    """Poll `url` until it answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} not ready within {timeout:.0f} s")


def start(cmd: list[str], log: Path, ready: str, **kwargs) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    """Start a server process with its output in `log` and wait for `ready`."""
    with open(log, "ab") as out:
        # A session of its own: stopping the group stops the helpers some peers fork
        # (seldon-core's gunicorn and gRPC processes outlive their parent otherwise).
        process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
        )
    try:
        wait_ready(ready, process, log)
    except Exception:
        signal_group(process, signal.SIGKILL)
        raise
    return process


def signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    """Send `sig` to the process group of a server started by `start`."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def start_ours(
    workdir: Path, workers: int, extra: list[str], case: str = "iris"
) -> tuple[subprocess.Popen[bytes], str]:
    """python -m primehub_jupyter.serving on a bundle of the iris model or the table pipeline."""
    bundle = workdir / f"bundle-{case}"
    if not bundle.exists():
        sys.path.insert(0, str(REPO))
        import joblib

        from primehub_jupyter.serving.packaging import package

        model = workdir / f"ours-{case}.joblib"
        if case == "table":
            python = Path(sys.executable)
            sample = workdir / "ours-table-sample.pkl"
            subprocess.run(
                [str(python), "-c", TABLE_SCRIPT, "fit", str(model), str(sample)], check=True
            )
            import pandas as pd

            package(joblib.load(model), bundle, name=case, sample_input=pd.read_pickle(sample))
        else:
            fit(Path(sys.executable), model)
            package(joblib.load(model), bundle, name=case)
    port = free_port()
    cmd = [sys.executable, "-m", "primehub_jupyter.serving", str(bundle), "--port", str(port)]
    cmd += ["--workers", str(workers), "--no-access-log", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = workdir / f"ours-{port}.log"
    url = f"http://127.0.0.1:{port}"
    return start(cmd, log, url + "/health/ping", env=env, cwd=REPO), url


def start_mlserver(
    workdir: Path, workers: int, parallel: int, case: str = "iris", batch: int = 0
) -> tuple[subprocess.Popen[bytes], str]:
    """`mlserver start` with its scikit-learn runtime; no adaptive batching (its default) unless
    `batch` > 0: then up to `batch` requests, waiting at most MLSERVER_BATCH_SECONDS for them."""
    python = peer_python("mlserver")
    root = workdir / f"mlserver-{case}-{parallel}-{batch}"
    model_dir = root / case
    model_dir.mkdir(parents=True, exist_ok=True)
    if case == "table":
        sample = root / "sample.pkl"
        model = model_dir / "model.joblib"
        subprocess.run(
            [str(python), "-c", TABLE_SCRIPT, "fit", str(model), str(sample)], check=True
        )
    else:
        fit(python, model_dir / "model.joblib")
    model_settings: dict[str, object] = {
        "name": case,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
    }
    if batch:
        model_settings.update(max_batch_size=batch, max_batch_time=MLSERVER_BATCH_SECONDS)
    (model_dir / "model-settings.json").write_text(json.dumps(model_settings))
    port = free_port()
    settings = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": parallel,
    }
    (root / "settings.json").write_text(json.dumps(settings))
    url = f"http://127.0.0.1:{port}"
    cmd = [str(python.parent / "mlserver"), "start", str(root)]
    process = start(cmd, root / "server.log", url + f"/v2/models/{case}/ready", cwd=root)
    return process, url


@functools.cache
def table_body(rows: int, outputs: tuple[str, ...] = ()) -> str:
    """A V2 request of `rows` table rows, as MLServer's PandasCodec.encode_request writes it."""
    python = peer_python("mlserver")
    script = [str(python), "-c", TABLE_SCRIPT, "body", str(rows)]
    request = json.loads(subprocess.run(script, capture_output=True, text=True, check=True).stdout)
    if outputs:  # MLServer's scikit-learn runtime answers predict() unless asked by name
        request["outputs"] = [{"name": name} for name in outputs]
    return json.dumps(request, separators=(",", ":"))


def start_seldon(workdir: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    """seldon-core's Python microservice (Flask on gunicorn) with a predict_proba class."""
    python = peer_python("seldon-core")
    root = workdir / "seldon"
    root.mkdir(exist_ok=True)
    fit(python, root / "model.joblib")
    (root / "IrisModel.py").write_text(SELDON_MODEL.format(path=str(root / "model.joblib")))
    port = free_port()
    cmd = [str(python.parent / "seldon-core-microservice"), "IrisModel", "--service-type", "MODEL"]
    cmd += ["--http-port", str(port), "--grpc-port", str(free_port())]
    cmd += ["--metrics-port", str(free_port()), "--workers", str(workers), "--log-level", "WARNING"]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(root)}
    process = start(cmd, root / "server.log", url + "/health/ping", cwd=root, env=env)
    return process, url


# --- load ----------------------------------------------------------------------------------------


def answer(target: Target, body: str) -> list[float]:
    """POST `body` to the target; the flat values of its (first) output."""
    request = urllib.request.Request(
        target.url + target.path,
        data=body.encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        document = json.loads(response.read())
    values = document["data"]["ndarray"] if "data" in document else document["outputs"][0]["data"]
    flat = []
    for value in values:
        flat.extend(value if isinstance(value, list) else [value])
    return flat


def check(target: Target) -> None:
    """One request: the answer must hold iris probabilities (guards against measuring errors)."""
    values = answer(target, target.body)
    if len(values) != 3 or abs(sum(values) - 1) > 1e-6 or values[0] < 0.9:
        raise RuntimeError(f"{target.label}: unexpected answer {values}")


def check_same(targets: list[Target]) -> None:
    """Table case: every server answers the same probabilities for the same rows, both for the
    check request (several rows) and for the body under load (one row)."""
    answers = [(t, answer(t, t.check_body), answer(t, t.body)) for t in targets]
    first, rows, one = answers[0]
    for target, values, single in answers:
        pairs = list(zip(values[::2], values[1::2], strict=True))
        if len(single) != 2 or not pairs or any(abs(a + b - 1) > 1e-6 for a, b in pairs):
            raise RuntimeError(f"{target.label}: not class probabilities: {values} / {single}")
        if len(values) != len(rows) or any(
            abs(a - b) > 1e-6 for a, b in zip(values + single, rows + one, strict=True)
        ):
            raise RuntimeError(
                f"{target.label} and {first.label} disagree: {values} / {single} against "
                f"{rows} / {one}"
            )


def wrk(target: Target, connections: int, seconds: float, workdir: Path) -> dict[str, float]:
    """One wrk run; returns req/s, p50, p99, errors, server CPU per request, other cores."""
    import re

    script = workdir / f"{target.label}.lua"
    script.write_text(WRK_SCRIPT.format(body=target.body))
    assert target.process is not None
    pid = target.process.pid
    cpu_before, machine_before = cpu_seconds(pid), machine_busy_seconds()
    wrk_before = children_seconds()
    started = time.perf_counter()
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    cmd += ["-s", str(script), target.url + target.path]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    elapsed = time.perf_counter() - started
    server_cpu = cpu_seconds(pid) - cpu_before
    wrk_cpu = children_seconds() - wrk_before
    others = max(0.0, machine_busy_seconds() - machine_before - server_cpu - wrk_cpu) / elapsed
    total = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (
        sum(int(g) for g in sock.groups()) if sock else 0
    )
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),  # type: ignore[union-attr]
        "p50": _ms(re.search(r"^\s*50%\s+(\S+)", text, re.M).group(1)),  # type: ignore[union-attr]
        "p99": _ms(re.search(r"^\s*99%\s+(\S+)", text, re.M).group(1)),  # type: ignore[union-attr]
        "errors": errors,
        "requests": total,
        "us": server_cpu * 1e6 / max(1, total),
        "others": others,
    }


@contextlib.contextmanager
def running(targets: list[Target]) -> Iterator[None]:
    """Stop every started server at the end, whatever happens."""
    try:
        yield
    finally:
        for target in targets:
            if target.process is not None:
                signal_group(target.process, signal.SIGTERM)
        for target in targets:
            if target.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    target.process.wait(timeout=20)
                time.sleep(0.5)  # let the group's other processes finish their shutdown
                signal_group(target.process, signal.SIGKILL)


def median(target: Target, connections: int, key: str) -> float:
    return statistics.median(r[key] for r in target.results[connections])


IRIS_PEERS = "ours,ours-v2,ours-batched,mlserver,mlserver-inproc,seldon-core"
TABLE_PEERS = (
    "ours-table,ours-table-batched,mlserver-table,mlserver-table-inproc,mlserver-table-batched"
)
TABLE_CHECK_ROWS = 6
# MLServer's adaptive batching waits up to this long for a batch to fill (ours never waits).
MLSERVER_BATCH_SECONDS = 0.002


def main(argv: list[str] | None = None) -> int:
    """Start the servers, load each in turn at each concurrency, print the table and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=1, help="rounds in turns; medians shown")
    parser.add_argument("--workers", type=int, default=1, help="model processes per server")
    parser.add_argument("--concurrency", default="8,64", help="comma-separated connections")
    parser.add_argument("--max-batch-size", type=int, default=64, help="ours, batched variant")
    parser.add_argument(
        "--case",
        choices=("all", "iris", "table"),
        default="all",
        help="iris: the iris model (V1 and V2 tensors); table: the 4-column DataFrame pipeline "
        "called with MLServer's V2 pandas encoding; all: both (default)",
    )
    parser.add_argument(
        "--peers",
        default=None,
        help=f"which servers to run (default: the case's; iris: {IRIS_PEERS}; table: "
        f"{TABLE_PEERS}). mlserver: parallel_workers = --workers, its default mode; "
        "mlserver-inproc: parallel_workers=0, the model in its HTTP process",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("wrk is needed: apt-get install -y wrk")
    levels = [int(c) for c in args.concurrency.split(",")]
    cases = {"all": [IRIS_PEERS, TABLE_PEERS], "iris": [IRIS_PEERS], "table": [TABLE_PEERS]}
    peers = (args.peers or ",".join(cases[args.case])).split(",")

    targets = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        stack.enter_context(running(targets))
        plan = {
            "ours": ("ours (Seldon v1)", "/api/v1.0/predictions", SELDON_BODY),
            "ours-v2": ("ours (V2 JSON)", "/v2/models/iris/infer", V2_BODY),
            "ours-batched": (
                f"ours, batching {args.max_batch_size}",
                "/api/v1.0/predictions",
                SELDON_BODY,
            ),
            "mlserver": (
                f"MLServer (pw={args.workers})",
                "/v2/models/iris/infer",
                MLSERVER_BODY,
            ),
            "mlserver-inproc": ("MLServer (pw=0)", "/v2/models/iris/infer", MLSERVER_BODY),
            "seldon-core": ("seldon-core", "/api/v1.0/predictions", SELDON_BODY),
            "ours-table": ("ours (table, V2 pd)", "/v2/models/table/infer", ""),
            "ours-table-batched": (
                f"ours table, batching {args.max_batch_size}",
                "/v2/models/table/infer",
                "",
            ),
            "mlserver-table": (f"MLServer table (pw={args.workers})", "/v2/models/table/infer", ""),
            "mlserver-table-inproc": ("MLServer table (pw=0)", "/v2/models/table/infer", ""),
            "mlserver-table-batched": (
                f"MLServer table, batching {args.max_batch_size} (pw=0)",
                "/v2/models/table/infer",
                "",
            ),
        }
        unknown = [p for p in peers if p not in plan]
        if unknown:
            parser.error(f"unknown peer {unknown[0]!r}; choose from {', '.join(plan)}")
        for peer in peers:
            label, path, body = plan[peer]
            target = Target(label, path, body)
            targets.append(target)
            if peer.startswith("ours-table"):
                # Ours takes PandasCodec's request unchanged; MLServer also needs the output named.
                target.body, target.check_body = table_body(1), table_body(TABLE_CHECK_ROWS)
            elif peer.startswith("mlserver-table"):
                target.body = table_body(1, ("predict_proba",))
                target.check_body = table_body(TABLE_CHECK_ROWS, ("predict_proba",))
            if peer in ("ours", "ours-v2"):
                target.process, target.url = start_ours(workdir, args.workers, [])
            elif peer == "ours-batched":
                extra = ["--max-batch-size", str(args.max_batch_size)]
                target.process, target.url = start_ours(workdir, args.workers, extra)
            elif peer == "ours-table":
                target.process, target.url = start_ours(workdir, args.workers, [], "table")
            elif peer == "ours-table-batched":
                extra = ["--max-batch-size", str(args.max_batch_size)]
                target.process, target.url = start_ours(workdir, args.workers, extra, "table")
            elif peer in ("mlserver", "mlserver-table"):
                case = "table" if peer.endswith("table") else "iris"
                target.process, target.url = start_mlserver(
                    workdir, args.workers, args.workers, case
                )
            elif peer == "mlserver-table-batched":
                target.process, target.url = start_mlserver(
                    workdir, args.workers, 0, "table", args.max_batch_size
                )
            elif peer in ("mlserver-inproc", "mlserver-table-inproc"):
                case = "table" if "table" in peer else "iris"
                target.process, target.url = start_mlserver(workdir, args.workers, 0, case)
            else:
                target.process, target.url = start_seldon(workdir, args.workers)
            if not target.check_body:
                check(target)
        tables = [t for t in targets if t.check_body]
        if tables:
            check_same(tables)

        load_before = os.getloadavg()[0]
        for target in targets:  # warm up every server at every level once
            for connections in levels:
                wrk(target, connections, 2, workdir)
        for _ in range(args.rounds):
            for connections in levels:
                for target in targets:
                    result = wrk(target, connections, args.duration, workdir)
                    target.results.setdefault(connections, []).append(result)
        load_after = os.getloadavg()[0]

    print(
        f"\nworkers={args.workers} duration={args.duration:g}s rounds={args.rounds} "
        f"cpus={os.cpu_count()} loadavg-before={load_before:.2f} loadavg-after={load_after:.2f} "
        "generator=wrk -t1"
    )
    header = f"{'server':<36}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
    print(header + f"{'errors':>8}{'server us/req':>15}{'other cores':>13}")
    noisy = False
    for connections in levels:
        for target in targets:
            errors = sum(r["errors"] for r in target.results[connections])
            others = median(target, connections, "others")
            noisy = noisy or others > 0.2
            rps, p50, p99, us = (
                median(target, connections, k) for k in ("rps", "p50", "p99", "us")
            )
            print(
                f"{target.label:<36}{connections:>6}{rps:>10.0f}{p50:>9.2f}{p99:>9.2f}"
                f"{errors:>8}{us:>15.0f}{others:>13.2f}"
            )
    if noisy:
        print("note: other processes used the CPUs during the run; req/s and ratios are noisy")

    by_peer = dict(zip(peers, targets, strict=True))
    print()
    comparisons = [
        (("ours", "ours-v2", "ours-batched"), ("mlserver", "mlserver-inproc", "seldon-core")),
        (
            ("ours-table", "ours-table-batched"),
            ("mlserver-table", "mlserver-table-inproc", "mlserver-table-batched"),
        ),
    ]
    for mine_keys, base_keys in comparisons:
        for base in base_keys:
            if base not in by_peer:
                continue
            peer = by_peer[base]
            for connections in levels:
                for key in mine_keys:
                    if key not in by_peer:
                        continue
                    mine = by_peer[key]
                    ratio = median(mine, connections, "rps") / median(peer, connections, "rps")
                    p99 = median(mine, connections, "p99") / median(peer, connections, "p99")
                    print(
                        f"{mine.label} / {peer.label} at {connections:>2}: {ratio:5.1f}x req/s, "
                        f"p99 {p99:.2f}x"
                    )

    def best(keys: tuple[str, ...], connections: int) -> Target:  # the faster MLServer mode
        return max(
            (by_peer[k] for k in keys if k in by_peer), key=lambda t: median(t, connections, "rps")
        )

    def at_8(mine: str, keys: tuple[str, ...], name: str) -> str:
        ml = best(keys, 8)
        ratio = median(by_peer[mine], 8, "rps") / median(ml, 8, "rps")
        lower = median(by_peer[mine], 8, "p99") < median(ml, 8, "p99")
        verdict = "meets" if ratio >= 3 and lower else "BELOW"
        p99 = "lower" if lower else "HIGHER"
        return f"{name} c=8 vs {ml.label}: {ratio:.1f}x, p99 {p99} ({verdict} 3x with a lower p99)"

    iris_ml = ("mlserver", "mlserver-inproc")
    table_ml = ("mlserver-table", "mlserver-table-inproc", "mlserver-table-batched")
    verdicts = []
    if 8 in levels and "ours" in by_peer and any(k in by_peer for k in iris_ml):
        verdicts.append(at_8("ours", iris_ml, "iris"))
    if 64 in levels and "ours-batched" in by_peer and any(k in by_peer for k in iris_ml):
        ml = best(iris_ml, 64)
        ratio = median(by_peer["ours-batched"], 64, "rps") / median(ml, 64, "rps")
        verdict = "meets" if ratio >= 5 else "BELOW"
        verdicts.append(f"iris c=64 batched vs {ml.label}: {ratio:.1f}x ({verdict} 5x)")
    # Unbatched ours against MLServer's unbatched modes; batched ours against all its modes.
    for key, name, bar in (
        ("ours-table", "table", table_ml[:2]),
        ("ours-table-batched", "table batched", table_ml),
    ):
        if 8 in levels and key in by_peer and any(k in by_peer for k in bar):
            verdicts.append(at_8(key, bar, name))
    if verdicts:
        print("targets vs the faster MLServer: " + "; ".join(verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
