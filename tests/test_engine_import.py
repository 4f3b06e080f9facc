"""The server extension names its engine by import string and imports no engine it does not use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from traitlets import TraitError
from traitlets.config import Config

from primehub_jupyter.engines.base import Engine
from primehub_jupyter.server.app import PrimeHubApp

ROOT = Path(__file__).resolve().parent.parent

# Run in a fresh interpreter: this test process has imported every engine long ago.
PROBE = """
import json, sys
from traitlets.config import Config
import primehub_jupyter.server.app as app_module
after_import = sorted(m for m in sys.modules if m.startswith("primehub_jupyter.engines."))
config = Config()
if len(sys.argv) > 1:
    config.PrimeHubApp.engine_class = sys.argv[1]
engine_class = app_module.PrimeHubApp(config=config).engine_class
after_resolve = sorted(m for m in sys.modules if m.startswith("primehub_jupyter.engines."))
print(json.dumps({"import": after_import, "resolve": after_resolve,
                  "class": f"{engine_class.__module__}.{engine_class.__name__}"}))
"""


def probe(*argv: str) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_server_app_imports_no_engine_implementation() -> None:
    found = probe()
    assert found["import"] == ["primehub_jupyter.engines.base"]
    # The default resolves to the local engine only when asked for.
    assert found["class"] == "primehub_jupyter.engines.local.engine.LocalEngine"
    assert "primehub_jupyter.engines.local.engine" in found["resolve"]


def test_the_kubernetes_engine_by_import_string_leaves_the_local_engine_unimported() -> None:
    # The local engine takes fcntl (POSIX only): a Kubernetes server must never import it.
    found = probe("primehub_jupyter.engines.kubernetes.KubernetesEngine")
    assert found["class"] == "primehub_jupyter.engines.kubernetes.engine.KubernetesEngine"
    assert not [m for m in found["resolve"] if m.startswith("primehub_jupyter.engines.local")]


def test_engine_class_must_be_an_engine() -> None:
    config = Config()
    config.PrimeHubApp.engine_class = "primehub_jupyter.core.config.ConfigStore"
    with pytest.raises(TraitError, match=r"subclass of 'primehub_jupyter\.engines\.base\.Engine'"):
        PrimeHubApp(config=config).engine_class  # noqa: B018 - resolving validates it


def test_local_engine_takes_server_dirs_unless_configured() -> None:
    from primehub_jupyter.engines.local.engine import LocalEngine

    assert Engine.server_defaults(Config(), data_dir="/d", root_dir="/r") == {}
    assert LocalEngine.server_defaults(Config(), data_dir="/d", root_dir="/r") == {
        "data_dir": "/d",
        "root_dir": "/r",
    }
    config = Config()
    config.LocalEngine.data_dir = "/mine"
    assert LocalEngine.server_defaults(config, data_dir="/d", root_dir=None) == {}
