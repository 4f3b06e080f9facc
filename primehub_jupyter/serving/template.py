"""Replica template: load a bundle once, then fork ready replicas on sockets the engine sends."""

from __future__ import annotations

import array
import contextlib
import dataclasses
import gc
import json
import os
import signal
import socket
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import server

# Exit status of each forked replica, written by the template into the replica's directory:
# the engine reads it when the replica is gone (it is not the replica's parent).
EXIT_CODE_FILE = "exit-code"
MAX_MESSAGE = 64 * 1024
# The fds one fork request may carry (the replica's listening socket).
MAX_FDS = 1


def send_message(sock: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    """One JSON line on the control channel, with file descriptors attached."""
    data = json.dumps(message).encode() + b"\n"
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([data], ancillary)


def receive_message(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int], int | None]:
    """One JSON message, the fds it carried and the sender's pid (when the receiver has
    SO_PASSCRED: the kernel's word, in the receiver's PID namespace); None at EOF."""
    fds = array.array("i")
    space = socket.CMSG_SPACE(MAX_FDS * fds.itemsize) + socket.CMSG_SPACE(12)
    data, ancillary, _flags, _addr = sock.recvmsg(MAX_MESSAGE, space)
    pid = None
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        elif level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = int.from_bytes(payload[:4], sys.byteorder, signed=True)
    if not data:
        for fd in fds:
            os.close(fd)
        return None, [], pid
    return json.loads(data), list(fds), pid


def rewrite_environ_block(values: dict[str, str]) -> bool:
    """Write `values` into this process's original environment block in place, so that
    /proc/<pid>/environ (what the engine scans for its marks) shows them after a fork.

    Each variable must have been given at exec time with a value at least as long (its slot);
    the rest of the slot is filled with NULs, so it must be the block's last variable when
    shorter. False when the block cannot be rewritten (the engine then adopts by pid).
    """
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        # Fields 50 and 51 of stat (env_start, env_end), counted after "pid (comm)".
        start, end = int(fields[47]), int(fields[48])
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            block = bytearray(mem.read(end - start))
            for key, value in values.items():
                name = b"\0" + key.encode() + b"="
                at = block.find(name)
                if at < 0 and block.startswith(name[1:]):
                    at = -1
                elif at < 0:
                    return False
                first = at + len(name)
                last = block.find(b"\0", first)
                last = len(block) if last < 0 else last
                encoded = value.encode()
                if len(encoded) > last - first:
                    return False
                block[first:last] = encoded.ljust(last - first, b"\0")
            mem.seek(start)
            mem.write(bytes(block))
    except (OSError, ValueError, IndexError):
        return False
    return True


class Template:
    """The template process: a loaded model, a control channel, and the replicas it forked."""

    def __init__(self, options: server.ServerOptions, control: socket.socket) -> None:
        self.options = options
        self.control = control
        self.children: dict[int, Path] = {}  # pid -> the replica's directory

    def run(self, capture: Any) -> int:
        """Load, say ready, fork on request; after the engine's end closes, wait for the
        replicas to end, then exit (so an engine crash leaves nothing of its own behind)."""
        try:
            loaded = server.load_model(self.options)
        except Exception as exc:
            traceback.print_exc()
            message = f"model failed to load: {type(exc).__name__}: {exc}"
            return server._fail(self.options, server.EXIT_MODEL_LOAD_FAILED, message)
        _preload()
        # Out of the collector's reach: a collection in a replica would write to every object's
        # header and so copy the pages it shares with the template.
        gc.collect()
        gc.freeze()
        signal.signal(signal.SIGCHLD, self._reap)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        print(f"template ready [pid {os.getpid()}]", flush=True)
        send_message(self.control, {"ready": True})
        while True:
            try:
                request, fds, _pid = receive_message(self.control)
            except (OSError, ValueError) as error:
                print(f"control channel failed: {error}", flush=True)
                request, fds = None, []
            if request is None:
                break
            self._fork(request, fds, loaded, capture)
        print("engine gone: no more replicas; waiting for the running ones", flush=True)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        while self.children:
            self._reap_one(blocking=True)
        return server.EXIT_OK

    def _fork(self, request: dict[str, Any], fds: list[int], loaded: Any, capture: Any) -> None:
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            send_message(self.control, {"error": "a fork request carries one socket"})
            return
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        # Until the child is registered, its exit must not be reaped unrecorded.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # the log thread stays here
                pid = os.fork()
        except OSError as error:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
            os.close(fds[0])
            send_message(self.control, {"error": f"fork failed: {error}"})
            return
        if pid == 0:
            code = 70
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
                code = self._replica(request, fds[0], loaded, capture)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(fds[0])
        self.children[pid] = Path(request["directory"])
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})

    def _replica(self, request: dict[str, Any], fd: int, loaded: Any, old_capture: Any) -> int:
        """In the forked child: its own group, log, marks and socket; then serve."""
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        # Its own process group, as a spawned replica leads one: the engine signals the group.
        os.setpgid(0, 0)
        marks = {str(k): str(v) for k, v in request["environment"].items()}
        os.environ.update(marks)
        rewrite_environ_block(marks)
        directory = Path(request["directory"])
        os.chdir(directory)
        # The template's log pipe is not this replica's: fds 1 and 2 get their own capture.
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)
        if old_capture is not None:
            for fd_ in (old_capture._read_fd, old_capture._fd, *old_capture._saved_fds):
                with contextlib.suppress(OSError):
                    os.close(fd_)
        options = dataclasses.replace(
            self.options,
            fd=fd,
            replica=request["replica"],
            log_file=Path(request["log_file"]),
            termination_log=Path(request["termination_log"]),
        )
        capture = None
        if options.log_file is not None:
            from .logcapture import install

            try:
                capture = install(options.log_file, options.log_max_bytes)
            except OSError as exc:
                return server._fail(options, server.EXIT_STARTUP_FAILED, f"cannot log: {exc}")
        # The kernel stamps this message with our pid as the engine sees it.
        with contextlib.suppress(OSError):
            send_message(self.control, {"pid": os.getpid()})
        self.control.close()
        print(f"forked from template pid {os.getppid()}", flush=True)
        try:
            sock = socket.socket(fileno=fd)
            return server._serve_loaded(options, sock, capture, loaded)
        finally:
            if capture is not None:
                capture.close()

    def _reap(self, _signum: int, _frame: Any) -> None:
        while self.children and self._reap_one(blocking=False):
            pass

    def _reap_one(self, *, blocking: bool) -> bool:
        try:
            pid, status = os.waitpid(-1, 0 if blocking else os.WNOHANG)
        except ChildProcessError:
            self.children.clear()
            return False
        if pid == 0:
            return False
        directory = self.children.pop(pid, None)
        if directory is not None:
            code = os.waitstatus_to_exitcode(status)
            with contextlib.suppress(OSError):
                (directory / EXIT_CODE_FILE).write_text(f"{code}\n")
        return True

    def _stop(self, signum: int, _frame: Any) -> None:
        """Stopped by the engine: the replicas go too (a sandbox would end them anyway)."""
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        raise SystemExit(128 + signum)


def _preload() -> None:
    """Import, once and before any fork, what every replica needs to serve (the app, uvicorn
    and the loop and HTTP implementations it picks): ~0.7 s of imports per replica otherwise."""
    import importlib

    from . import app, metrics, requestlog  # noqa: F401

    with contextlib.suppress(ImportError):
        importlib.import_module("uvloop")
    import uvicorn

    config = uvicorn.Config(
        app=lambda scope, receive, send: None,
        loop="auto",
        http="auto",
        interface="asgi3",
        lifespan="off",
        log_config=None,
    )
    config.load()  # imports the protocol classes; binds nothing


def _run(options: server.ServerOptions) -> int:
    """The template's body, given the model server's parsed command line (`--fd`: control)."""
    capture = None
    if options.log_file is not None:
        from .logcapture import install

        try:
            capture = install(options.log_file, options.log_max_bytes)
        except OSError as exc:
            return server._fail(options, server.EXIT_STARTUP_FAILED, f"cannot log: {exc}")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, server._exit_during_startup)
    if options.fd is None or options.workers != 1:
        return server._fail(options, server.EXIT_STARTUP_FAILED, "a template needs --fd, 1 worker")
    control = socket.socket(fileno=options.fd)
    return Template(options, control).run(capture)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m primehub_jupyter.serving.template` with the model server's options; `--fd`
    is the control channel (a Unix stream socket) instead of a listening socket."""
    return server.main(argv, prog_name="python -m primehub_jupyter.serving.template", run=_run)


if __name__ == "__main__":
    sys.exit(main())
