"""Redirect this process's stdout/stderr file descriptors into a timestamped log file."""

from __future__ import annotations

import atexit
import errno
import mmap
import os
import select
import stat
import struct
import sys
import threading
import time
from pathlib import Path

# A partial line (no newline yet) is written out after this long so a crash or a progress
# message without a newline still reaches the live-tailed file.
_PARTIAL_LINE_SECONDS = 0.5
_MAX_LINE_BYTES = 64 * 1024
_READ_BYTES = 64 * 1024
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
# While lines are being dropped, the file is tried again this often even when nothing is
# printed, so the count of lost lines reaches it soon after the disk works again.
_RETRY_SECONDS = 1.0
_COUNTER = struct.Struct("<Q")


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

    When the file cannot be written (disk full, read-only, I/O error) the pipe is still drained,
    so the server never blocks on a print: lines are dropped and counted (`dropped`, shared with
    forked workers for their /metrics), and the first write that works again is preceded by one
    line saying how many were lost.
    """

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._fd = -1
        self._size = 0
        self._regular = False
        self._read_fd = -1
        self._saved_fds: tuple[int, int] = (-1, -1)
        self._thread: threading.Thread | None = None
        self._owner_pid = os.getpid()
        self._closed = False
        # Shared with workers forked later: they render /metrics, this process counts.
        self._counter = mmap.mmap(-1, 8)
        self._unreported = 0  # dropped since the last line that reached the file
        self._reason = ""
        self._torn = False  # a short write left the file in the middle of a line
        self._retry_at = 0.0

    @property
    def dropped(self) -> int:
        """Lines lost so far because the file could not be written."""
        return int(_COUNTER.unpack_from(self._counter, 0)[0])

    def start(self) -> None:
        """Open the file, point fds 1 and 2 at a pipe and start the copying thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open()
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

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        info = os.fstat(fd)
        # Only a regular file is rotated (never a device such as /dev/null given as the log).
        self._fd, self._size, self._regular = fd, info.st_size, stat.S_ISREG(info.st_mode)

    def _pump(self) -> None:
        pending = b""
        while True:
            if pending or self._unreported:
                # Wake up to write out a partial line, or to retry a failing file, so the
                # count of dropped lines is reported once the disk works, even when idle.
                wait = _PARTIAL_LINE_SECONDS if pending else _RETRY_SECONDS
                ready, _, _ = select.select([self._read_fd], [], [], wait)
                if not ready:
                    if pending:
                        self._write([pending])
                        pending = b""
                    else:
                        self._write([])
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
        """Append `lines` with a timestamp each; when the file fails, count them as dropped."""
        stamp = utc_timestamp().encode() + b" "
        parts = []
        if self._torn:  # end the line an interrupted write left unfinished
            parts.append(b"\n")
        if self._unreported:
            parts.append(
                stamp + b"log: %d lines were dropped because the log file could not be written "
                b"(%s)\n" % (self._unreported, self._reason.encode("utf-8", "replace"))
            )
        parts.extend(stamp + line + b"\n" for line in lines)
        if not parts:
            return
        whole = b"".join(parts)
        data = memoryview(whole)
        try:
            if self._fd < 0:
                if time.monotonic() < self._retry_at:
                    raise OSError(errno.EIO, "the log file could not be opened")
                self._open()
            while data:
                written = os.write(self._fd, data)
                self._size += written
                data = data[written:]
        except OSError as exc:
            self._failed(exc, lines, whole, len(whole) - len(data))
            return
        self._unreported = 0
        self._torn = False
        if self.max_bytes and self._regular and self._size >= self.max_bytes:
            self._rotate()

    def _failed(self, exc: OSError, lines: list[bytes], whole: bytes, written: int) -> None:
        """Account for a write that stopped after `written` bytes of `whole`."""
        if self._fd < 0:
            self._retry_at = time.monotonic() + _RETRY_SECONDS
        self._reason = exc.strerror or str(exc)
        if written:
            self._torn = whole[written - 1 : written] != b"\n"
        # A line is lost when its newline did not reach the file; the notice comes first, so
        # when more newlines are missing than there are lines, the notice is unwritten too and
        # its count stays to be reported.
        missing = whole.count(b"\n", written)
        lost = min(len(lines), missing)
        if self._unreported and missing <= len(lines):
            self._unreported = 0
        self._unreported += lost
        _COUNTER.pack_into(self._counter, 0, self.dropped + lost)

    def _rotate(self) -> None:
        """Keep one previous file (`<name>.1`) so a busy replica cannot fill the disk."""
        try:
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        except OSError:
            self._size = 0  # keep appending here; try again after another max_bytes
            return
        os.close(self._fd)
        self._fd = -1
        try:
            self._open()
        except OSError as exc:
            self._reason = exc.strerror or str(exc)
            self._retry_at = time.monotonic() + _RETRY_SECONDS

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
        if self._thread is None or not self._thread.is_alive():
            if self._fd >= 0:
                os.close(self._fd)
            os.close(self._read_fd)


def install(path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES) -> LogCapture:
    """Start capturing fds 1 and 2 into `path` (appending, rotating) until the process exits.

    OSError when the file cannot be opened at all; later write failures only drop lines.
    """
    capture = LogCapture(Path(path), max_bytes)
    capture.start()
    return capture
