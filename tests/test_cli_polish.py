"""primehub-deploy as a first-time user meets it (issue 13): confirmations, words, flags, groups."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from primehub_jupyter.kernel.words import phase_color, phase_style

from .conftest import GROUPS, OWNER
from .serve_helpers import Serve as Server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("cli-polish")
    (root / "groups.yaml").write_text(yaml.safe_dump(GROUPS, sort_keys=False))
    server = Server(
        root / "data",
        root / "serve.log",
        f"--PrimeHubApp.groups_file={root / 'groups.yaml'}",
        f"--PrimeHubApp.owner={OWNER}",  # an administrator in GROUPS
    )
    server.start()
    yield server
    server.stop()


def test_stop_delete_rollback_ask_flags_and_group_disable(served: Server, bundles, tmp_path: Path):
    deploy = tmp_path / "deploy.yaml"
    deploy.write_text(
        yaml.safe_dump(
            {
                "id": "iris-polish",
                "spec": {
                    "displayName": "Iris polish",
                    "groupName": "default",
                    "predictors": [{"instanceType": "cpu-0.5", "modelURI": str(bundles["v1"])}],
                },
            }
        )
    )
    served.cli("create", "-f", str(deploy), "--wait")

    def spec() -> dict:
        return yaml.safe_load(served.cli("get", "iris-polish", "-o", "yaml").stdout)["spec"]

    # No terminal to ask on and no -y: refuse, and say how to go on. Nothing happens.
    for verb in ("stop", "delete"):
        refused = served.cli(verb, "iris-polish", check=False, stdin="")
        assert refused.returncode == 1 and "-y/--yes" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    assert spec()["stop"] is False

    # The API names spec.predictors.0.replicas; the user typed --set replicas=0.
    bad = served.cli("update", "iris-polish", "--set", "replicas=0", check=False)
    assert bad.returncode == 1 and "--set replicas:" in bad.stderr, bad.stderr
    assert "spec.predictors" not in bad.stderr
    served.cli("update", "iris-polish", "--set", "replicas=2", "-m", "scale out")

    # Roll back shows what changes, in PrimeHub's words, before it asks.
    asked = served.cli("rollback", "iris-polish", "1", check=False, stdin="")
    assert asked.returncode == 1 and "-y/--yes" in asked.stderr
    preview = next(line for line in asked.stderr.splitlines() if line.startswith("Replicas"))
    assert preview.split() == ["Replicas", "2", "1"], asked.stderr
    assert "predictors" not in asked.stderr and "Deployment Stopped" not in asked.stderr
    assert spec()["predictors"][0]["replicas"] == 2
    served.cli("rollback", "iris-polish", "1", "-y", "--wait")
    assert spec()["predictors"][0]["replicas"] == 1

    # Disabling deployment for a group lists what will stop, and asks.
    listed = served.cli("groups", "disable", "default", check=False, stdin="")
    assert listed.returncode == 1 and "iris-polish" in listed.stderr and "-y/--yes" in listed.stderr
    assert "enabled" in served.cli("groups").stdout

    # The final phase is printed once (the progress lines stop before it).
    stopped = served.cli("stop", "iris-polish", "-y", "--wait")
    assert (stopped.stdout + stopped.stderr).count("iris-polish: Stopped") == 1, stopped

    served.cli("groups", "disable", "default", "-y")
    assert "disabled" in served.cli("groups").stdout
    # start in a disabled group: PrimeHub's reason, exit code non-zero.
    refused = served.cli("start", "iris-polish", check=False)
    assert refused.returncode != 0 and "not enabled" in refused.stderr, refused.stderr
    served.cli("groups", "enable", "default")
    served.cli("delete", "iris-polish", "-y")


def test_one_phase_table_stopping_moves_like_deploying():
    # One colour per phase in the CLI, the panel and the sidebar (whose CSS tones match).
    assert phase_style("Stopping") == phase_style("Deploying") == "yellow"
    assert phase_color("Stopping") == phase_color("Deploying")
    assert phase_style("Stopped") != phase_style("Stopping")


def test_gateway_url_is_printed_and_stop_start_say_so_in_history(served: Server, bundles):
    """serve's log and `get -o wide` name where model endpoints live; history says stop/start."""
    log = served.log.read_text()
    printed = [line for line in log.splitlines() if "PrimeHub model endpoints:" in line]
    assert printed and "http://127.0.0.1:" in printed[0], log[-2000:]
    base = printed[0].split("PrimeHub model endpoints: ")[1].split("/deployment/")[0]
    wide = served.cli("get", "-o", "wide").stdout
    assert f"Model endpoints: {base}/deployment/<id>/" in wide, wide

    deploy = {
        "id": "iris-says",
        "spec": {
            "displayName": "Iris says",
            "groupName": "default",
            "stop": True,
            "predictors": [{"instanceType": "cpu-0.5", "modelURI": str(bundles["v1"])}],
        },
    }
    path = served.log.parent / "says.yaml"
    path.write_text(yaml.safe_dump(deploy))
    served.cli("create", "-f", str(path))
    served.cli("start", "iris-says", "--wait")
    served.cli("stop", "iris-says", "-y", "--wait")
    history = yaml.safe_load(served.cli("history", "iris-says", "-o", "yaml").stdout)
    messages = [entry["updateMessage"] for entry in history[:2]]
    assert messages == ["stopped", "started"], history
    served.cli("delete", "iris-says", "-y")
