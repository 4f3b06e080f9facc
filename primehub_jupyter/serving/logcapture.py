"""Redirect this process's stdout/stderr file descriptors into a timestamped log file."""

from __future__ import annotations

import atexit
import os
import select
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO

# A partial line (no newline yet) is written out after this long so a crash or a progress
# message without a newline still reaches the live-tailed file.
_PARTIAL_LINE_SECONDS = 0.5
_MAX_LINE_BYTES = 64 * 1024
_READ_BYTES = 64 * 1024
DEFAULT_MAX_BYTES = 10 * 1024 * 1024


def utc_timestamp(now: float | None = None) -> str:
    """RFC 3339 UTC time with milliseconds, e.g. 2026-11-22T13:53:00.123Z."""
    if now is None:
        now = time.time()
    seconds = int(now)
    millis = int((now - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class LogCapture:
    """Owns the pipe behind fds 1 and 2 and the thread that copies it into the log file.

    Working on file descriptors (not `sys.stdout`) catches output of C extensions and of
    forked workers too. Use `install()`; `close()` runs at exit and drains everything.
    """

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._file: BinaryIO | None = None
        self._read_fd = -1
        self._saved_fds: tuple[int, int] = (-1, -1)
        self._thread: threading.Thread | None = None
        self._owner_pid = os.getpid()
        self._closed = False

    def start(self) -> None:
        """Open the file, point fds 1 and 2 at a pipe and start the copying thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        self._saved_fds = (os.dup(1), os.dup(2))
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._read_fd = read_fd
        # Python picked block buffering for stdout if it was not a terminal; the file is tailed
        # live, so every line must reach the pipe when it is printed.
        for stream in (sys.stdout, sys.stderr):
            reconfigure = getattr(stream, "reconfigure", None)
            if reconfigure is not None:
                reconfigure(line_buffering=True)
        self._thread = threading.Thread(target=self._pump, name="log-capture", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def _pump(self) -> None:
        assert self._file is not None
        pending = b""
        while True:
            if pending:
                ready, _, _ = select.select([self._read_fd], [], [], _PARTIAL_LINE_SECONDS)
                if not ready:
                    self._write([pending])
                    pending = b""
                    continue
            try:
                chunk = os.read(self._read_fd, _READ_BYTES)
            except OSError:
                chunk = b""
            if not chunk:
                break
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            if len(pending) > _MAX_LINE_BYTES:
                lines.append(pending)
                pending = b""
            if lines:
                self._write(lines)
        if pending:
            self._write([pending])

    def _write(self, lines: list[bytes]) -> None:
        assert self._file is not None
        stamp = utc_timestamp().encode() + b" "
        try:
            self._file.write(b"".join(stamp + line + b"\n" for line in lines))
            self._file.flush()
            if self.max_bytes and self._file.tell() >= self.max_bytes:
                self._rotate()
        except (OSError, ValueError):
            # Keep draining the pipe even if the disk is full: a full pipe would block the
            # server on its next print.
            pass

    def _rotate(self) -> None:
        """Keep one previous file (`<name>.1`) so a busy replica cannot fill the disk."""
        assert self._file is not None
        self._file.close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._file = open(self.path, "ab")  # noqa: SIM115 - closed in close()

    def close(self, timeout: float = 5.0) -> None:
        """Flush Python's streams, give fds 1 and 2 back and wait until the file has it all."""
        if self._closed or os.getpid() != self._owner_pid:
            return  # a forked worker must not tear down its parent's capture
        self._closed = True
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):
                pass
        # Restoring the original fds closes our write ends of the pipe, so the thread sees EOF
        # once every other holder (exited workers) is gone; later output goes to the old streams.
        out_fd, err_fd = self._saved_fds
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.close(out_fd)
        os.close(err_fd)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._file is not None and (self._thread is None or not self._thread.is_alive()):
            self._file.close()
            os.close(self._read_fd)


def install(path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES) -> LogCapture:
    """Start capturing fds 1 and 2 into `path` (appending, rotating) until the process exits."""
    capture = LogCapture(Path(path), max_bytes)
    capture.start()
    return capture
