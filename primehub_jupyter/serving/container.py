"""Container images for bundles: the build context (Dockerfile, .dockerignore) and builders."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .descriptor import BundleDescriptor

BASE_IMAGE_REPOSITORY = "ghcr.io/primehub-io/primehub-model-server"
#: Where the bundle lives in the image (KServe's and Seldon's model path).
MODEL_DIR = "/mnt/models"
#: Seldon's model port.
MODEL_PORT = 9000
BUILD_DIR = "build"
DOCKERFILE = f"{BUILD_DIR}/Dockerfile"
#: Builders tried in this order by `primehub-deploy package build`.
BUILDERS = ("docker", "podman", "buildah")
_PROBE_TIMEOUT = 20.0

_DOCKERIGNORE = """\
# The build context is the bundle directory; these are not part of the model.
build/
.dockerignore
**/__pycache__
**/*.pyc
**/.ipynb_checkpoints
"""


def base_image() -> str:
    """The model-server base image of this version of primehub-jupyter."""
    from .._version import __version__

    return f"{BASE_IMAGE_REPOSITORY}:{__version__}"


def model_name(descriptor: BundleDescriptor) -> str:
    """MODEL_NAME for the s2i environment: the class for custom Python (as Seldon's wrapper
    expects), else the bundle's name."""
    if descriptor.runtime == "custom" and descriptor.model_class:
        return descriptor.model_class
    return descriptor.name


def dockerfile(descriptor: BundleDescriptor) -> str:
    """The Dockerfile text that turns a bundle into a model image."""
    # JSON strings are valid Dockerfile ENV values and escape anything a name may contain.
    name = json.dumps(model_name(descriptor))
    command = json.dumps(
        [
            "primehub-deploy",
            "model-server",
            MODEL_DIR,
            "--host",
            "0.0.0.0",
            "--port",
            str(MODEL_PORT),
        ]
    )
    return f"""\
# Model image for the bundle {descriptor.name!r} ({descriptor.framework}, runtime \
{descriptor.runtime}).
# The build context is the bundle directory; from there:
#   primehub-deploy package build . --image NAME[:TAG] [--push]
# or with docker (podman: the same arguments; buildah: buildah bud ...):
#   docker build -f {DOCKERFILE} -t NAME[:TAG] .
FROM {base_image()}

# The s2i environment of Seldon's Python wrapper images.
ENV MODEL_NAME={name} \\
    SERVICE_TYPE=MODEL \\
    API_TYPE=REST \\
    PERSISTENCE=0

# Requirements first: this layer stays cached while only the model changes.
USER root
COPY requirements.txt /tmp/model-requirements.txt
RUN pip install --no-cache-dir -r /tmp/model-requirements.txt \\
    && rm /tmp/model-requirements.txt

COPY . {MODEL_DIR}
WORKDIR {MODEL_DIR}
USER 1000
EXPOSE {MODEL_PORT}
CMD {command}
"""


def write_build_context(bundle_dir: Path, descriptor: BundleDescriptor) -> Path:
    """Write `<bundle>/build/Dockerfile` and `<bundle>/.dockerignore`; return the Dockerfile."""
    path = bundle_dir / DOCKERFILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dockerfile(descriptor), encoding="utf-8")
    (bundle_dir / ".dockerignore").write_text(_DOCKERIGNORE, encoding="utf-8")
    return path


@dataclass
class Builder:
    """An image builder found on this machine, and whether it can build right now."""

    name: str
    path: str | None
    works: bool
    problem: str = ""


def probe_builder(name: str) -> Builder:
    """Check that `name` is installed and answers `info` (a docker client without a reachable
    daemon is installed but does not work)."""
    path = shutil.which(name)
    if path is None:
        return Builder(name, None, False, f"{name} is not installed")
    try:
        result = subprocess.run(
            [path, "info"],
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Builder(name, path, False, f"{name} info failed: {exc}")
    if result.returncode == 0:
        return Builder(name, path, True)
    lines = [line.strip() for line in (result.stderr or result.stdout).splitlines()]
    detail = next((line for line in lines if line), f"exit code {result.returncode}")
    if name == "docker":
        return Builder(
            name, path, False, f"docker is installed but its daemon is not reachable: {detail}"
        )
    return Builder(name, path, False, f"{name} is installed but does not work here: {detail}")


def find_builder(preferred: str | None = None) -> tuple[Builder | None, list[Builder]]:
    """The first working builder (only `preferred` when given) and everything probed."""
    probed = [probe_builder(name) for name in ([preferred] if preferred else BUILDERS)]
    return next((b for b in probed if b.works), None), probed


def build_commands(builder: str, bundle_dir: Path, image: str, push: bool) -> list[list[str]]:
    """The commands that build (and push) the bundle's image with `builder`."""
    dockerfile_path = str(bundle_dir / DOCKERFILE)
    build_verb = ["bud"] if builder == "buildah" else ["build"]
    commands = [[builder, *build_verb, "-f", dockerfile_path, "-t", image, str(bundle_dir)]]
    if push:
        commands.append([builder, "push", image])
    return commands


def shell_line(command: list[str]) -> str:
    """A command as one line to paste into a shell."""
    return shlex.join(command)
