"""Replica log files: tail, merge across replicas, follow and download."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

LOG_NAME = "output.log"
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")
_CHUNK = 64 * 1024


def log_files(replica_dir: Path) -> list[Path]:
    """The replica's log files, oldest first (a rotated '.1' before the live one)."""
    live = replica_dir / LOG_NAME
    rotated = replica_dir / (LOG_NAME + ".1")
    return [p for p in (rotated, live) if p.exists()]


def tail_lines(path: Path, count: int | None) -> list[str]:
    """The last `count` lines of a file (all when None), read from the end."""
    if not path.exists():
        return []
    with open(path, "rb") as f:
        if count is None:
            data = f.read()
        else:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            data = b""
            position = end
            while position > 0 and data.count(b"\n") <= count:
                step = min(_CHUNK, position)
                position -= step
                f.seek(position)
                data = f.read(step) + data
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines if count is None else lines[-count:] if count else []


def replica_tail(replica_dir: Path, count: int | None) -> list[str]:
    """Last lines across the rotated and live file of one replica."""
    lines: list[str] = []
    for path in reversed(log_files(replica_dir)):
        wanted = None if count is None else count - len(lines)
        if wanted is not None and wanted <= 0:
            break
        lines = tail_lines(path, wanted) + lines
    return lines


def _sort_key(line: str) -> str:
    # Lines without a timestamp (a crash before logging was set up) sort with the previous one.
    return line[:24] if _TIMESTAMP.match(line) else ""


def merged_tail(replicas: dict[str, Path], count: int | None) -> list[str]:
    """Lines of several replicas interleaved by time, each tagged with its replica."""
    if len(replicas) == 1:
        return replica_tail(next(iter(replicas.values())), count)
    tagged: list[tuple[str, int, str]] = []
    for name, path in replicas.items():
        last = ""
        for i, line in enumerate(replica_tail(path, count)):
            last = _sort_key(line) or last
            tagged.append((last, i, _tag(name, line)))
    tagged.sort(key=lambda item: (item[0], item[1]))
    lines = [t[2] for t in tagged]
    return lines if count is None else lines[-count:]


def _tag(replica: str, line: str) -> str:
    if _TIMESTAMP.match(line):
        return f"{line[:24]} [{replica}] {line[25:]}"
    return f"[{replica}] {line}"


async def follow(
    replicas: Callable[[], dict[str, Path]], *, poll: float = 0.3, tag: bool | None = None
) -> AsyncIterator[str]:
    """Yield lines appended to the replicas' logs from now on, until the consumer stops.

    `replicas` is called on every poll so replicas that appear later are followed too.
    """
    # Where we are in each file, and which file (inode) that was: a rotation swaps the inode.
    offsets: dict[Path, tuple[int, int]] = {}
    partial: dict[Path, bytes] = {}
    for path in (d / LOG_NAME for d in replicas().values()):
        if path.exists():
            info = path.stat()
            offsets[path] = (info.st_ino, info.st_size)
    while True:
        current = replicas()
        use_tag = tag if tag is not None else len(current) > 1
        for name, directory in current.items():
            path = directory / LOG_NAME
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            inode, start = offsets.get(path, (info.st_ino, 0))
            if inode != info.st_ino or info.st_size < start:
                start = 0  # rotated (or truncated): read the new file from its start
            size = info.st_size
            offsets[path] = (info.st_ino, size)
            if size == start:
                continue
            with open(path, "rb") as f:
                f.seek(start)
                data = partial.pop(path, b"") + f.read(size - start)
            *complete, rest = data.split(b"\n")
            if rest:
                partial[path] = rest
            for raw in complete:
                line = raw.decode("utf-8", errors="replace")
                yield _tag(name, line) if use_tag else line
        await asyncio.sleep(poll)


async def download(replicas: dict[str, Path]) -> AsyncIterator[bytes]:
    """Every log file of the replicas, whole, in chunks; a header line per replica."""
    for name, directory in replicas.items():
        if len(replicas) > 1:
            yield f"===== replica {name} =====\n".encode()
        for path in log_files(directory):
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    yield chunk
                    await asyncio.sleep(0)
