"""Durable JSON-lines log of requests, responses and feedback, written off the event loop.

Layout under the log directory, one file per UTC day, one JSON object per line:

    <dir>/<deployment>/<model version>/<YYYY-MM-DD>.jsonl            requests and responses
    <dir>/<deployment>/<model version>/<YYYY-MM-DD>.feedback.jsonl   feedback, by Request-ID

Several worker processes append to the same files: every line is written whole by one
`write(2)` on a file opened with O_APPEND, so lines never interleave.
"""

from __future__ import annotations

import base64
import contextlib
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

REQUESTS = "requests"
FEEDBACK = "feedback"
_SUFFIX = {REQUESTS: ".jsonl", FEEDBACK: ".feedback.jsonl"}
#: fsync at most this often by default; a process crash loses nothing that reached write(2).
DEFAULT_FSYNC_SECONDS = 1.0
#: Records waiting for the writer beyond this are dropped (and counted) instead of growing
#: memory without bound when the disk cannot keep up.
MAX_PENDING = 100_000
_BATCH = 512
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_component(value: str, fallback: str) -> str:
    """A path component from an id or version (no separators, never '.' or '..')."""
    cleaned = _UNSAFE.sub("_", value)[:128].strip(".")
    return cleaned or fallback


def _rfc3339(epoch: float) -> str:
    """RFC 3339 UTC with milliseconds."""
    seconds = int(epoch)
    millis = int((epoch - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def json_fragment(body: bytes) -> Any:
    """Embed an already valid JSON document as-is (no second parse).

    Raw newlines can only be whitespace in valid JSON (inside strings they are escaped), so
    turning them into spaces keeps one record per line without changing the document.
    """
    if b"\n" in body or b"\r" in body:
        body = body.replace(b"\n", b" ").replace(b"\r", b" ")
    return orjson.Fragment(body)


def text_or_base64(body: bytes) -> dict[str, Any]:
    """A body that is not JSON: as text when it is UTF-8, else base64."""
    try:
        return {"text": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(body).decode("ascii")}


class RawBody:
    """A request or response body as it went over the wire, turned into JSON by the writer.

    `json_length` is how many leading bytes are a JSON document (the whole body for plain JSON,
    the header for the V2 binary extension, 0 when the body is not JSON).
    """

    __slots__ = ("body", "json_length")

    def __init__(self, body: bytes, json_length: int) -> None:
        self.body = body
        self.json_length = json_length

    def value(self) -> tuple[Any, str | None]:
        """(the JSON value or text/base64 wrapper, base64 of binary data after the JSON)."""
        body, length = self.body, self.json_length
        if length <= 0:
            return text_or_base64(body), None
        document = json_fragment(body if length >= len(body) else body[:length])
        if length >= len(body):
            return document, None
        return document, base64.b64encode(body[length:]).decode("ascii")


class RequestLog:
    """Queue records on the event loop; a background thread appends them in batches.

    `record()` costs one queue put. The writer thread takes whatever is queued (up to 512
    records), encodes it, appends one write per file and flushes; it fsyncs the files at most
    every `fsync_seconds` (0: after every batch) and always on `close()`.
    """

    def __init__(
        self,
        root: Path,
        deployment: str,
        model_version: str,
        *,
        fsync_seconds: float = DEFAULT_FSYNC_SECONDS,
    ) -> None:
        self.root = root
        self.directory = (
            root
            / safe_component(deployment, "model")
            / safe_component(model_version, "unversioned")
        )
        self.fsync_seconds = fsync_seconds
        self.dropped = 0
        self._queue: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._fds: dict[str, tuple[str, int]] = {}  # kind -> (day, fd)
        self._unsynced: set[int] = set()
        self._torn: set[int] = set()  # files whose last write stopped inside a record
        self._synced_at = 0.0
        self._last_error = 0.0

    def start(self) -> None:
        """Start the writer thread (in the process that serves: threads do not survive fork)."""
        if self._thread is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
            self._thread.start()

    def record(self, kind: str, record: dict[str, Any]) -> None:
        """Queue one record of `kind` (REQUESTS or FEEDBACK); never blocks.

        `_epoch` (time.time()) becomes the record's `time`; RawBody values are encoded by the
        writer thread, so the event loop pays for neither.
        """
        if self._queue.qsize() >= MAX_PENDING:
            self.dropped += 1
            return
        record["_kind"] = kind
        self._queue.put(record)

    def close(self) -> None:
        """Write everything queued, fsync and stop the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None
        for _day, fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.fsync(fd)
                os.close(fd)
        self._fds.clear()
        if self.dropped:
            print(
                f"request log: dropped {self.dropped} records (the disk failed or did not keep up)",
                file=sys.stderr,
                flush=True,
            )

    # ---- writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(timeout=self.fsync_seconds or 1.0)
            except queue.Empty:
                self._sync(force=True)
                continue
            batch = []
            item: dict[str, Any] | None = first
            while True:
                if item is None:
                    stopping = True
                    break
                batch.append(item)
                if len(batch) >= _BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write(batch)
            self._sync(force=stopping or self.fsync_seconds == 0)

    def _write(self, batch: list[dict[str, Any]]) -> None:
        lines: dict[tuple[str, str], list[bytes]] = {}
        for raw in batch:
            kind = raw.pop("_kind")
            stamp = _rfc3339(raw.pop("_epoch", None) or time.time())
            day = stamp[:10]
            record: dict[str, Any] = {"time": stamp}
            for key, value in raw.items():
                if isinstance(value, RawBody):
                    record[key], binary = value.value()
                    if binary is not None:
                        record[key + "Binary"] = binary
                else:
                    record[key] = value
            try:
                line = orjson.dumps(record, default=_default)
            except (TypeError, orjson.JSONEncodeError) as exc:
                line = orjson.dumps({"time": record.get("time"), "error": f"unloggable: {exc}"})
            lines.setdefault((kind, day), []).append(line)
        for (kind, day), chunk in lines.items():
            data = b"\n".join(chunk) + b"\n"
            view = memoryview(data)
            fd = -1
            try:
                fd = self._fd(kind, day)
                if fd in self._torn:  # end the record a failed write left unfinished
                    data = b"\n" + data
                    view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                self._torn.discard(fd)
                self._unsynced.add(fd)
            except OSError as exc:
                # Counted (primehub_request_log_records_dropped_total), never silently lost.
                if 0 < len(view) < len(data):
                    self._torn.add(fd)
                self.dropped += min(len(chunk), bytes(view).count(b"\n"))
                now = time.monotonic()
                if now - self._last_error > 60:  # say it once a minute, not per batch
                    self._last_error = now
                    print(
                        f"request log: cannot write ({exc}); {self.dropped} records dropped so far",
                        file=sys.stderr,
                        flush=True,
                    )

    def _fd(self, kind: str, day: str) -> int:
        current = self._fds.get(kind)
        if current is not None and current[0] == day:
            return current[1]
        if current is not None:  # a new UTC day: finish the old file
            with contextlib.suppress(OSError):
                os.fsync(current[1])
                os.close(current[1])
            self._unsynced.discard(current[1])
            self._torn.discard(current[1])
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{day}{_SUFFIX[kind]}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self._fds[kind] = (day, fd)
        return fd

    def _sync(self, *, force: bool) -> None:
        if not self._unsynced:
            return
        now = time.monotonic()
        if not force and now - self._synced_at < self.fsync_seconds:
            return
        for fd in list(self._unsynced):
            with contextlib.suppress(OSError):
                os.fsync(fd)
        self._unsynced.clear()
        self._synced_at = now


def _default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return text_or_base64(bytes(value))
    tolist = getattr(value, "tolist", None)
    if tolist is not None:  # numpy arrays and scalars
        return tolist()
    raise TypeError(f"cannot log {type(value).__name__}")


# ---- reading ------------------------------------------------------------------------------------


def log_files(
    root: Path,
    kind: str = REQUESTS,
    *,
    deployment: str | None = None,
    model_version: str | None = None,
) -> list[Path]:
    """The day files of `kind`, oldest day first (optionally one deployment or model version)."""
    suffix = _SUFFIX[kind]
    dep = safe_component(deployment, "model") if deployment else "*"
    ver = safe_component(model_version, "unversioned") if model_version else "*"
    files = [
        path
        for path in root.glob(f"{dep}/{ver}/*{suffix}")
        if kind == FEEDBACK or not path.name.endswith(_SUFFIX[FEEDBACK])
    ]
    return sorted(files, key=lambda path: (path.name, str(path)))


def read_records(
    root: Path,
    kind: str = REQUESTS,
    *,
    deployment: str | None = None,
    model_version: str | None = None,
    request_id: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Records from the log, oldest day first; `request_id` keeps only that request's."""
    for path in log_files(root, kind, deployment=deployment, model_version=model_version):
        with path.open("rb") as file:
            for line in file:
                if request_id is not None and request_id.encode() not in line:
                    continue  # cheap pre-filter before parsing
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # a line cut short by a crash
                if request_id is None or record.get("requestId") == request_id:
                    yield record
