"""Runtimes as plugins: a third-party framework installed as a distribution, broken plugins, no
import cycle between bundles and runtimes, and the fallback when our own metadata is missing."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import tomllib
import yaml

from primehub_jupyter.serving import registry

from .helpers import REPO, Served, serve

# A framework nobody ships: a Scaler multiplies its input by `factor`; saved as a .tiny file.
# The same module is the plugin (runtime + packager), as a third-party package would ship it.
TINY_MODULE = '''
"""tinyfw: a made-up framework and its primehub-jupyter plugin."""
import json
from pathlib import Path

import numpy as np

from primehub_jupyter.serving.runtimes.base import ModelFacts, ModelPath, Packager, Runtime


class Scaler:
    def __init__(self, factor):
        self.factor = factor


class TinyRuntime(Runtime):
    name = "tinyfw"

    def load(self, bundle_dir, descriptor):
        self.factor = json.loads((bundle_dir / descriptor.artifact).read_text())["factor"]

    def predict(self, X, names, meta):
        return np.asarray(X) * self.factor


class TinyPackager(Packager):
    framework = "tinyfw"
    description = "a tinyfw Scaler"
    file_suffixes = (".tiny",)

    def accepts(self, model):
        return type(model).__module__ == "tinyfw"

    def load_file(self, path, options):
        return Scaler(json.loads(Path(path).read_text())["factor"])

    def inspect(self, model, options):
        return ModelFacts(framework="tinyfw", runtime="tinyfw", framework_version="1.0",
                          n_features=2)

    def save(self, model, bundle_dir, source_file, options, facts):
        (bundle_dir / "model.tiny").write_text(json.dumps({"factor": model.factor}))
        return "model.tiny"
'''


def _distribution(root: Path, name: str, modules: dict[str, str], entry_points: str) -> Path:
    """A distribution as pip would leave it: modules plus <name>-<version>.dist-info."""
    root.mkdir(parents=True, exist_ok=True)
    for module, text in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(text))
    info = root / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    return root


def _python(script: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [REPO, *paths]))},
    )


@pytest.fixture(scope="module")
def logreg_bundle(tmp_path_factory):
    """A scikit-learn bundle to point at other runtimes."""
    from sklearn.linear_model import LogisticRegression

    from primehub_jupyter.serving.packaging import package

    model = LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])
    return package(model, tmp_path_factory.mktemp("bundles") / "logreg")


@pytest.fixture(scope="module")
def tinyfw(tmp_path_factory):
    return _distribution(
        tmp_path_factory.mktemp("site"),
        "tinyfw-plugin",
        {"tinyfw": TINY_MODULE},
        """
        [primehub_jupyter.runtimes]
        tinyfw = tinyfw:TinyRuntime

        [primehub_jupyter.packagers]
        tinyfw = tinyfw:TinyPackager
        """,
    )


def test_an_installed_plugin_packages_and_serves_its_framework(tinyfw, tmp_path):
    # Packaged in its own process, from an object (detected) and from a saved file (the CLI).
    result = _python(
        f"""
        from primehub_jupyter import package
        from tinyfw import Scaler
        package(Scaler(3), {str(tmp_path / "from-object")!r}, sample_input=[[1.0, 2.0]])
        """,
        tinyfw,
    )
    assert result.returncode == 0, result.stderr
    saved = tmp_path / "scaler.tiny"
    saved.write_text('{"factor": 5}')
    cli = subprocess.run(
        [sys.executable, "-m", "primehub_jupyter.cli", "package", str(saved), "-o",
         str(tmp_path / "from-file"), "--framework", "tinyfw", "--sample", "[[1, 1]]"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(tinyfw)])},
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr

    descriptor = yaml.safe_load((tmp_path / "from-object" / "bundle.yaml").read_text())
    assert descriptor["framework"] == descriptor["runtime"] == "tinyfw"
    assert descriptor["sample"]["response"]["data"]["ndarray"] == [[3.0, 6.0]]

    env = {"PYTHONPATH": os.pathsep.join([str(REPO), str(tinyfw)])}
    for bundle, factor in (("from-object", 3), ("from-file", 5)):
        for server in serve(tmp_path / bundle, tmp_path / f"server-{bundle}", env=env):
            assert server.predict([[1, 2], [3, 4]]).tolist() == [
                [factor * 1, factor * 2],
                [factor * 3, factor * 4],
            ]


def test_without_the_plugin_the_bundle_names_the_missing_runtime(tinyfw, tmp_path):
    result = _python(
        f"""
        from primehub_jupyter import package
        from tinyfw import Scaler
        package(Scaler(2), {str(tmp_path / "b")!r}, sample_input=[[1.0, 2.0]])
        """,
        tinyfw,
    )
    assert result.returncode == 0, result.stderr
    # The model server runs where the plugin is not installed: a clear refusal, not a crash.
    with pytest.raises(pytest.fail.Exception, match=r"unknown runtime 'tinyfw'.*sklearn"):
        Served(tmp_path / "b", tmp_path / "server")


BROKEN_MODULES = {
    "broken_plugin": """
        raise ImportError("broken_plugin needs libfoo, which is not installed")
    """,
    "odd_plugin": """
        from primehub_jupyter.serving.runtimes.sklearn import SklearnRuntime

        class NotARuntime:
            pass

        class Renamed(SklearnRuntime):
            name = "something-else"
    """,
}
BROKEN_ENTRY_POINTS = """
    [primehub_jupyter.runtimes]
    broken = broken_plugin:Runtime
    not-a-runtime = odd_plugin:NotARuntime
    renamed = odd_plugin:Renamed

    [primehub_jupyter.packagers]
    broken = broken_plugin:Packager
"""


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    return _distribution(
        tmp_path_factory.mktemp("site"), "broken-plugin", BROKEN_MODULES, BROKEN_ENTRY_POINTS
    )


def _with_runtime(bundle: Path, target: Path, runtime: str) -> Path:
    import shutil

    shutil.copytree(bundle, target)
    data = yaml.safe_load((target / "bundle.yaml").read_text())
    data["runtime"] = runtime
    (target / "bundle.yaml").write_text(yaml.safe_dump(data))
    return target


@pytest.mark.parametrize(
    ("runtime", "message"),
    [
        (
            "broken",
            r"runtime plugin broken = broken_plugin:Runtime \(from broken-plugin 1\.0\) failed "
            r"to load: ImportError: broken_plugin needs libfoo",
        ),
        (
            "not-a-runtime",
            r"not-a-runtime = odd_plugin:NotARuntime \(from broken-plugin 1\.0\) is not a "
            r"subclass of primehub_jupyter\.serving\.runtimes\.base\.Runtime",
        ),
        (
            "renamed",
            r"renamed = odd_plugin:Renamed \(from broken-plugin 1\.0\) is registered as "
            r"'renamed' but its class sets name = 'something-else'",
        ),
    ],
)
def test_a_broken_runtime_plugin_is_named_by_the_model_server(
    broken, logreg_bundle, tmp_path, runtime, message
):
    bundle = _with_runtime(logreg_bundle, tmp_path / "bundle", runtime)
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), str(broken)])}
    with pytest.raises(pytest.fail.Exception, match=message):
        Served(bundle, tmp_path / "server", env=env)


def test_a_broken_packager_plugin_leaves_the_others_working(broken, tmp_path):
    result = _python(
        f"""
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        from primehub_jupyter import package
        from primehub_jupyter.serving.errors import PackagingError
        model = LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])
        package(model, {str(tmp_path / "b")!r})
        print("packaged")
        try:
            package(model, {str(tmp_path / "c")!r}, framework="broken")
        except PackagingError as exc:
            print("refused:", exc)
        """,
        broken,
    )
    assert result.returncode == 0, result.stderr
    assert "packaged" in result.stdout
    named = "broken = broken_plugin:Packager (from broken-plugin 1.0) failed to load: ImportError"
    assert f"refused: the framework plugin {named}" in result.stdout
    # Detection went on without it, and said so once.
    assert result.stderr.count(f"warning: the framework plugin {named}") == 1


def test_two_packages_registering_one_runtime_are_both_named(broken, tinyfw, tmp_path):
    twin = _distribution(
        tmp_path / "twin",
        "tinyfw-twin",
        {"tinyfw_twin": "from tinyfw import TinyRuntime\n"},
        "[primehub_jupyter.runtimes]\ntinyfw = tinyfw_twin:TinyRuntime\n",
    )
    result = _python(
        """
        from primehub_jupyter.serving.registry import runtime_class
        try:
            runtime_class("tinyfw")
        except Exception as exc:
            print(type(exc).__name__, exc)
        """,
        tinyfw,
        twin,
    )
    assert "ModelLoadError the runtime 'tinyfw' is registered by more than one package" in (
        result.stdout
    ), result.stderr
    assert "(from tinyfw-plugin 1.0)" in result.stdout
    assert "(from tinyfw-twin 1.0)" in result.stdout


def test_reading_a_bundle_imports_no_runtime_and_serving_one_imports_only_its_own(
    logreg_bundle,
):
    result = _python(
        f"""
        import sys
        from primehub_jupyter.serving.bundle import load_bundle
        descriptor = load_bundle({str(logreg_bundle)!r})
        print(sorted(m for m in sys.modules if ".serving.runtimes" in m or m == "numpy"))
        from primehub_jupyter.serving.registry import load_runtime
        load_runtime(descriptor.bundle_dir, descriptor)
        print(sorted(m for m in sys.modules if ".serving.runtimes." in m))
        print(sorted(m for m in sys.modules if m.endswith((".packaging", ".container"))))
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "[]"
    runtimes = "primehub_jupyter.serving.runtimes"
    assert lines[1] == str([f"{runtimes}.base", f"{runtimes}.common", f"{runtimes}.sklearn"])
    assert lines[2] == "[]"


def _imports(path: Path, module: str) -> set[str]:
    """Every module `path` imports: top level, in functions and under TYPE_CHECKING alike."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:  # relative: resolved against this module's package
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                target = f"{base}.{target}" if target else base
            found |= {target, *(f"{target}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def test_the_serving_package_has_no_import_cycle():
    root = REPO / "primehub_jupyter"
    modules = {}
    for path in (root / "serving").rglob("*.py"):
        parts = list(path.with_suffix("").relative_to(REPO).parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {
        name: {m for m in _imports(path, name) if m in modules and m != name}
        for name, path in modules.items()
    }

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return [*trail, start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
        return None

    cycles = [c for c in map(cycle_from, sorted(graph)) if c]
    assert not cycles, "import cycle: " + " -> ".join(cycles[0])
    assert "primehub_jupyter.serving.registry" in graph["primehub_jupyter.serving.bundle"]


def test_pyproject_registers_the_builtin_table():
    entry_points = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    assert entry_points[registry.RUNTIME_GROUP] == registry.BUILTIN_RUNTIMES
    assert entry_points[registry.PACKAGER_GROUP] == registry.BUILTIN_PACKAGERS


def test_without_our_metadata_the_builtin_table_is_used_with_a_warning(monkeypatch, capsys):
    monkeypatch.setattr(registry, "_warned", set())
    bare = registry.PluginRegistry(
        "primehub_jupyter.no-such-group",
        "runtime",
        "primehub_jupyter.serving.runtimes.base:Runtime",
        "name",
        registry.BUILTIN_RUNTIMES,
    )
    assert bare.names() == list(registry.BUILTIN_RUNTIMES)
    assert bare.load("sklearn").__name__ == "SklearnRuntime"
    bare.names()
    err = capsys.readouterr().err
    assert err.count("registers no entry points in primehub_jupyter.no-such-group") == 1
    assert "pip install -e ." in err


def test_the_installed_metadata_registers_every_builtin():
    # Guards the environment the suite runs in: our entry points were found, not the fallback.
    own = f"{registry.OWN_DISTRIBUTION} {metadata.version(registry.OWN_DISTRIBUTION)}"
    for group in (registry.RUNTIMES, registry.PACKAGERS):
        providers = {name: plugin.provider for name, plugin in group._own().items()}
        assert providers == dict.fromkeys(registry.BUILTIN_RUNTIMES, own)


def test_a_plugin_cannot_take_a_builtin_name(tmp_path):
    squatter = _distribution(
        tmp_path / "site",
        "squatter",
        {"squatter": "from primehub_jupyter.serving.runtimes.xgboost import XGBoostRuntime\n"},
        "[primehub_jupyter.runtimes]\nsklearn = squatter:XGBoostRuntime\n",
    )
    result = _python(
        """
        from primehub_jupyter.serving import registry
        print(registry.runtime_class("sklearn").__name__)
        print(registry.runtime_names().count("sklearn"))
        """,
        squatter,
    )
    assert result.stdout.split() == ["SklearnRuntime", "1"], result.stderr
    assert (
        result.stderr.count(
            "warning: the runtime plugin sklearn = squatter:XGBoostRuntime (from squatter 1.0) is "
            "ignored: 'sklearn' is a built-in runtime of primehub-jupyter"
        )
        == 1
    )
