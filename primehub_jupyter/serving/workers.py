"""Pre-fork worker supervisor: several processes serving one listening socket."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable

# Restarts after a recent death wait a little, so a worker crashing at startup does not become
# a busy fork loop; this many deaths within the window means the workers cannot run at all, and
# the supervisor gives up with EXIT_WORKERS_FAILED.
_RESTART_PAUSE = 1.0
_CRASH_WINDOW = 10.0
_MAX_DEATHS_IN_WINDOW = 5
EXIT_WORKERS_FAILED = 1


def _set_parent_death_signal() -> None:
    """Ask Linux to SIGTERM this worker when the supervisor dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def run_workers(serve: Callable[[], None], count: int) -> int:
    """Fork `count` workers that each call `serve()` and keep them running.

    The model is loaded once in this process before forking, so workers share its memory and
    are ready at once. A worker that dies is replaced. SIGTERM or SIGINT is passed on to every
    worker (uvicorn finishes in-flight requests), and this returns 0 once all have exited, or
    EXIT_WORKERS_FAILED when workers keep dying right after they start.
    """
    parent = os.getpid()
    started: set[int] = set()
    stopping = False
    deaths: list[float] = []
    code = 0

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(started):
            # Always SIGTERM: a worker that already got SIGINT from the terminal would treat a
            # second SIGINT as "force quit" and drop in-flight requests.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def fork_worker() -> None:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid:
            started.add(pid)
            return
        code = 0
        try:
            _set_parent_death_signal()
            if os.getppid() != parent:  # the supervisor died between fork() and prctl()
                os._exit(0)
            signal.signal(signal.SIGTERM, _ignore_after_shutdown)
            signal.signal(signal.SIGINT, _ignore_after_shutdown)
            serve()
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            # Skip atexit handlers and finalizers inherited from the supervisor.
            os._exit(code)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for _ in range(count):
            fork_worker()
        while started:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid not in started:
                continue
            started.discard(pid)
            if stopping:
                continue
            now = time.monotonic()
            deaths = [t for t in deaths if now - t < _CRASH_WINDOW] + [now]
            if len(deaths) >= _MAX_DEATHS_IN_WINDOW:
                print(
                    f"workers keep exiting ({_describe_status(status)}, {len(deaths)} times in "
                    f"{_CRASH_WINDOW:.0f} s); stopping the server",
                    file=sys.stderr,
                )
                code = EXIT_WORKERS_FAILED
                stop(signal.SIGTERM, None)
                continue
            print(
                f"worker {pid} exited ({_describe_status(status)}); starting a new one",
                file=sys.stderr,
            )
            if len(deaths) > 1:
                time.sleep(_RESTART_PAUSE)
            if not stopping:
                fork_worker()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def _ignore_after_shutdown(_signum: int, _frame: object) -> None:
    """Absorb the signal uvicorn re-raises after its graceful shutdown, so the exit code is 0."""
