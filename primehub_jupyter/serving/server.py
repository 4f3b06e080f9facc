"""Model server process: command line, startup (load before listen) and uvicorn."""

from __future__ import annotations

import os
import signal
import socket
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from .logcapture import LogCapture

# Heavy modules (numpy, the model's framework, uvicorn) are imported inside serve() so that
# --log-file captures whatever they print while importing.

#: Exit codes of `python -m primehub_jupyter.serving`.
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_MODEL_LOAD_FAILED = 3
EXIT_STARTUP_FAILED = 4

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
_BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class ServerOptions:
    """Everything the command line sets; see `model_server_command` for the meaning."""

    bundle: Path
    port: int | None = None
    fd: int | None = None
    host: str = "127.0.0.1"
    workers: int = 1
    log_file: Path | None = None
    termination_log: Path | None = None
    deployment: str | None = None
    replica: str | None = None
    access_log: bool = True
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    log_max_bytes: int = 10 * 1024 * 1024
    predictor: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    model_image: str = ""
    max_batch_size: int = 1
    max_batch_wait_ms: float = 0.0
    request_log_dir: Path | None = None
    request_log_fsync_seconds: float = 1.0
    metrics_dir: Path | None = None


def serve(options: ServerOptions) -> int:
    """Load the bundle, then serve it until SIGTERM/SIGINT; return the process exit code."""
    capture = None
    if options.log_file is not None:
        from .logcapture import install

        try:
            capture = install(options.log_file, options.log_max_bytes)
        except OSError as exc:
            return _fail(options, EXIT_STARTUP_FAILED, f"cannot write --log-file: {exc}")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_during_startup)
    if options.workers > 1:
        # Each worker is one process on its own core; BLAS thread pools per worker would
        # oversubscribe the CPUs (and a pool started before fork() is not fork-safe).
        for variable in _BLAS_THREAD_VARIABLES:
            os.environ.setdefault(variable, "1")

    try:
        sock = _listening_socket(options)
    except OSError as exc:
        where = f"fd {options.fd}" if options.fd is not None else f"{options.host}:{options.port}"
        return _fail(options, EXIT_STARTUP_FAILED, f"cannot listen on {where}: {exc}")

    if options.workers > 1 and options.metrics_dir is None:
        import tempfile

        # Workers leave snapshots of their metrics here for whichever one answers /metrics.
        options.metrics_dir = Path(tempfile.mkdtemp(prefix="primehub-metrics-"))
    try:
        return _serve_loaded(options, sock, capture)
    finally:
        if options.metrics_dir is not None and options.workers > 1:
            import shutil

            shutil.rmtree(options.metrics_dir, ignore_errors=True)


def _serve_loaded(
    options: ServerOptions,
    sock: socket.socket,
    capture: LogCapture | None,
    loaded: tuple[Any, Any] | None = None,
) -> int:
    try:
        app = _load_app(options, capture, loaded)
    except Exception as exc:
        traceback.print_exc()
        sock.close()
        return _fail(
            options, EXIT_MODEL_LOAD_FAILED, f"model failed to load: {type(exc).__name__}: {exc}"
        )

    import uvicorn

    config = uvicorn.Config(
        app,
        loop="auto",  # uvloop when installed
        http="auto",  # httptools when installed
        interface="asgi3",
        lifespan="off",
        access_log=False,  # we write our own line per request
        proxy_headers=False,  # X-Forwarded-For rewriting is not needed and costs per request
        server_header=False,
        use_colors=False,
        # Longer than a proxy's idle keep-alive, so the proxy closes idle connections first and
        # never sends a request on a connection the server is closing.
        timeout_keep_alive=75,
        timeout_graceful_shutdown=30,
    )
    sock.listen(2048)
    workers = f" with {options.workers} workers" if options.workers > 1 else ""
    print(
        f"serving {app.name} ({app.runtime.name}) on {_address(sock)}{workers} [pid {os.getpid()}]",
        flush=True,
    )
    if app.batcher is not None:
        print(
            f"adaptive batching: up to {app.batcher.max_batch_size} rows, waiting at most "
            f"{options.max_batch_wait_ms:g} ms",
            flush=True,
        )
    if app.request_log is not None:
        print(f"request log: {app.request_log.directory}", flush=True)

    def run_one() -> None:
        try:
            uvicorn.Server(config).run(sockets=[sock])
        finally:
            app.close()

    if options.workers > 1:
        from .workers import run_workers

        code = run_workers(run_one, options.workers)
    else:
        # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; absorbing it here makes
        # a requested stop exit with 0 instead of dying by the signal.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _absorb_signal)
        run_one()
        code = EXIT_OK
    print(f"stopped serving {app.name}", flush=True)
    return code


def _absorb_signal(_signum: int, _frame: Any) -> None:
    """Placeholder handler; uvicorn installs its own while serving."""


def _listening_socket(options: ServerOptions) -> socket.socket:
    if options.fd is not None:
        # family/type are detected from the descriptor (uvicorn's own fd= path assumes AF_UNIX).
        sock = socket.socket(fileno=options.fd)
        if sock.type != socket.SOCK_STREAM:
            raise OSError(f"fd {options.fd} is not a stream socket")
        return sock
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        # Bound now so a busy port fails before a slow model load, but listen() only after
        # loading: until then connections are refused, and any answer means "ready".
        sock.bind((options.host, options.port or 0))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def load_model(options: ServerOptions) -> tuple[Any, Any]:
    """The bundle's descriptor and its loaded, warmed-up runtime (what a template forks with)."""
    from .bundle import load_bundle
    from .registry import load_runtime

    descriptor = load_bundle(options.bundle)
    assert descriptor.bundle_dir is not None
    runtime = load_runtime(descriptor.bundle_dir, descriptor)
    if descriptor.sample is not None:
        _warm_up(runtime, descriptor.sample.request)
    return descriptor, runtime


def _load_app(
    options: ServerOptions,
    capture: LogCapture | None = None,
    loaded: tuple[Any, Any] | None = None,
) -> Any:
    import hashlib

    from .._version import __version__
    from .app import ModelServerApp
    from .bundle import DESCRIPTOR_FILE
    from .metrics import Identity, ServerMetrics
    from .requestlog import RequestLog

    descriptor, runtime = loaded or load_model(options)
    name = options.model_name or descriptor.name
    version = options.model_version
    if not version:
        # Changes whenever the bundle is packaged again: request logs of two versions of a
        # deployment's model never share a file.
        digest = hashlib.sha256((descriptor.bundle_dir / DESCRIPTOR_FILE).read_bytes())
        version = digest.hexdigest()[:12]
    identity = Identity(
        deployment_name=options.deployment or "",
        predictor_name=options.predictor or "",
        model_name=name,
        model_image=options.model_image,
        model_version=version,
    )
    request_log = None
    if options.request_log_dir is not None:
        request_log = RequestLog(
            options.request_log_dir,
            options.deployment or name,
            version,
            fsync_seconds=options.request_log_fsync_seconds,
        )
    aliases = tuple(n for n in (descriptor.name, options.deployment) if n)
    return ModelServerApp(
        runtime,
        name=name,
        max_body_bytes=options.max_body_bytes,
        access_log=options.access_log,
        deployment=options.deployment,
        replica=options.replica,
        predictor=options.predictor,
        model_version=version,
        model_image=options.model_image,
        aliases=aliases,
        max_batch_size=options.max_batch_size,
        max_batch_wait=options.max_batch_wait_ms / 1000.0,
        request_log=request_log,
        metrics=ServerMetrics(
            identity,
            options.metrics_dir,
            dropped_log_lines=(lambda: capture.dropped) if capture is not None else None,
        ),
        server_version=__version__,
    )


def _warm_up(runtime: Any, sample: dict[str, Any]) -> None:
    """One real prediction before serving catches version mismatches at startup instead of
    on the first user request, and warms up the model's code paths."""
    import numpy as np

    from .errors import ModelLoadError
    from .protocols import seldon, v2

    signature = runtime.descriptor.signature if runtime.descriptor else None
    datatype = signature.inputs[0].datatype if signature and signature.inputs else None
    dtype = v2.numpy_dtype(datatype) if datatype else None
    try:
        if signature is not None and signature.is_table:
            from .tables import Table

            data = sample.get("data") or {}
            frame = Table(signature.inputs).from_rows(data.get("names"), data.get("ndarray"), "")
            runtime.predict(frame, list(frame.columns), {})
            return
        request = seldon.decode_payload(
            sample,
            runtime=runtime.name,
            kinds=runtime.payload_kinds,
            dtype=dtype or np.dtype(np.float64),
            strict=dtype is not None,
        )
        X = request.X
        if request.kind in seldon.ARRAY_KINDS:
            X = runtime.check_input(X, request.names)
        runtime.predict(X, request.names, {})
    except Exception as exc:
        raise ModelLoadError(
            f"the model loaded but failed on the sample request in bundle.yaml "
            f"({type(exc).__name__}: {exc}); check that requirements.txt matches "
            "this environment"
        ) from exc


def _fail(options: ServerOptions, code: int, message: str) -> int:
    """Report a startup failure on stderr and, like Kubernetes, in the termination log."""
    print(message, file=sys.stderr, flush=True)
    if options.termination_log is not None:
        try:
            options.termination_log.parent.mkdir(parents=True, exist_ok=True)
            options.termination_log.write_text(message + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"cannot write --termination-log: {exc}", file=sys.stderr, flush=True)
    return code


def _address(sock: socket.socket) -> str:
    if sock.family == socket.AF_UNIX:
        return f"unix socket {sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _kubernetes_termination_log() -> Path | None:
    """Kubernetes' terminationMessagePath, when this runs in a container that has one."""
    path = Path("/dev/termination-log")
    return path if path.exists() and os.access(path, os.W_OK) else None


def _exit_during_startup(signum: int, _frame: Any) -> None:
    """Stop a startup that is still loading; SystemExit lets the log capture flush at exit."""
    raise SystemExit(128 + signum)


@click.command(
    "model-server",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), help="Listen on this port (0: any free).")
@click.option(
    "--fd", type=click.IntRange(min=0), help="Serve on this inherited, bound listening socket."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address for --port.")
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Processes."
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append stdout and stderr here, each line prefixed with a UTC timestamp.",
)
@click.option(
    "--termination-log",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to explain a startup failure (like Kubernetes' terminationMessagePath).",
)
@click.option(
    "--log-max-bytes",
    type=click.IntRange(min=0),
    default=10 * 1024 * 1024,
    show_default=True,
    help="Rotate --log-file at this size, keeping one previous file (<name>.1); 0: never.",
)
@click.option(
    "--deployment",
    envvar=["PRIMEHUB_DEPLOYMENT_ID", "SELDON_DEPLOYMENT_ID"],
    help="Deployment id (metrics label deployment_name, /health/status). "
    "[env: PRIMEHUB_DEPLOYMENT_ID, SELDON_DEPLOYMENT_ID]",
)
@click.option(
    "--replica",
    envvar="PRIMEHUB_REPLICA",
    help="Replica name, reported by /health/status and the request log. [env: PRIMEHUB_REPLICA]",
)
@click.option(
    "--predictor",
    envvar="PREDICTIVE_UNIT_ID",
    help="Predictor name (metrics label predictor_name). [env: PREDICTIVE_UNIT_ID]",
)
@click.option("--model-name", help="Model name in metrics and V2 paths [default: the bundle's].")
@click.option(
    "--model-version",
    help="Model version in metrics, metadata and request log paths [default: hash of bundle.yaml].",
)
@click.option("--model-image", default="", help="Model image (metrics label model_image).")
@click.option(
    "--max-batch-size",
    type=click.IntRange(1, 4096),
    default=1,
    show_default=True,
    help="Adaptive batching: stack up to this many rows of concurrent requests into one model "
    "call (1: off).",
)
@click.option(
    "--max-batch-wait-ms",
    type=click.FloatRange(0, 1000),
    default=0.0,
    show_default=True,
    help="Adaptive batching: how long a request may wait for others when the model is idle.",
)
@click.option(
    "--request-log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Log requests, responses and feedback as JSON lines under "
    "DIR/<deployment>/<model version>/<YYYY-MM-DD>.jsonl (off when not given).",
)
@click.option(
    "--request-log-fsync-seconds",
    type=click.FloatRange(0, 3600),
    default=1.0,
    show_default=True,
    help="fsync the request log at most this often (0: after every write batch).",
)
@click.option("--no-access-log", is_flag=True, help="Do not log one line per request.")
@click.option(
    "--max-body-bytes",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_BODY_BYTES,
    show_default=True,
    help="Larger request bodies get HTTP 413.",
)
@click.pass_context
def model_server_command(
    ctx: click.Context,
    bundle: Path,
    port: int | None,
    fd: int | None,
    host: str,
    workers: int,
    log_file: Path | None,
    termination_log: Path | None,
    log_max_bytes: int,
    deployment: str | None,
    replica: str | None,
    predictor: str | None,
    model_name: str | None,
    model_version: str | None,
    model_image: str,
    max_batch_size: int,
    max_batch_wait_ms: float,
    request_log_dir: Path | None,
    request_log_fsync_seconds: float,
    no_access_log: bool,
    max_body_bytes: int,
) -> None:
    """Serve the model bundle BUNDLE over HTTP (Seldon v1 and KServe V2 protocols).

    The model is loaded before the server accepts connections, so any answer on /health/ping
    means ready. Exit codes: 0 stopped by SIGTERM/SIGINT, 2 bad usage, 3 the model failed to
    load, 4 cannot listen or write the log file.
    """
    if (port is None) == (fd is None):
        raise click.UsageError("give exactly one of --port or --fd")
    options = ServerOptions(
        bundle=bundle,
        port=port,
        fd=fd,
        host=host,
        workers=workers,
        log_file=log_file,
        termination_log=termination_log or _kubernetes_termination_log(),
        log_max_bytes=log_max_bytes,
        deployment=deployment,
        replica=replica,
        access_log=not no_access_log,
        max_body_bytes=max_body_bytes,
        predictor=predictor,
        model_name=model_name,
        model_version=model_version,
        model_image=model_image,
        max_batch_size=max_batch_size,
        max_batch_wait_ms=max_batch_wait_ms,
        request_log_dir=request_log_dir.absolute() if request_log_dir else None,
        request_log_fsync_seconds=request_log_fsync_seconds,
    )
    # A replica template (serving/template.py) parses the same command line and runs itself.
    run = ctx.obj if callable(ctx.obj) else serve
    ctx.exit(run(options))


def main(
    argv: Sequence[str] | None = None,
    *,
    prog_name: str = "python -m primehub_jupyter.serving",
    run: Any = None,
) -> int:
    """Run the model server command line; returns the exit code instead of exiting.

    `run` takes the parsed ServerOptions instead of `serve` (the replica template's entry).
    """
    try:
        result = model_server_command.main(
            args=list(argv) if argv is not None else None,
            prog_name=prog_name,
            standalone_mode=False,
            obj=run,
        )
    except click.exceptions.Exit as exc:  # --help
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        return 1
    return int(result or 0)
