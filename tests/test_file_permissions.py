"""Files at rest: the data dir is 0700 and everything in it is readable by its owner only."""

from __future__ import annotations

import asyncio
import contextlib
import stat
from pathlib import Path
from typing import Any

import pytest
import requests

from primehub_jupyter.core.config import ConfigStore

from .conftest import spec, wait_until

ROW = {"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}}


@pytest.fixture
def engine_config() -> dict[str, Any]:
    # A tiny log limit, so a replica's log rotates (output.log.1) within a few requests.
    return {"drain_seconds": 0.2, "stop_grace_seconds": 5.0, "log_max_bytes": 2048}


@pytest.fixture
def groups_file(tmp_path: Path, groups_file: Path) -> Path:
    """The config inside the data dir, both left world-readable as older versions made them."""
    data_dir = tmp_path / "primehub-data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    config = data_dir / "config.yaml"
    config.write_text(groups_file.read_text())
    config.chmod(0o644)
    old_log = data_dir / "request-logs" / "old-deployment" / "1" / "2026-01-01.jsonl"
    old_log.parent.mkdir(parents=True)
    old_log.write_text("{}\n")
    old_log.chmod(0o644)
    return config


def modes(root: Path) -> dict[str, int]:
    """Permission bits of every file and directory under root (root included)."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        # A termination log may be removed (before a restart) while we walk.
        with contextlib.suppress(FileNotFoundError):
            found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


async def test_every_file_in_the_data_dir_is_private(api, bundles, tmp_path):
    data_dir = tmp_path / "primehub-data"
    metadata = {"primehub.io/request-log": "true"}
    body = {"spec": spec(bundles["v1"], metadata=metadata)}
    deployment_id = (await api.ok("POST", "deployments", body))["id"]
    broken_id = (await api.ok("POST", "deployments", {"spec": spec(bundles["broken"])}))["id"]
    endpoint = (await api.wait_phase(deployment_id, "Deployed"))["status"]["endpoint"]
    await api.wait_phase(broken_id, "Failed")
    # An admin change rewrites config.yaml.
    await api.ok("PATCH", "groups/small", {"enabledDeployment": False})

    replicas = data_dir / "deployments" / deployment_id / "replicas"

    async def rotated() -> bool:
        response = await asyncio.to_thread(requests.post, endpoint, json=ROW, timeout=30)
        assert response.status_code == 200, response.text
        return any(replicas.glob("*/output.log.1"))

    await wait_until(rotated, what="the replica's log to rotate")
    request_logs = data_dir / "request-logs" / deployment_id
    await wait_until(lambda: any(request_logs.rglob("*.jsonl")), what="the request log")

    # The broken replica's termination log (removed before each restart: caught while it is there).
    broken = data_dir / "deployments" / broken_id / "replicas"

    def termination_log_mode() -> int | None:
        for path in broken.glob("*/termination-log"):
            try:
                return stat.S_IMODE(path.stat().st_mode) or None
            except FileNotFoundError:
                pass
        return None

    assert await wait_until(termination_log_mode, what="a termination log") == 0o600

    found = modes(data_dir)
    names = {Path(p).name for p in found}
    expected = {"config.yaml", "state.sqlite3", "state.sqlite3-wal", "state.sqlite3-shm"}
    expected |= {"engine.lock", "gateway.token", "gateway.log", "gateway.json", "gateway.port"}
    expected |= {"output.log", "output.log.1", "2026-01-01.jsonl"}
    assert expected <= names, sorted(names)
    assert any(name.endswith(".jsonl") for name in names), sorted(names)
    loose = {path: oct(mode) for path, mode in found.items() if mode & 0o077}
    assert loose == {}, "group or other permissions on files of the data dir"
    assert found["."] == 0o700
    for path, mode in found.items():
        if (data_dir / path).is_dir():
            assert mode == 0o700, path
        else:
            assert mode == 0o600, path


def test_a_new_config_file_is_private(tmp_path):
    path = tmp_path / "fresh" / "config.yaml"
    store = ConfigStore(path, user="alice")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert store.get().admins == ["alice"]
