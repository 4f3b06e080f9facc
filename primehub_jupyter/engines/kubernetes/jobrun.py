"""The job container of a Kubernetes batch job: fetch the input, run the runner, deliver the output.

`python -m primehub_jupyter.engines.kubernetes.jobrun --job-dir DIR --input LOCAL --output LOCAL
[--fetch URI LOCAL] [--deliver LOCAL TARGET] [--overwrite] [--termination-log F] -- RUNNER...`

It writes DIR/job.json from $PRIMEHUB_JOB (the JobRecord, with the local input and output put
in), runs RUNNER (`python -m primehub_jupyter.serving.batch /mnt/models --job-dir DIR`),
prints a `primehub-job-progress {json}` line each time DIR/progress.json changes (the engine
reads the newest from the log), delivers the output and its errors file when the runner
succeeded (only the errors file when it failed), and writes the final progress as the
termination message, naming the errors file by the job's output URI. Its exit code is the
runner's (1 when delivery fails). Standard library only, like the model initializer.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from .fetch import (
    CHUNK,
    EMPTY_SHA256,
    TIMEOUT,
    FetchError,
    _download,
    _s3_endpoint,
    _s3_get,
    sigv4_headers,
)

PROGRESS_MARK = "primehub-job-progress "
POLL_SECONDS = 1.0
MESSAGE_LIMIT = 3000  # the kubelet keeps 4096 bytes of a termination message


def _region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def _s3_url(uri: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    base, path = _s3_endpoint(parts.netloc, _region())
    return f"{base}{path}/{urllib.parse.quote(parts.path.lstrip('/'))}"


def _signed(method: str, url: str, payload_hash: str = EMPTY_SHA256) -> dict[str, str]:
    access = os.environ.get("AWS_ACCESS_KEY_ID", "")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    if not (access and secret):
        return {}
    return sigv4_headers(
        method,
        url,
        region=_region(),
        access_key=access,
        secret_key=secret,
        session_token=os.environ.get("AWS_SESSION_TOKEN", ""),
        payload_hash=payload_hash,
    )


def fetch_input(uri: str, local: Path) -> None:
    """Download one object (http(s):// or s3://) to `local`."""
    local.parent.mkdir(parents=True, exist_ok=True)
    if uri.startswith("s3://"):
        with _s3_get(_s3_url(uri), _region()) as response, open(local, "wb") as out:
            shutil.copyfileobj(response, out, CHUNK)
    else:
        _download(uri, local)


def _s3_exists(uri: str) -> bool:
    url = _s3_url(uri)
    request = urllib.request.Request(url, method="HEAD", headers=_signed("HEAD", url))
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT):
            return True
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return False
        raise FetchError(f"{uri}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        raise FetchError(f"{uri}: {getattr(error, 'reason', error)}") from None


def target_exists(target: str) -> bool:
    """Whether an output target (a path on a mounted claim, or an S3 object) exists."""
    if target.startswith("s3://"):
        return _s3_exists(target)
    return Path(target).exists()


def deliver(local: Path, target: str) -> None:
    """Copy `local` to a path (through a temporary name, then rename) or PUT it to S3."""
    if target.startswith("s3://"):
        digest = hashlib.sha256()
        with open(local, "rb") as source:
            for block in iter(lambda: source.read(CHUNK), b""):
                digest.update(block)
        url = _s3_url(target)
        headers = _signed("PUT", url, digest.hexdigest())
        headers["Content-Length"] = str(local.stat().st_size)
        with open(local, "rb") as body:
            request = urllib.request.Request(url, data=body, method="PUT", headers=headers)
            with _open_request(request, target):
                pass
        return
    destination = Path(target)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.partial")
    shutil.copyfile(local, partial)
    os.replace(partial, destination)


def _open_request(request: urllib.request.Request, what: str) -> Any:
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as error:
        detail = error.read(300).decode(errors="replace").strip()
        raise FetchError(f"{what}: HTTP {error.code} {error.reason}: {detail}") from None
    except (urllib.error.URLError, OSError) as error:
        raise FetchError(f"{what}: {getattr(error, 'reason', error)}") from None


class ProgressEcho:
    """Prints progress.json as a log line whenever it changes, until stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def read(self) -> dict[str, Any]:
        with contextlib.suppress(OSError, ValueError):
            document = json.loads(self.path.read_text())
            if isinstance(document, dict):
                return document
        return {}

    def echo(self) -> None:
        document = self.read()
        text = json.dumps(document, separators=(",", ":"), sort_keys=True) if document else ""
        if text and text != self.last:
            self.last = text
            print(PROGRESS_MARK + text, flush=True)

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self.echo()

    def __enter__(self) -> ProgressEcho:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.echo()


def write_job_json(job_dir: Path, local_input: str, local_output: str) -> str:
    """DIR/job.json from $PRIMEHUB_JOB, with the pod's own input and output paths.

    Returns the job's own output URI (as the user gave it).
    """
    record = json.loads(os.environ.get("PRIMEHUB_JOB") or "{}")
    spec = record.setdefault("spec", {})
    given = str(spec.get("output") or local_output)
    spec["input"], spec["output"] = local_input, local_output
    record["errors"] = f"{local_output}.errors.jsonl"
    job_dir.mkdir(parents=True, exist_ok=True)
    temporary = job_dir / "job.json.tmp"
    temporary.write_text(json.dumps({"job": record}))
    os.replace(temporary, job_dir / "job.json")
    return given


def run_runner(command: list[str]) -> int:
    """Run the runner; SIGTERM (a cancel, a node drain) is passed on so it stops between chunks."""
    process = subprocess.Popen(command)
    previous = signal.signal(signal.SIGTERM, lambda *_: process.send_signal(signal.SIGTERM))
    try:
        return process.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _finish(path: str, summary: dict[str, Any]) -> None:
    if not path:
        return
    message = str(summary.get("message") or "")
    if len(message) > MESSAGE_LIMIT:
        summary["message"] = message[:MESSAGE_LIMIT] + "..."
    with contextlib.suppress(OSError):
        Path(path).write_text(json.dumps(summary, separators=(",", ":"), sort_keys=True))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: jobrun [options] -- RUNNER...", file=sys.stderr)
        return 2
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job-dir", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--fetch", nargs=2, action="append", default=[], metavar=("URI", "LOCAL"))
    parser.add_argument(
        "--deliver", nargs=2, action="append", default=[], metavar=("LOCAL", "TARGET")
    )
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--termination-log", default="")
    args = parser.parse_args(options)
    job_dir = Path(args.job_dir)
    summary: dict[str, Any] = {"phase": "Failed", "message": ""}
    given_output = args.output
    try:
        for _local, target in args.deliver:
            if not args.overwrite and target_exists(target):
                raise FetchError(f"the output {target} exists; ask for overwrite to replace it")
        for uri, local in args.fetch:
            print(f"fetching the input {uri}", flush=True)
            fetch_input(uri, Path(local))
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        given_output = write_job_json(job_dir, args.input, args.output)
    except (FetchError, OSError, ValueError) as error:
        summary["message"] = f"the job could not start: {error}"
        print(f"error: {summary['message']}", file=sys.stderr, flush=True)
        _finish(args.termination_log, summary)
        return 1
    echo = ProgressEcho(job_dir / "progress.json")
    with echo:
        code = run_runner(command)
    summary = {**echo.read(), "exitCode": code}
    if code == 0:
        try:
            for local, target in args.deliver:
                print(f"delivering {local} to {target}", flush=True)
                deliver(Path(local), target)
                errors = Path(f"{local}.errors.jsonl")
                if errors.exists():
                    deliver(errors, f"{target}.errors.jsonl")
        except (FetchError, OSError) as error:
            code = summary["exitCode"] = 1
            summary["phase"] = "Failed"
            summary["message"] = f"the output could not be delivered: {error}"
            print(f"error: {summary['message']}", file=sys.stderr, flush=True)
    elif code == 1:
        # A failed job's errors file (it says which rows failed) is delivered too, as the
        # local engine leaves it beside the output.
        for local, target in args.deliver:
            errors = Path(f"{local}.errors.jsonl")
            if errors.exists():
                try:
                    deliver(errors, f"{target}.errors.jsonl")
                except (FetchError, OSError) as error:
                    print(f"error: the errors file was not delivered: {error}", file=sys.stderr)
    if not summary.get("message") and code != 0:
        summary["message"] = f"the runner exited with code {code}"
    # The runner names its errors file by the pod's path; the user knows it by the output's.
    summary["message"] = str(summary.get("message") or "").replace(
        f"{args.output}.errors.jsonl", f"{given_output}.errors.jsonl"
    )
    _finish(args.termination_log, summary)
    return code


if __name__ == "__main__":
    sys.exit(main())
