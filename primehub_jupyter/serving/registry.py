"""Runtimes and packagers as plugins: found through Python entry points, imported when used."""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BundleError, ModelLoadError, PackagingError

if TYPE_CHECKING:
    from .descriptor import BundleDescriptor
    from .runtimes.base import Packager, Runtime

#: Entry-point group of runtimes: name = the `runtime:` of bundle.yaml, value = "module:Class".
RUNTIME_GROUP = "primehub_jupyter.runtimes"
#: Entry-point group of packagers: name = the framework (`package(framework=...)`).
PACKAGER_GROUP = "primehub_jupyter.packagers"
#: The distribution whose entry points register the built-in runtimes and packagers.
OWN_DISTRIBUTION = "primehub-jupyter"

_HERE = "primehub_jupyter.serving.runtimes"
# Used only when primehub-jupyter's own metadata is missing (a source tree on PYTHONPATH that
# was never pip-installed): the same table as [project.entry-points] in pyproject.toml, which
# tests/runtimes/test_plugins.py keeps equal to it.
BUILTIN_RUNTIMES = {
    "sklearn": f"{_HERE}.sklearn:SklearnRuntime",
    "xgboost": f"{_HERE}.xgboost:XGBoostRuntime",
    "lightgbm": f"{_HERE}.lightgbm:LightGBMRuntime",
    "pytorch": f"{_HERE}.pytorch:PyTorchRuntime",
    "keras": f"{_HERE}.keras:KerasRuntime",
    "tensorflow": f"{_HERE}.tensorflow:TensorFlowRuntime",
    "onnx": f"{_HERE}.onnx:OnnxRuntime",
    "mlflow": f"{_HERE}.mlflow:MlflowRuntime",
    "custom": f"{_HERE}.custom:CustomRuntime",
}
BUILTIN_PACKAGERS = {
    "sklearn": f"{_HERE}.sklearn:SklearnPackager",
    "xgboost": f"{_HERE}.xgboost:XGBoostPackager",
    "lightgbm": f"{_HERE}.lightgbm:LightGBMPackager",
    "pytorch": f"{_HERE}.pytorch:PyTorchPackager",
    "keras": f"{_HERE}.keras:KerasPackager",
    "tensorflow": f"{_HERE}.tensorflow:TensorFlowPackager",
    "onnx": f"{_HERE}.onnx:OnnxPackager",
    "mlflow": f"{_HERE}.mlflow:MlflowPackager",
    "custom": f"{_HERE}.custom:CustomPackager",
}
#: The order names are listed in to people ("supported are ..."); plugins follow, by name.
_SHOWN_FIRST = tuple(BUILTIN_RUNTIMES)


class PluginError(Exception):
    """A plugin is unknown, registered twice, or failed to load; the message names it."""


@dataclass(frozen=True)
class Plugin:
    """One registration: its name, "module:attr" (or the object itself) and who provides it."""

    name: str
    target: Any
    provider: str

    def describe(self) -> str:
        """`name = module:Class (from dist 1.0)`, for messages that must name the plugin."""
        target = self.target if isinstance(self.target, str) else _qualname(self.target)
        return f"{self.name} = {target} (from {self.provider})"


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


class PluginRegistry:
    """The plugins of one entry-point group; a plugin is imported the first time it is asked for.

    A built-in name is looked up in primehub-jupyter's own metadata alone, so serving a built-in
    runtime never reads every installed package's metadata; other names are looked up in all
    of it, read once per process and again when a name is not found (a package installed
    since). A plugin that fails to import, or is not the right kind of object, is an error for
    that name only, never for the registry.
    """

    def __init__(
        self, group: str, kind: str, base: str, name_attr: str, builtins: dict[str, str]
    ) -> None:
        self.group = group
        self.kind = kind
        self._base = base  # "module:Class" every plugin must subclass
        self._name_attr = name_attr  # the class attribute that must equal the registered name
        self._builtins = builtins
        self._own_plugins: dict[str, Plugin] | None = None
        self._other_plugins: dict[str, list[Plugin]] | None = None
        self._in_process: dict[str, Plugin] = {}
        self._loaded: dict[str, Any] = {}

    # ---- finding names (never imports a plugin) --------------------------------------------

    def _own(self) -> dict[str, Plugin]:
        """primehub-jupyter's own registrations (the built-in table if its metadata lacks them)."""
        if self._own_plugins is None:
            try:
                dist = metadata.distribution(OWN_DISTRIBUTION)
                provider = f"{dist.name} {dist.version}"
                entries = {e.name: e.value for e in dist.entry_points if e.group == self.group}
            except metadata.PackageNotFoundError:
                entries = {}
            if not entries:
                _warn_missing_metadata(self.group)
                provider, entries = "built in", dict(self._builtins)
            self._own_plugins = {n: Plugin(n, v, provider) for n, v in entries.items()}
        return self._own_plugins

    def _others(self, *, rescan: bool = False) -> dict[str, list[Plugin]]:
        """Every other installed package's registrations, by name."""
        if self._other_plugins is None or rescan:
            own = self._own()
            found: dict[str, list[Plugin]] = {}
            for entry in metadata.entry_points(group=self.group):
                dist = entry.dist
                if dist is not None and _normalize(dist.name) == OWN_DISTRIBUTION:
                    continue
                provider = f"{dist.name} {dist.version}" if dist is not None else "a package"
                plugin = Plugin(entry.name, entry.value, provider)
                if entry.name in own:
                    # Built-in names are reserved: a bundle's runtime never depends on what
                    # else happens to be installed.
                    _warn_once(
                        f"the {self.kind} plugin {plugin.describe()} is ignored: {entry.name!r} "
                        f"is a built-in {self.kind} of {OWN_DISTRIBUTION}"
                    )
                elif plugin not in found.get(entry.name, []):
                    found.setdefault(entry.name, []).append(plugin)
            self._other_plugins = found
        return self._other_plugins

    def _candidates(self, name: str) -> list[Plugin]:
        if name in self._in_process:  # tests and embedding code: wins over installed packages
            return [self._in_process[name]]
        if name in self._own():
            return [self._own()[name]]
        return self._others().get(name) or self._others(rescan=True).get(name) or []

    def names(self) -> list[str]:
        """Registered names: the built-in ones in their usual order, then the others by name."""
        return sorted({*self._in_process, *self._own(), *self._others()}, key=_shown_order)

    def knows(self, name: str) -> bool:
        """True when `name` is registered (reads entry points again before saying no)."""
        return bool(self._candidates(name))

    # ---- loading ---------------------------------------------------------------------------

    def load(self, name: str) -> Any:
        """The class registered as `name`, imported now if it was not yet.

        Raises PluginError naming the plugin when it is unknown, registered by two packages,
        fails to import, or is not a subclass of the base class.
        """
        if name in self._loaded:
            return self._loaded[name]
        plugins = self._candidates(name)
        if not plugins:
            supported = ", ".join(self.names())
            raise PluginError(
                f"unknown {self.kind} {name!r}: supported {self.kind}s are {supported}"
            )
        if len(plugins) > 1:
            raise PluginError(
                f"the {self.kind} {name!r} is registered by more than one package: "
                + "; ".join(p.describe() for p in plugins)
                + ": uninstall all but one"
            )
        plugin = plugins[0]
        try:
            obj = _resolve(plugin.target)
        except Exception as exc:
            raise PluginError(
                f"the {self.kind} plugin {plugin.describe()} failed to load: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        base = _resolve(self._base)
        if not (isinstance(obj, type) and issubclass(obj, base)):
            raise PluginError(
                f"the {self.kind} plugin {plugin.describe()} is not a subclass of "
                f"{base.__module__}.{base.__qualname__}"
            )
        declared = getattr(obj, self._name_attr, None)
        if declared != name:
            # bundle.yaml records the class's own name: a mismatch would write unservable bundles.
            raise PluginError(
                f"the {self.kind} plugin {plugin.describe()} is registered as {name!r} but its "
                f"class sets {self._name_attr} = {declared!r}; the two must be equal"
            )
        self._loaded[name] = obj
        return obj

    def load_all(self) -> tuple[list[Any], list[str]]:
        """Every plugin that loads, and one message per plugin that does not."""
        loaded, problems = [], []
        for name in self.names():
            try:
                loaded.append(self.load(name))
            except PluginError as exc:
                problems.append(str(exc))
        return loaded, problems

    def register(self, name: str, target: Any) -> None:
        """Register `target` (a class or "module:Class") as `name` in this process only."""
        self._in_process[name] = Plugin(name, target, "registered in this process")
        self._loaded.pop(name, None)

    def unregister(self, name: str) -> None:
        """Forget a registration made with `register()` (installed plugins stay)."""
        self._in_process.pop(name, None)
        self._loaded.pop(name, None)


def _shown_order(name: str) -> tuple[int, str]:
    return (_SHOWN_FIRST.index(name), "") if name in _SHOWN_FIRST else (len(_SHOWN_FIRST), name)


def _normalize(name: str) -> str:
    return name.replace("_", "-").replace(".", "-").lower()


def _resolve(target: Any) -> Any:
    if not isinstance(target, str):
        return target
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


#: Warnings already printed: each is said once per process, not on every bundle or package().
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        print(f"warning: {message}", file=sys.stderr)


def _warn_missing_metadata(group: str) -> None:
    _warn_once(
        f"{OWN_DISTRIBUTION} registers no entry points in {group} here (its package metadata "
        "is missing or out of date, e.g. a source tree on PYTHONPATH that was never "
        "pip-installed): using its built-in table; installed plugins still load. Run "
        "`pip install -e .` in the source tree to fix this"
    )


_BASE = "primehub_jupyter.serving.runtimes.base"
RUNTIMES = PluginRegistry(RUNTIME_GROUP, "runtime", f"{_BASE}:Runtime", "name", BUILTIN_RUNTIMES)
PACKAGERS = PluginRegistry(
    PACKAGER_GROUP, "framework", f"{_BASE}:Packager", "framework", BUILTIN_PACKAGERS
)
_instances: dict[type, Packager] = {}


# ---- runtimes ----------------------------------------------------------------------------------


def register_runtime(name: str, runtime: str | type[Runtime]) -> None:
    """Make `runtime: <name>` in bundle.yaml load with `runtime` in this process.

    Installed packages register runtimes with an entry point in the group `RUNTIME_GROUP`
    instead; this is for code that runs the model server in-process (tests, embedding).
    """
    RUNTIMES.register(name, runtime)


def unregister_runtime(name: str) -> None:
    """Undo `register_runtime(name, ...)`."""
    RUNTIMES.unregister(name)


def runtime_names() -> list[str]:
    """Names accepted in the `runtime:` field of bundle.yaml (imports none of them)."""
    return RUNTIMES.names()


def check_runtime_name(name: str) -> None:
    """BundleError naming the supported runtimes when `name` is not registered."""
    if not RUNTIMES.knows(name):
        raise BundleError(
            f"unknown runtime {name!r}: supported runtimes are {', '.join(runtime_names())}"
        )


def runtime_class(name: str) -> type[Runtime]:
    """The runtime class registered as `name`: BundleError if unknown, ModelLoadError if its
    plugin cannot be imported (the message names the plugin and its package)."""
    check_runtime_name(name)
    try:
        return RUNTIMES.load(name)  # type: ignore[no-any-return]
    except PluginError as exc:
        raise ModelLoadError(str(exc)) from exc


def load_runtime(bundle_dir: Path, descriptor: BundleDescriptor) -> Runtime:
    """Instantiate the bundle's runtime and load its artifact.

    Errors that are not already BundleError/ModelLoadError are wrapped in ModelLoadError so the
    caller gets one message that names the artifact and the runtime.
    """
    runtime = runtime_class(descriptor.runtime)()
    runtime.configure(descriptor)
    try:
        runtime.load(bundle_dir, descriptor)
    except (BundleError, ModelLoadError):
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"the {descriptor.runtime} runtime could not load {descriptor.artifact} from "
            f"{bundle_dir}: {type(exc).__name__}: {exc}"
        ) from exc
    return runtime


# ---- packagers ---------------------------------------------------------------------------------


def _instance(cls: type[Packager]) -> Packager:
    if cls not in _instances:
        _instances[cls] = cls()
    return _instances[cls]


def packagers() -> list[Packager]:
    """Every packager that loads, in the order `package()` tries them (lowest `detect_order`
    first, then by framework name). A plugin that fails to load is left out with a warning
    on stderr naming it, so one broken package never stops the others."""
    classes, problems = PACKAGERS.load_all()
    for problem in problems:
        _warn_once(f"{problem}; skipped")
    ordered = sorted(classes, key=lambda c: (c.detect_order, c.framework))
    return [_instance(cls) for cls in ordered]


def find_packager(model: Any) -> Packager | None:
    """The first packager that accepts `model`, or None."""
    return next((p for p in packagers() if p.accepts(model)), None)


def packager_for(framework: str) -> Packager:
    """The packager of a framework name (`package(framework=...)`), importing only that one.

    PackagingError when the name is unknown or its plugin cannot be loaded (naming it).
    """
    if not PACKAGERS.knows(framework):
        raise PackagingError(
            f"unknown framework {framework!r}: supported are {', '.join(frameworks())}"
        )
    try:
        return _instance(PACKAGERS.load(framework))
    except PluginError as exc:
        raise PackagingError(str(exc)) from exc


def frameworks() -> list[str]:
    """Framework names `package()` knows, in the order they are shown to people."""
    return PACKAGERS.names()


def supported_models() -> str:
    """One sentence listing what `package()` accepts, for error messages."""
    shown = {p.framework: p for p in packagers()}
    return "; ".join(shown[name].description for name in frameworks() if name in shown)
