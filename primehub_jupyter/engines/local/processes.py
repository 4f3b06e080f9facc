"""Replica and gateway processes: spawn on an inherited socket, adopt, probe, terminate."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import psutil

from ...core.models import format_time
from .files import open_append

# Files our children create (logs, request logs, the gateway's port file) are theirs alone.
CHILD_UMASK = 0o077
# bubblewrap's launcher and its PID 1 do not pass signals on: the launcher dies of SIGTERM
# (leaving the model server running, its exit code lost) and PID 1 ignores it.
SANDBOX_LAUNCHERS = frozenset({"bwrap"})


def timestamp() -> str:
    """The log line timestamp format shared with the model server."""
    return format_time(datetime.now(timezone.utc))


def append_engine_line(log_file: Path, text: str) -> None:
    """Write an engine event into a replica's log, so users see it in context."""
    with open_append(log_file) as f:
        f.write(f"{timestamp()} [engine] {text}\n".encode())


def bind_loopback() -> socket.socket:
    """A listening socket on 127.0.0.1 with a free port, to hand to a child process."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


# Seconds to wait for a SIGKILLed process to be gone before giving up on it.
KILL_WAIT_SECONDS = 10.0


@dataclass
class ProcessHandle:
    """A process we started (with its Popen) or adopted from an earlier server (pid only)."""

    pid: int
    create_time: float
    popen: subprocess.Popen | None = None
    sandboxed: bool = False
    # A replica forked by a template is not our child: the template writes its exit code here.
    exit_file: Path | None = None

    @classmethod
    def adopt(cls, pid: int, create_time: float) -> ProcessHandle | None:
        """The process if it is still the one we started (same pid and start time)."""
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - create_time) > 0.01:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        return cls(pid, create_time)

    def exit_code(self) -> int | None:
        """None while running; the exit code (or -1 when unknown) once it has ended."""
        if self.popen is not None:
            code = self.popen.poll()
            if code is not None and self.sandboxed and 128 < code < 128 + 65:
                return 128 - code  # bubblewrap reports death by signal N as 128 + N, as shells do
            return code
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 0.01:
                return self._recorded_exit()
            if proc.status() == psutil.STATUS_ZOMBIE:
                return self._recorded_exit()
        except psutil.NoSuchProcess:
            return self._recorded_exit()
        return None

    def _recorded_exit(self) -> int:
        """The exit code its template wrote (when forked by one), else -1 (unknown)."""
        if self.exit_file is not None:
            with contextlib.suppress(OSError, ValueError):
                return int(self.exit_file.read_text().strip())
        return -1

    def signal(self, sig: int) -> None:
        """Signal the process group it leads (a sandboxed model server is not its leader).

        SIGKILL goes to the whole group. Other signals skip sandbox launchers, which do not
        forward them: the model server inside gets them, stops gracefully, and the launcher
        exits with its exit code.
        """
        if self.exit_code() is not None:
            return
        if not self._leads_group():
            # Not a group leader (e.g. a sandbox whose launcher was killed, found by its mark):
            # signal it and its descendants directly, or nothing would ever reach it.
            for pid in self._tree():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            return
        if sig == signal.SIGKILL:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)
            return
        for pid in self.group():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def kill_leftovers(self) -> None:
        """After the leader ended: SIGKILL what is left of its group.

        A sandbox whose launcher was killed keeps running with the group's id (bwrap cannot
        follow its parent without also dying with a crashed server); no new process can take
        that id while a member lives, so this reaches exactly the leftovers.
        """
        if self.group(launchers=True):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)

    def _leads_group(self) -> bool:
        try:
            return os.getpgid(self.pid) == self.pid
        except (ProcessLookupError, PermissionError):
            return True  # gone: the group may still hold its children

    def _tree(self) -> list[int]:
        """Its pid and its descendants' (deepest last)."""
        try:
            proc = psutil.Process(self.pid)
            return [self.pid, *(c.pid for c in proc.children(recursive=True))]
        except psutil.Error:
            return [self.pid]

    def group(self, *, launchers: bool = False) -> list[int]:
        """Pids of the processes in our group (sandbox launchers only when asked)."""
        members = []
        for proc in psutil.process_iter(["name"]):
            try:
                if os.getpgid(proc.pid) != self.pid:
                    continue
            except (ProcessLookupError, PermissionError):
                continue
            if launchers or proc.info["name"] not in SANDBOX_LAUNCHERS:
                members.append(proc.pid)
        return members

    async def terminate(self, grace: float) -> None:
        """SIGTERM, then SIGKILL when it has not ended after `grace` seconds."""
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.exit_code() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.exit_code() is None:
            self.signal(signal.SIGKILL)
            # SIGKILL cannot be ignored; the deadline only guards against a process we could not
            # signal at all (another user's), so a delete or shutdown never hangs on it.
            deadline = time.monotonic() + KILL_WAIT_SECONDS
            while self.exit_code() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        # Whatever outlived the leader (a sandbox whose launcher was killed, a model's own
        # child processes) still carries the group id, which no new process can take meanwhile.
        self.kill_leftovers()


def spawn(
    argv: list[str],
    *,
    log_file: Path,
    env: dict[str, str],
    cwd: Path,
    pass_fds: tuple[int, ...] = (),
    sandboxed: bool = False,
) -> ProcessHandle:
    """Start a detached child (own session and process group) whose early output goes to
    `log_file`; files it creates are private to the user (umask 077).

    Detached so it survives a crash of the server that started it, which then adopts it.
    """
    with open_append(log_file) as out:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            pass_fds=pass_fds,
            start_new_session=True,
            umask=CHILD_UMASK,
        )
    try:
        create_time = psutil.Process(popen.pid).create_time()
    except psutil.NoSuchProcess:
        create_time = 0.0
    return ProcessHandle(popen.pid, create_time, popen, sandboxed)


@dataclass
class Prober:
    """HTTP health checks from the engine to its processes, on one pooled session."""

    timeout: float = 2.0
    _session: aiohttp.ClientSession | None = field(default=None, init=False)

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=64, force_close=True),
            )
        return self._session

    async def ok(self, url: str, headers: dict[str, str] | None = None) -> bool:
        """True when GET url answers 200."""
        try:
            async with self.session().get(url, headers=headers) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
