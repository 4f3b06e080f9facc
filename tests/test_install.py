"""The wheel alone enables the server extension and the prebuilt labextension in a clean venv."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LABEXTENSION_NAME = "primehub-jupyter"
SERVER_EXTENSION_NAME = "primehub_jupyter"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def run(args: list[str | Path], *, env: dict[str, str], cwd: Path, timeout: int) -> str:
    """Run a command, fail the test with its output if it fails, return stdout + stderr."""
    proc = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = ANSI_ESCAPE.sub("", proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"{args} exited with {proc.returncode}:\n{output}"
    return output


def clean_env(extra_path: Path | None = None, jupyter_home: Path | None = None) -> dict[str, str]:
    """The environment of this process, minus anything that leaks our own interpreter's state."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__"}
        and not key.startswith("JUPYTER_")
    }
    env["PYTHONNOUSERSITE"] = "1"
    if extra_path is not None:
        env["PATH"] = os.pathsep.join([str(extra_path), env.get("PATH", "")])
    if jupyter_home is not None:
        # Keep the user's ~/.jupyter (which may disable extensions) out of the verdict.
        env["JUPYTER_CONFIG_DIR"] = str(jupyter_home / "config")
        env["JUPYTER_DATA_DIR"] = str(jupyter_home / "data")
        env["JUPYTER_RUNTIME_DIR"] = str(jupyter_home / "runtime")
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this repository, built once through the PEP 517 backend like pip install does.

    The jupyter-builder hook skips the npm build when primehub_jupyter/labextension is
    already built, so a developer's existing build is reused and only a fresh clone pays
    for `jlpm install && jlpm build:prod`.
    """
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run(
        [*pip, "wheel", "--no-deps", "-w", out, REPO],
        env=clean_env(),
        cwd=out,
        timeout=900,
    )
    (built,) = out.glob("primehub_jupyter-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A new venv with the wheel and its dependencies, plus JupyterLab to list labextensions."""
    root = tmp_path_factory.mktemp("venv")
    prefix = root / "venv"
    run([sys.executable, "-m", "venv", prefix], env=clean_env(), cwd=root, timeout=300)
    python = prefix / "bin" / "python"
    # JupyterLab is not a dependency (the extension also suits other Jupyter frontends),
    # but `jupyter labextension list` needs it, as does every user of the labextension.
    run(
        [python, "-m", "pip", "install", "--disable-pip-version-check", wheel, "jupyterlab>=4,<5"],
        env=clean_env(),
        cwd=root,
        timeout=900,
    )
    return prefix


def jupyter(venv: Path, *args: str) -> str:
    """Run the venv's own `jupyter` with a private Jupyter home; return its combined output."""
    bin_dir = venv / "bin"
    home = venv.parent / "jupyter-home"
    return run(
        [bin_dir / "jupyter", *args],
        env=clean_env(extra_path=bin_dir, jupyter_home=home),
        cwd=venv.parent,
        timeout=300,
    )


def wheel_version(wheel: Path) -> str:
    """The version in a wheel's file name, e.g. 0.1.0 in primehub_jupyter-0.1.0-py3-none-any.whl."""
    return wheel.name.split("-")[1]


def test_wheel_ships_labextension_and_server_config(wheel: Path) -> None:
    version = wheel_version(wheel)
    data = f"primehub_jupyter-{version}.data/data"
    labext = f"{data}/share/jupyter/labextensions/{LABEXTENSION_NAME}"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert f"{labext}/package.json" in names, sorted(names)
        built = json.loads(zf.read(f"{labext}/package.json"))

    assert f"{labext}/install.json" in names
    assert f"{labext}/static/style.js" in names
    assert f"{labext}/{built['jupyterlab']['_build']['load']}" in names
    assert f"{data}/etc/jupyter/jupyter_server_config.d/primehub_jupyter.json" in names
    # The built assets ship once, as shared-data, not also inside the Python package.
    assert not any(name.startswith("primehub_jupyter/labextension/") for name in names)
    assert built["name"] == LABEXTENSION_NAME


def test_server_extension_enabled_and_valid(venv: Path, wheel: Path) -> None:
    output = jupyter(venv, "server", "extension", "list")

    lines = [line.strip() for line in output.splitlines()]
    assert f"{SERVER_EXTENSION_NAME} enabled" in lines, output
    assert f"{SERVER_EXTENSION_NAME} {wheel_version(wheel)} OK" in lines, output
    # A failed import or validation prints "X ..." lines and the word "error".
    problems = [
        line
        for line in lines
        if SERVER_EXTENSION_NAME in line
        and (line.startswith("X ") or "disabled" in line or "error" in line.lower())
    ]
    assert not problems, output


def test_labextension_enabled_and_ok(venv: Path) -> None:
    output = jupyter(venv, "labextension", "list")

    source_version = json.loads((REPO / "labextension" / "package.json").read_text())["version"]
    pattern = re.compile(
        rf"^\s*{re.escape(LABEXTENSION_NAME)} v{re.escape(source_version)} enabled\s+OK"
        rf"\s+\(python, {re.escape(LABEXTENSION_NAME)}\)\s*$",
        re.MULTILINE,
    )
    assert pattern.search(output), output
    problems = [
        line
        for line in output.splitlines()
        if LABEXTENSION_NAME in line and ("disabled" in line or "X" in line.split())
    ]
    assert not problems, output
    assert "not compatible" not in output, output
