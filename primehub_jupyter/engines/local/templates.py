"""Replica templates: one warm, sandboxed process per deployment template that forks replicas."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from ...core.models import Predictor
from ...serving.template import EXIT_CODE_FILE, receive_message, send_message
from .adoption import DEPLOYMENT_ENV, ENGINE_ID_ENV, PORT_ENV, REPLICA_ENV
from .processes import ProcessHandle

MODES = ("auto", "on", "off")
# A forked replica answers its fork request within this (it only builds its app object).
FORK_SECONDS = 30.0
# What a template's mark slots hold until a replica writes its own (never a valid replica name,
# so the engine's scan skips the template itself).
PLACEHOLDER = "~"
PORT_WIDTH = 5  # ports are written zero-padded, so every port fits the template's slot

log = logging.getLogger(__name__)


def template_mark_env(engine: str, deployment_id: str, name_length: int) -> dict[str, str]:
    """The marks of a template process: its replicas' slots, to be overwritten after a fork.

    The replica name goes last: a shorter name is padded with NULs, which end the block for
    readers of /proc/<pid>/environ.
    """
    return {
        ENGINE_ID_ENV: engine,
        DEPLOYMENT_ENV: deployment_id,
        PORT_ENV: "0" * PORT_WIDTH,
        REPLICA_ENV: PLACEHOLDER * name_length,
    }


def replica_mark_env(replica: str, port: int) -> dict[str, str]:
    """What a forked replica writes over its template's slots."""
    return {PORT_ENV: f"{port:0{PORT_WIDTH}d}", REPLICA_ENV: replica}


@dataclass
class TemplateProcess:
    """One running template: its process, the engine's end of its control channel, its state."""

    deployment_id: str
    template: str
    directory: Path
    handle: ProcessHandle
    control: socket.socket
    ready: bool = False
    failed: str = ""  # why it never became ready (replicas of it then start the usual way)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def ended(self) -> bool:
        return self.handle.exit_code() is not None

    @staticmethod
    def files(directory: Path) -> tuple[Path, Path]:
        """A template's log and termination log in its directory."""
        return directory / "template.log", directory / "termination-log"

    @property
    def termination_log(self) -> Path:
        return self.files(self.directory)[1]

    def wait_ready(self, timeout: float) -> None:
        """Block until the template says ready, ends, or `timeout` passes (sets ready/failed)."""
        deadline = time.monotonic() + timeout
        self.control.settimeout(0.5)
        while time.monotonic() < deadline:
            try:
                message, fds, _pid = receive_message(self.control)
            except TimeoutError:
                if self.ended:
                    break
                continue
            except (OSError, ValueError) as error:
                self.failed = f"template control channel failed: {error}"
                return
            for fd in fds:
                with contextlib.suppress(OSError):
                    socket.socket(fileno=fd).close()
            if message is not None and message.get("ready"):
                self.ready = True
                return
            if message is None:
                break
        reason = ""
        with contextlib.suppress(OSError):
            reason = self.termination_log.read_text().strip()
        if not reason and not self.ended:
            reason = f"not ready within {timeout:g} s"
        self.failed = reason or f"exited with code {self.handle.exit_code()}"

    def fork(self, request: dict[str, Any], sock: socket.socket) -> ProcessHandle:
        """Ask for one replica on `sock` (blocking); its handle, by the pid the kernel reports."""
        self.control.settimeout(FORK_SECONDS)
        try:
            send_message(self.control, request, [sock.fileno()])
            message, fds, pid = receive_message(self.control)
        except (TimeoutError, ValueError) as error:
            raise OSError(f"the replica template did not fork: {error}") from error
        for fd in fds:
            with contextlib.suppress(OSError):
                socket.socket(fileno=fd).close()
        if message is None or pid is None or "pid" not in message:
            problem = (message or {}).get("error", "the template ended")
            raise OSError(f"the replica template did not fork: {problem}")
        try:
            created = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:
            created = 0.0
        exit_file = Path(request["directory"]) / EXIT_CODE_FILE
        return ProcessHandle(pid, created, exit_file=exit_file)

    def close(self) -> None:
        """Close the engine's end: the template forks no more and exits once its replicas have."""
        with contextlib.suppress(OSError):
            self.control.close()


def uses_templates(mode: str, predictor: Predictor) -> bool:
    """Whether replicas of `predictor` fork from a template: `auto` for autoscaled predictors
    (they start replicas often, from zero too), `on` always, `off` never."""
    return mode == "on" or (mode == "auto" and predictor.autoscaled)


class Templates:
    """The engine's templates by (deployment, template): start, fork from, collect, stop."""

    def __init__(self, *, logger: Any = None) -> None:
        self.by_key: dict[tuple[str, str], TemplateProcess] = {}
        self.log = logger or log

    def get(self, deployment_id: str, template: str) -> TemplateProcess | None:
        return self.by_key.get((deployment_id, template))

    def add(self, process: TemplateProcess) -> None:
        old = self.by_key.get((process.deployment_id, process.template))
        if old is not None:
            old.close()
        self.by_key[(process.deployment_id, process.template)] = process

    def discard(self, process: TemplateProcess) -> None:
        """Forget a template (the caller stops it)."""
        process.close()
        key = (process.deployment_id, process.template)
        if self.by_key.get(key) is process:
            del self.by_key[key]

    def unwanted(
        self, wanted: Iterable[tuple[str, str]], grace: float
    ) -> list[Coroutine[Any, Any, None]]:
        """Stops of templates no deployment wants now (deleted, stopped, rolled over), and of
        those that ended; to run beside the tick."""
        keep = set(wanted)
        stops = []
        for key, process in list(self.by_key.items()):
            # A failed one stays (ended) so its replicas keep starting the usual way.
            if key in keep and (process.failed or not process.ended):
                continue
            del self.by_key[key]
            stops.append(self._stop(process, grace))
        return stops

    async def stop_all(self, grace: float) -> None:
        """Stop every template (with the replicas it still runs)."""
        processes = list(self.by_key.values())
        self.by_key.clear()
        await asyncio.gather(*(self._stop(p, grace) for p in processes), return_exceptions=True)

    async def _stop(self, process: TemplateProcess, grace: float) -> None:
        process.close()
        if not process.ended:
            self.log.info(
                "stopping replica template %s-%s", process.deployment_id, process.template
            )
        await process.handle.terminate(grace)
