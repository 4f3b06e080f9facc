"""Bubblewrap sandbox for replicas: the bundle, Python and the replica's own files, nothing else."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

MODES = ("auto", "bwrap", "off")

# Top-level system directories a Python process needs, read-only; symlinks (merged /usr) are
# recreated as symlinks. /usr/local sits under /usr.
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
# What of /etc a Python model needs (dynamic loader, names, time zones, certificates, MIME
# types); never all of /etc, whose shadow and Jupyter config files are none of a model's business.
ETC_ENTRIES = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "localtime",
    "timezone",
    "passwd",
    "group",
    "nsswitch.conf",
    "host.conf",
    "hosts",
    "resolv.conf",
    "gai.conf",
    "protocols",
    "services",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "pki",
    "mime.types",
    "os-release",
    "fonts",
    "machine-id",
)
# CPU topology: thread pools (OpenBLAS, torch) read it; it holds no secret.
SYS_ENTRIES = ("sys/devices/system/cpu",)

# What the replica's Python is made of, asked from that Python itself (it may not be ours).
_PYTHON_PATHS = (
    "import importlib.util, json, sys\n"
    "spec = importlib.util.find_spec('primehub_jupyter')\n"
    "package = spec.origin if spec and spec.origin else ''\n"
    "print(json.dumps({'path': [p for p in sys.path if p], 'package': package,"
    " 'prefixes': [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix]}))\n"
)

RO, RW, HIDE = 0, 1, 2  # mount kinds, in the order bubblewrap applies them at one depth


@dataclass
class Mounts:
    """What one replica sees: paths mounted read-only or writable, and paths masked."""

    read_only: list[Path] = field(default_factory=list)
    writable: list[Path] = field(default_factory=list)
    hidden: list[Path] = field(default_factory=list)


def _inside(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def _real(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(path))


class Sandbox:
    """Decides once whether replicas run under bubblewrap, and builds their command lines.

    `auto` sandboxes when `bwrap` works here and otherwise says so once and runs replicas
    unsandboxed; `bwrap` refuses to run replicas without it; `off` never sandboxes.
    """

    def __init__(
        self,
        mode: str,
        *,
        python: str,
        share_network: bool = False,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"sandbox must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        self.python = python
        self.share_network = share_network
        self.bwrap = ""
        self.reason = ""
        self.log = logger or log
        self._python_paths: list[Path] | None = None
        self._checked = False

    @property
    def enabled(self) -> bool:
        """True when replicas run sandboxed (after `check()`)."""
        return bool(self.bwrap)

    def check(self, env: dict[str, str]) -> None:
        """Find and try bubblewrap (once); warn when `auto` has to run without it.

        Raises RuntimeError when the mode is `bwrap` and bubblewrap cannot run.
        """
        if self._checked:
            return
        self._checked = True
        if self.mode == "off":
            self.log.info("replica sandbox is off (LocalEngine.sandbox = 'off')")
            return
        found = shutil.which("bwrap")
        problem = self._try(found) if found else "bwrap is not installed"
        if problem:
            self.reason = problem
            if self.mode == "bwrap":
                raise RuntimeError(
                    f"LocalEngine.sandbox is 'bwrap' but bubblewrap cannot run here: {problem}"
                )
            self.log.warning(
                "replicas run WITHOUT a sandbox: %s. Model code can then read the data dir "
                "(tokens, client hashes, config). Install bubblewrap (apt-get install "
                "bubblewrap) and allow unprivileged user namespaces, or set "
                "LocalEngine.sandbox = 'off' to silence this warning.",
                problem,
            )
            return
        assert found is not None
        self.bwrap = found
        self._python_paths = self._ask_python(env)
        self.log.info("replicas run in a bubblewrap sandbox (%s)", found)

    def _try(self, bwrap: str) -> str:
        """'' when bubblewrap can create the namespaces replicas get; else why not."""
        argv = [bwrap, *self._namespaces(), "--ro-bind", "/", "/", "--proc", "/proc"]
        argv += ["--dev", "/dev", "--", "/bin/true"]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"{bwrap} cannot run ({error})"
        if done.returncode != 0:
            detail = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
            return f"{bwrap} cannot create a sandbox here ({detail[0]})"
        return ""

    def _ask_python(self, env: dict[str, str]) -> list[Path]:
        """Directories the replica's Python imports from: prefixes, sys.path, our package."""
        try:
            done = subprocess.run(
                [self.python, "-c", _PYTHON_PATHS],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
                env=env,
                cwd="/",
            )
            found = json.loads(done.stdout)
        except (OSError, ValueError, subprocess.SubprocessError) as error:
            self.log.warning("could not ask %s for its paths (%s); using ours", self.python, error)
            found = {
                "path": [p for p in sys.path if p],
                "package": str(Path(__file__).resolve().parents[2] / "__init__.py"),
                "prefixes": [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix],
            }
        paths = [Path(p) for p in found["prefixes"] + found["path"]]
        if found["package"]:
            paths.append(Path(found["package"]).parent.parent)  # e.g. a source checkout
        python = Path(self.python)
        paths += [python.parent.parent, _real(python).parent.parent]
        return paths

    def _namespaces(self) -> list[str]:
        # A PID namespace with its own /proc: the model cannot see (or read the environment,
        # or walk /proc/<pid>/root of) any process outside its sandbox. No --new-session: a
        # replica has no controlling terminal (it starts in a new session), and a new session
        # inside would take the model server out of the process group the engine signals.
        args = ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if not self.share_network:
            # The listening socket is inherited already bound, so it keeps serving the host's
            # loopback; the model itself reaches no port of this machine (no other replica,
            # no gateway, no Jupyter server) and no network.
            args.append("--unshare-net")
        # As root, bubblewrap keeps every capability unless told otherwise.
        return [*args, "--cap-drop", "ALL"]

    def mounts_for(
        self,
        *,
        bundle: Path,
        writable: list[Path],
        secrets: list[Path],
        others: list[Path],
    ) -> Mounts:
        """One replica's mounts. `secrets` are never visible; `others` (other deployments'
        bundles) and $HOME are masked where they fall inside a visible directory (a source
        checkout holding $HOME, say), with what must be seen inside them mounted on top."""
        if self._python_paths is None:  # not sandboxed: nothing to mount
            return Mounts()
        home = _real(os.path.expanduser("~"))
        secret_paths = [_real(p) for p in secrets]
        read_only: list[Path] = []
        for path in self._python_paths:
            real = _real(path)
            if not real.exists() or real == Path("/"):
                continue  # never the whole root because of a stray sys.path entry
            if any(_inside(real, s) for s in secret_paths):
                continue
            # Both spellings: the replica runs `python` by the path the engine knows.
            read_only += [Path(os.path.abspath(path)), real]
        for name in SYSTEM_DIRS:
            path = Path("/") / name
            if path.is_dir() and not path.is_symlink():
                read_only.append(path)
        for name in (*(f"etc/{e}" for e in ETC_ENTRIES), *SYS_ENTRIES):
            if (Path("/") / name).exists():
                read_only.append(Path("/") / name)
        bundle = _real(bundle)
        others_real = [_real(o) for o in others]
        return Mounts(
            read_only=[p for p in read_only if p.exists()] + [bundle],
            writable=[_real(w) for w in writable],
            hidden=[*secret_paths, home, *(o for o in others_real if o != bundle)],
        )

    def wrap(self, argv: list[str], mounts: Mounts, *, chdir: Path) -> list[str]:
        """`argv` run inside bubblewrap with exactly `mounts` (unchanged when disabled)."""
        if not self.enabled:
            return argv
        args = [self.bwrap, *self._namespaces()]
        for name in SYSTEM_DIRS:
            path = Path("/") / name
            if path.is_symlink():  # merged /usr: /bin -> usr/bin
                args += ["--symlink", os.readlink(path), str(path)]
        visible = [*mounts.read_only, *mounts.writable]
        ops: set[tuple[int, int, str, Path]] = {(2, HIDE, "--tmpfs", Path("/tmp"))}
        ops |= {(len(p.parts), RO, "--ro-bind", p) for p in mounts.read_only}
        ops |= {(len(p.parts), RW, "--bind", p) for p in mounts.writable}
        for path in mounts.hidden:
            # Masked only where a visible directory would show it; elsewhere it is absent.
            if path != Path("/") and path.exists() and any(_inside(path, v) for v in visible):
                flag = "--tmpfs" if path.is_dir() else "--ro-bind-file"
                ops.add((len(path.parts), HIDE, flag, path))
        # Parents before children: the private /tmp or the masked data dir first, then the
        # bundle or the replica's own directory inside them on top.
        for _depth, _kind, flag, path in sorted(ops):
            if flag == "--tmpfs":
                args += ["--tmpfs", str(path)]
            elif flag == "--ro-bind-file":
                args += ["--ro-bind", "/dev/null", str(path)]
            else:
                args += [flag, str(path), str(path)]
        args += ["--proc", "/proc", "--dev", "/dev", "--chdir", str(_real(chdir)), "--"]
        return args + argv

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        """The child's environment adjusted to the sandbox: a private, writable $HOME."""
        if not self.enabled:
            return env
        return {**env, "HOME": "/tmp", "TMPDIR": "/tmp"}
