"""Model bundles on disk: `load_bundle()` reads and checks a bundle directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml
from pydantic import ValidationError

from .descriptor import FORMAT_VERSION, BundleDescriptor, Sample, Signature, TensorSpec
from .errors import BundleError
from .registry import check_runtime_name

__all__ = [
    "DESCRIPTOR_FILE",
    "FORMAT_VERSION",
    "REQUIREMENTS_FILE",
    "BundleDescriptor",
    "Sample",
    "Signature",
    "TensorSpec",
    "load_bundle",
]

DESCRIPTOR_FILE = "bundle.yaml"
REQUIREMENTS_FILE = "requirements.txt"
_CREATE_HINT = "create one with primehub_jupyter.package(model, path)"


def load_bundle(path: str | os.PathLike[str]) -> BundleDescriptor:
    """Read and check `<path>/bundle.yaml` (or the bundle.yaml file itself).

    Raises BundleError with a message that says how to fix the bundle: no bundle.yaml, invalid
    YAML or fields, a newer formatVersion, an unknown runtime, or a missing artifact.
    """
    bundle_dir = Path(path).expanduser()
    if bundle_dir.name == DESCRIPTOR_FILE and bundle_dir.is_file():
        bundle_dir = bundle_dir.parent
    bundle_dir = bundle_dir.absolute()
    if not bundle_dir.exists():
        raise BundleError(f"model bundle {bundle_dir} does not exist; {_CREATE_HINT}")
    if not bundle_dir.is_dir():
        raise BundleError(
            f"{bundle_dir} is a file, but a model bundle is a directory with {DESCRIPTOR_FILE}; "
            f"{_CREATE_HINT}"
        )
    descriptor_path = bundle_dir / DESCRIPTOR_FILE
    if not descriptor_path.is_file():
        raise BundleError(
            f"no {DESCRIPTOR_FILE} in {bundle_dir}: is this a model bundle? {_CREATE_HINT}"
        )
    try:
        data = yaml.safe_load(descriptor_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise BundleError(f"{descriptor_path} is not valid YAML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"cannot read {descriptor_path}: {exc}") from None
    if not isinstance(data, dict):
        raise BundleError(
            f"{descriptor_path} must be a YAML mapping with name, framework, runtime and "
            f"artifact keys; {_CREATE_HINT}"
        )

    version = data.get("formatVersion", FORMAT_VERSION)
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise BundleError(
            f"{descriptor_path} has formatVersion {version}, newer than this server reads "
            f"({FORMAT_VERSION}): upgrade primehub-jupyter where the model server runs"
        )
    try:
        descriptor = BundleDescriptor.model_validate(data)
    except ValidationError as exc:
        raise BundleError(f"{descriptor_path} is invalid: {_describe_errors(exc)}") from None
    if descriptor.format_version != FORMAT_VERSION:
        raise BundleError(
            f"{descriptor_path} has formatVersion {descriptor.format_version}; "
            f"this server reads formatVersion {FORMAT_VERSION}"
        )

    try:
        check_runtime_name(descriptor.runtime)
    except BundleError as exc:
        raise BundleError(f"{descriptor_path}: {exc}") from None

    named = [("artifact", descriptor.artifact)]
    if descriptor.source:
        named.append(("source", descriptor.source))
    named += [("files", name) for name in descriptor.files or []]
    for field, relative in named:
        resolved = (bundle_dir / relative).resolve()
        if not resolved.is_relative_to(bundle_dir.resolve()):
            raise BundleError(
                f"{descriptor_path}: {field} {relative!r} points outside the bundle; "
                "it must be a path relative to the bundle directory"
            )
        if not resolved.exists():
            raise BundleError(
                f"{field} {relative} not found in {bundle_dir} (named by "
                f"{DESCRIPTOR_FILE}): copy the whole bundle directory, or package the model again"
            )
    if descriptor.model_extra:
        print(
            f"warning: {descriptor_path}: ignoring unknown keys "
            f"{', '.join(sorted(descriptor.model_extra))} (written by a newer primehub-jupyter?)",
            file=sys.stderr,
        )
    descriptor._bundle_dir = bundle_dir
    return descriptor


def _describe_errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
