"""Fixtures: an emulated cluster, the operator against it, and PhDeployment helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .harness import FakeCluster, OperatorThread, operator_settings


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    fake = FakeCluster(tmp_path / "k8s").start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def operator_overrides() -> dict[str, Any]:
    """Operator settings a test module wants different (camelCase, like operator.yaml)."""
    return {}


@pytest.fixture
def operator(
    cluster: FakeCluster, groups_file: Path, tmp_path: Path, operator_overrides: dict[str, Any]
) -> Iterator[OperatorThread]:
    thread = OperatorThread(
        cluster, groups_file, operator_settings(**operator_overrides), tmp_path
    ).start()
    try:
        yield thread
    finally:
        thread.stop()
    assert cluster.api.denied == [], f"the operator's RBAC is too narrow: {cluster.api.denied}"


def phdeployment(name: str, **predictor: Any) -> dict[str, Any]:
    """A PhDeployment as a user would kubectl-apply it (group 'default', cpu-0.5)."""
    top = {
        k: predictor.pop(k)
        for k in list(predictor)
        if k in ("stop", "endpoint", "env", "groupName")
    }
    spec: dict[str, Any] = {
        "displayName": name,
        "groupName": "default",
        "userName": "alice",
        "predictors": [
            {"name": "predictor1", "instanceType": "cpu-0.5", "replicas": 1, **predictor}
        ],
        **top,
    }
    return {
        "apiVersion": "primehub.io/v1alpha1",
        "kind": "PhDeployment",
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    """A (fake) model bundle the simulated model server accepts."""
    path = tmp_path / "bundle"
    path.mkdir()
    (path / "bundle.yaml").write_text(yaml.safe_dump({"formatVersion": 1, "runtime": "sklearn"}))
    (path / "model.joblib").write_bytes(b"model")
    return path
