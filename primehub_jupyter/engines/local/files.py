"""The local engine's data dir: where things live in it, and its private files (0700, 0600)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create `path` and any missing parent with mode 0700 (existing ones are left alone)."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=DIR_MODE)
    return path


def restrict(path: Path, mode: int = FILE_MODE) -> None:
    """Take group and other bits off an existing file or directory (data dirs of old versions)."""
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_mode & 0o077:
            path.chmod(mode)


def open_append(path: Path) -> BinaryIO:
    """Open a log for appending, created 0600."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)  # a log left by an older version may be wider
    return os.fdopen(fd, "ab")


def write_private(path: Path, text: str) -> None:
    """Replace a small file's content atomically; the file is 0600."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def restrict_tree(root: Path) -> None:
    """Make every directory (0700) and file (0600) under `root` private to its owner.

    For data dirs written by older versions (0755 directories, 0644 logs); what exists
    now stays private because everything is created that way.
    """
    restrict(root, DIR_MODE)
    for directory, subdirs, names in os.walk(root):
        base = Path(directory)
        for name in subdirs:
            restrict(base / name, DIR_MODE)
        for name in names:
            path = base / name
            if not path.is_symlink():
                restrict(path)


def replica_dir(data_dir: Path, deployment_id: str, name: str) -> Path:
    """Where a replica's log and termination log live."""
    return data_dir / "deployments" / deployment_id / "replicas" / name


def request_log_dir(data_dir: Path) -> Path:
    """Where replicas write request/response logs when a deployment turns them on."""
    return data_dir / "request-logs"
