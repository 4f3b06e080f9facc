"""`primehub-deploy serve`: where its API token comes from, and the standalone server's start."""

from __future__ import annotations

import os
import re
import secrets
import shlex
from collections.abc import Callable
from pathlib import Path

TOKEN_ENV = "PRIMEHUB_API_TOKEN"
GENERATED_TOKEN_FILE = "api-token"
# Options that would put a token in the process's argv, where `ps` shows it to every user.
_TOKEN_OPTION = re.compile(r"--?[\w.-]*token(=.*)?", re.IGNORECASE)
ARGV_TOKEN_REFUSED = (
    "serve does not take a token on the command line (every user of the machine can read it "
    f"with ps): export {TOKEN_ENV}=... or use --token-file FILE"
)


class ServeError(Exception):
    """A problem with how serve was asked to start; the message says what to do."""


def api_token(token_file: str | None) -> str | None:
    """The token from $PRIMEHUB_API_TOKEN or `token_file`, or None to generate one.

    The variable is removed from this process's environment once read, so nothing started
    from here (gateway, replicas, jobs) inherits it.
    """
    from_env = os.environ.pop(TOKEN_ENV, None) or None
    if token_file and from_env:
        raise ServeError(f"give the token once: either {TOKEN_ENV} or --token-file, not both")
    if not token_file:
        return from_env
    try:
        token = Path(token_file).read_text().strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ServeError(f"cannot read the token file {token_file}: {error}") from None
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise ServeError(f"the token file {token_file} must hold one token on one line")
    return token


def check_extra_args(extra: tuple[str, ...] | list[str]) -> None:
    """Refuse a token passed through to Jupyter (e.g. --IdentityProvider.token=...)."""
    if any(_TOKEN_OPTION.fullmatch(arg) for arg in extra):
        raise ServeError(ARGV_TOKEN_REFUSED)


def write_generated_token(data_dir: Path, token: str) -> Path:
    """Keep a generated token in a file only its owner can read, and say where it is."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = data_dir / GENERATED_TOKEN_FILE
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return path


def new_token() -> str:
    """A random API token."""
    return secrets.token_hex(24)


def default_data_dir() -> Path:
    """Where serve keeps its state when --data-dir is not given (as PrimeHubApp does)."""
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "primehub"


def start(
    *,
    port: int,
    ip: str,
    data_dir: str | None,
    token_file: str | None,
    gateway_port: int | None,
    extra: list[str],
    say: Callable[[str], None],
) -> None:
    """Serve the PrimeHub API and the local engine until stopped."""
    from .app import ServeApp

    check_extra_args(extra)
    token = api_token(token_file)
    if token is None:
        token = new_token()
        where = Path(data_dir).absolute() if data_dir else default_data_dir()
        path = write_generated_token(where, token)
        say(
            f"export PRIMEHUB_API_URL=http://{ip}:{port}/ "
            f"PRIMEHUB_API_TOKEN=$(cat {shlex.quote(str(path))})"
        )
    argv = [
        f"--ServerApp.port={port}",
        f"--ServerApp.ip={ip}",
        "--ServerApp.port_retries=0",
        "--ServerApp.open_browser=False",
        "--ServerApp.allow_root=True",
    ]
    if data_dir:
        argv.append(f"--PrimeHubApp.data_dir={os.path.abspath(data_dir)}")
    if gateway_port is not None:
        argv.append(f"--LocalEngine.gateway_port={gateway_port}")
    argv.extend(extra)
    ServeApp.serve(argv, token)
