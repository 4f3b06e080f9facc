"""Marks on replica processes, so an engine finds its own replicas by scanning, record or not."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import psutil

# Environment every replica process gets from the engine that started it. The engine id alone
# names the data dir (so two servers on one machine never touch each other's replicas); the
# others say which replica slot the process serves and where it listens.
ENGINE_ID_ENV = "PRIMEHUB_ENGINE_ID"
DEPLOYMENT_ENV = "PRIMEHUB_DEPLOYMENT_ID"
REPLICA_ENV = "PRIMEHUB_REPLICA"
PORT_ENV = "PRIMEHUB_REPLICA_PORT"

# <deployment>-<predictor>-<template>-<slot>; replicas of older versions had no predictor part.
_REPLICA_TAIL = re.compile(
    r"(?:(?P<predictor>[a-zA-Z0-9](?:[-_.a-zA-Z0-9]*[a-zA-Z0-9])?)-)?"
    r"(?P<template>[0-9a-f]{5})-(?P<slot>\d{1,3})"
)


def replica_name(deployment_id: str, predictor: str, template: str, slot: int) -> str:
    """The name of a replica process: its deployment, predictor, template and slot."""
    return f"{deployment_id}-{predictor}-{template}-{slot}"


def _split(replica: str, deployment_id: str) -> re.Match[str] | None:
    prefix = f"{deployment_id}-"
    if not deployment_id or not replica.startswith(prefix):
        return None
    return _REPLICA_TAIL.fullmatch(replica, len(prefix))


def predictor_of(replica: str, deployment_id: str) -> str | None:
    """The predictor a replica name carries (None for a name without one)."""
    match = _split(replica, deployment_id)
    return match["predictor"] if match is not None else None


def engine_id(data_dir: Path) -> str:
    """The identity of the engine of a data dir: stable across restarts of the server."""
    resolved = str(Path(data_dir).expanduser().resolve())
    return hashlib.sha256(resolved.encode()).hexdigest()[:16]


def mark_env(engine: str, deployment_id: str, replica: str, port: int) -> dict[str, str]:
    """The environment that marks a replica process as ours."""
    return {
        ENGINE_ID_ENV: engine,
        DEPLOYMENT_ENV: deployment_id,
        REPLICA_ENV: replica,
        PORT_ENV: str(port),
    }


@dataclass(frozen=True)
class MarkedProcess:
    """A running process that carries this engine's mark."""

    pid: int
    create_time: float
    deployment_id: str
    replica: str
    template: str
    slot: int
    port: int


def scan(engine: str, deployment_id: str | None = None) -> list[MarkedProcess]:
    """Every live replica process marked by `engine` (optionally of one deployment).

    Only the top process of each replica is returned: when a replica runs under a wrapper
    (a sandbox) whose child inherits the mark, the wrapper is the process the engine owns.
    Blocking (reads /proc): call it off the event loop.
    """
    found: dict[int, tuple[MarkedProcess, int]] = {}
    needle = f"{ENGINE_ID_ENV}={engine}".encode()
    for pid in psutil.pids():
        if not _may_carry(pid, needle):
            continue
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            env = proc.environ()
            created, parent = proc.create_time(), proc.ppid()
        except (psutil.Error, OSError):
            continue  # another user's process, or it ended meanwhile
        if env.get(ENGINE_ID_ENV) != engine:
            continue
        marked = _parse(pid, created, env)
        if marked is None or (deployment_id is not None and marked.deployment_id != deployment_id):
            continue
        found[pid] = (marked, parent)
    return [
        marked
        for marked, parent in found.values()
        if not (parent in found and found[parent][0].replica == marked.replica)
    ]


def _may_carry(pid: int, needle: bytes) -> bool:
    """A cheap first look at a process's environment (Linux); True where it cannot look."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return needle in f.read()
    except FileNotFoundError:
        return not os.path.isdir("/proc/self")  # no procfs: let psutil look
    except OSError:
        return False


def _parse(pid: int, create_time: float, env: dict[str, str]) -> MarkedProcess | None:
    deployment_id = env.get(DEPLOYMENT_ENV, "")
    replica = env.get(REPLICA_ENV, "")
    match = _split(replica, deployment_id)
    if match is None:
        return None
    try:
        port = int(env.get(PORT_ENV, ""))
    except ValueError:
        port = 0
    return MarkedProcess(
        pid=pid,
        create_time=create_time,
        deployment_id=deployment_id,
        replica=replica,
        template=match["template"],
        slot=int(match["slot"]),
        port=port,
    )
