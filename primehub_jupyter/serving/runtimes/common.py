"""Helpers shared by runtimes and packagers: detection, pinning, sources, column handling."""

from __future__ import annotations

import ast
import contextlib
import csv
import importlib.util
import os
import re
import sys
import threading
import uuid
from collections.abc import Iterable, Iterator
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import ModelLoadError, PackagingError

_LOCAL_VERSION = re.compile(r"\+.*$")
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
# Never pinned for custom code: ours (the server provides it) and Seldon's wrapper (shimmed).
_NOT_PINNED = frozenset({"primehub-jupyter", "seldon-core"})
_CWD_LOCK = threading.Lock()


def defined_in(model: Any, *packages: str) -> bool:
    """True when the object's class (or a base class) comes from one of `packages`.

    Looks only at module names, so it never imports a framework to answer.
    """
    cls = model if isinstance(model, type) else type(model)
    for klass in getattr(cls, "__mro__", (cls,)):
        top = (klass.__module__ or "").split(".", 1)[0]
        if top in packages:
            return True
    return False


def loaded(module: str) -> ModuleType | None:
    """The module if something already imported it, else None (never imports it)."""
    return sys.modules.get(module)


def framework_version(*distributions: str) -> str:
    """The installed version of the first of `distributions` that is installed."""
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


@lru_cache(maxsize=1)
def _module_distributions() -> dict[str, list[metadata.Distribution]]:
    """Import name -> the distributions providing it, in the order and by the rules of
    metadata.packages_distributions(), which parses every distribution's METADATA and builds
    a path object per RECORD line: 0.5 s in a data-science environment, on a notebook's first
    %deploy. Reading the two files as text takes a fifth of that; names are parsed on use."""
    found: dict[str, list[metadata.Distribution]] = {}
    for dist in metadata.distributions():
        for top in _top_level_names(dist):
            found.setdefault(top, []).append(dist)
    return found


def _top_level_names(dist: metadata.Distribution) -> Iterable[str]:
    declared = (dist.read_text("top_level.txt") or "").split()
    if declared:
        return declared
    record = dist.read_text("RECORD")
    if record is None:  # egg-info and the like: the standard library's way
        return {
            f.parts[0] if len(f.parts) > 1 else f.with_suffix("").name
            for f in dist.files or ()
            if f.suffix == ".py"
        }
    names = set()
    for row in csv.reader(record.splitlines()):
        if row and row[0].endswith(".py"):
            parts = [p for p in row[0].split("/") if p not in ("", ".")]
            if parts:
                names.add(parts[0] if len(parts) > 1 else parts[0][: -len(".py")])
    return names


def distribution_of(module: str) -> str | None:
    """The installed distribution that provides the import name `module` (xgboost may come
    from "xgboost" or "xgboost-cpu"), or None when it is not installed or is the stdlib."""
    top = module.split(".", 1)[0]
    if top in sys.stdlib_module_names:
        return None
    providers = _module_distributions().get(top)
    if providers:
        return providers[0].metadata["Name"]
    try:
        metadata.version(top)
    except metadata.PackageNotFoundError:
        return None
    return top


def pin(*modules: str) -> list[str]:
    """`dist==version` lines for the distributions providing these import names.

    Local version labels are dropped (`torch==2.13.0`, not `2.13.0+cpu`): such a pin still
    matches the CPU build on its own index and the default build on PyPI.
    """
    lines: list[str] = []
    seen: set[str] = set()
    for module in modules:
        dist = distribution_of(module)
        if dist is None:
            continue
        key = _normalize(dist)
        if key in seen or key in _NOT_PINNED:
            continue
        seen.add(key)
        try:
            version = _LOCAL_VERSION.sub("", metadata.version(dist))
        except metadata.PackageNotFoundError:
            continue
        lines.append(f"{dist}=={version}")
    return lines


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(line: str) -> str | None:
    """The normalized project name of a requirements.txt line, or None for comments/options."""
    text = line.strip()
    if not text or text.startswith(("#", "-")):
        return None
    match = _REQUIREMENT_NAME.match(text)
    return _normalize(match.group(1)) if match else None


def merge_requirements(*groups: Iterable[str]) -> list[str]:
    """Concatenate requirement lines; the first line naming a project wins."""
    result: list[str] = []
    seen: set[str] = set()
    for group in groups:
        for line in group:
            name = requirement_name(line)
            if name is None or name in seen:
                continue
            seen.add(name)
            result.append(line.strip())
    return result


def imported_modules(source: str) -> list[str]:
    """Top-level names of the absolute imports in Python `source`, in order of appearance."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name.split(".", 1)[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module.split(".", 1)[0])
    return list(dict.fromkeys(names))


def import_source(path: Path, *, fresh: bool = False) -> ModuleType:
    """Import a Python file as a module named after its file (my_model.py -> my_model).

    The file's directory goes first on sys.path so sibling modules import, and the module is
    registered in sys.modules under its name so pickles and dataclasses that refer to it work.
    When that name is already taken by another module (or `fresh`), a unique name is used.
    """
    name = path.stem
    if not name.isidentifier():
        raise ModelLoadError(f"{path.name} cannot be imported: {name!r} is not a Python name")
    directory = str(path.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    existing = sys.modules.get(name)
    if fresh or (existing is not None and getattr(existing, "__file__", None) != str(path)):
        name = f"_primehub_{name}_{uuid.uuid4().hex[:8]}"
    elif existing is not None:
        return existing
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    """Run a block in `path` (so code written for Seldon's wrapper finds its files by relative
    path), then go back. Serialized: the working directory belongs to the whole process."""
    with _CWD_LOCK:
        previous = os.getcwd()
        os.chdir(path)
        try:
            yield
        finally:
            os.chdir(previous)


def copy_into(source: Path, bundle_dir: Path, relative: str) -> None:
    """Copy a file or directory to `bundle_dir/relative`, creating parent directories."""
    import shutil

    target = bundle_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        shutil.copyfile(source, target)


def shape_of(dims: Iterable[Any]) -> list[int]:
    """A shape with None, strings ("batch") and negative sizes turned into -1."""
    result = []
    for dim in dims:
        try:
            size = int(dim)
        except (TypeError, ValueError):
            size = -1
        result.append(size if size >= 0 else -1)
    return result


def labels(values: Iterable[Any]) -> list[str]:
    """Class labels as strings ("0", not "np.int64(0)")."""
    return [str(v.item() if isinstance(v, np.generic) else v) for v in values]


def check_classes(class_names: list[str] | None, count: int | None, kind: str) -> None:
    """Refuse a class_names list whose length does not match the model's classes."""
    if class_names is not None and count is not None and len(class_names) != count:
        raise PackagingError(
            f"class_names has {len(class_names)} names but the {kind} has {count} classes"
        )


class Columns:
    """Turns request arrays into DataFrames for models fitted on named columns."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns

    def frame(self, X: np.ndarray, names: list[str] | None) -> Any:
        """A DataFrame in fitted column order (by request names when they match), or X."""
        try:
            import pandas as pd
        except ImportError:  # numeric models still work on arrays, in fitted column order
            return X
        if X.ndim != 2:
            return X
        if names and sorted(names) == sorted(self.columns):
            return pd.DataFrame(X, columns=names)[self.columns]
        return pd.DataFrame(X, columns=self.columns)


def reorder(X: np.ndarray, names: list[str], columns: list[str]) -> np.ndarray:
    """Columns of X (named `names`) in the model's `columns` order, when they are the same set."""
    if X.ndim != 2 or sorted(names) != sorted(columns):
        return X
    index = {name: i for i, name in enumerate(names)}
    return X[:, [index[c] for c in columns]]


def bundle_name(path: Path) -> str:
    """Where an extra file goes in the bundle: its relative path, else its name."""
    if not path.is_absolute() and ".." not in path.parts:
        return path.as_posix()
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.name
