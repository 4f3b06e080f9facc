"""The engines the contract suite runs against, each on its own event loop, with probes."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import yaml

from primehub_jupyter.core.config import ConfigStore
from primehub_jupyter.core.models import DeploymentRecord
from primehub_jupyter.engines.base import Engine
from tests.conftest import GROUPS
from tests.kubernetes.fakeapi import Background
from tests.serve_helpers import processes_of_data_dir, replica_processes

from .memory import MemoryEngine

IMAGE = "registry.example.com/iris:1"
ENGINES = ("memory", "local", "kubernetes")


class Target:
    """One engine, started on a loop in a thread, so one engine serves a whole test module.

    pytest-jupyter gives every async test a new event loop; an engine lives longer than one
    test here, so tests are synchronous and hand coroutines to the engine's own loop.
    """

    name = ""

    def __init__(self, root: Path, groups_file: Path, bundle: Path) -> None:
        self.root = root
        self.groups_file = groups_file
        self.bundle = bundle
        self.config_store = ConfigStore(groups_file)
        self.background = Background()
        self.engine: Engine = None  # type: ignore[assignment]  # made by start()

    def make_engine(self) -> Engine:
        raise NotImplementedError

    def model(self) -> dict[str, Any]:
        """The predictor's model field(s) this engine can run."""
        return {"modelURI": str(self.bundle)}

    def start(self) -> Target:
        self.engine = self.make_engine()
        self.background.start()
        self.run(self.engine.start)
        return self

    def close(self) -> None:
        try:
            if self.engine is not None:
                self.run(self.engine.shutdown)
        finally:
            self.background.stop()

    def run(self, fn: Callable[..., Any], *args: Any, timeout: float = 120, **kw: Any) -> Any:
        """Call `fn` (sync or async) on the engine's loop; its result or its exception."""
        return self.background.call(lambda: fn(*args, **kw), timeout=timeout)

    def submit(self, coroutine: Any) -> Future:
        """Start a coroutine on the engine's loop without waiting for it."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.background.loop)

    def get(self, deployment_id: str) -> DeploymentRecord:
        return self.run(self.engine.get, deployment_id)

    def wait_phase(self, deployment_id: str, phase: str, limit: float = 90) -> DeploymentRecord:
        """Poll until the phase is reached; the limit only bounds a hang."""
        deadline = time.monotonic() + limit
        while True:
            deployment = self.get(deployment_id)
            if deployment.status.phase.value == phase:
                return deployment
            if time.monotonic() > deadline:
                raise AssertionError(f"{deployment_id} never reached {phase}: {deployment.status}")
            time.sleep(0.05)

    # ---- probes: what only this engine's world can show -------------------------------

    def client_hashes(self, deployment_id: str) -> dict[str, bytes]:
        """The bcrypt hash each client's token is checked against, as the engine stored it."""
        raise NotImplementedError

    def running(self, deployment_id: str) -> list[str]:
        """What runs a deployment's replicas now (processes, pods)."""
        raise NotImplementedError

    def remnants(self, deployment_id: str) -> list[str]:
        """Everything of a deployment that a delete must remove (stored state included)."""
        raise NotImplementedError


class MemoryTarget(Target):
    name = "memory"

    def make_engine(self) -> Engine:
        return MemoryEngine(config_store=self.config_store)

    def client_hashes(self, deployment_id: str) -> dict[str, bytes]:
        hashes = self.run(self.engine.client_hashes, deployment_id)  # type: ignore[attr-defined]
        return {k: v.encode() for k, v in hashes.items()}

    def running(self, deployment_id: str) -> list[str]:
        entry = self.engine._entries.get(deployment_id)  # type: ignore[attr-defined]
        return list(entry.replicas) if entry else []

    def remnants(self, deployment_id: str) -> list[str]:
        entries = self.engine._entries  # type: ignore[attr-defined]
        return [deployment_id] if deployment_id in entries else []


class LocalTarget(Target):
    """The LocalEngine: real replica processes, the real gateway, a real SQLite file."""

    name = "local"

    def make_engine(self) -> Engine:
        from primehub_jupyter.engines.local.engine import LocalEngine

        self.data_dir = self.root / "data"
        return LocalEngine(
            config_store=self.config_store,
            data_dir=str(self.data_dir),
            drain_seconds=0.3,
            stop_grace_seconds=5.0,
            restart_backoff_max=2.0,
            metrics_interval=0.5,
        )

    def client_hashes(self, deployment_id: str) -> dict[str, bytes]:
        store = self.engine.store  # type: ignore[attr-defined]
        hashes = self.run(store.client_hashes, deployment_id)
        return {k: v.encode() for k, v in hashes.items()}

    def running(self, deployment_id: str) -> list[str]:
        return [" ".join(p.cmdline()) for p in replica_processes(deployment_id)]

    def remnants(self, deployment_id: str) -> list[str]:
        directory = self.data_dir / "deployments" / deployment_id
        return self.running(deployment_id) + ([str(directory)] if directory.exists() else [])

    def close(self) -> None:
        try:
            super().close()
        finally:
            for proc in processes_of_data_dir(self.data_dir):
                proc.kill()


class KubernetesTarget(Target):
    """The KubernetesEngine against the HTTP API emulator, with the operator running."""

    name = "kubernetes"

    def __init__(self, root: Path, groups_file: Path, bundle: Path) -> None:
        from ..kubernetes.harness import FakeCluster

        super().__init__(root, groups_file, bundle)
        self.cluster = FakeCluster(root / "k8s")
        self.operator: Any = None

    def model(self) -> dict[str, Any]:
        return {"modelImage": IMAGE}

    def make_engine(self) -> Engine:
        from primehub_jupyter.engines.kubernetes.engine import KubernetesEngine

        from ..kubernetes.harness import JUPYTER

        return KubernetesEngine(
            config_store=self.config_store,
            kubeconfig=str(self.cluster.kubeconfig(self.root / "jupyter.kubeconfig", JUPYTER)),
            service_url_template=f"{self.cluster.network}/svc/{{name}}",
            pod_url_template=f"{self.cluster.network}/pod/{{pod}}",
            deploy_timeout=60,
            delete_wait_seconds=20,
            metrics_interval=0.2,
            follow_poll_seconds=0.2,
        )

    def start(self) -> Target:
        from ..kubernetes.harness import OperatorThread, operator_settings

        self.cluster.start()
        self.cluster.sim.images[IMAGE] = "ok"
        self.operator = OperatorThread(
            self.cluster, self.groups_file, operator_settings(), self.root
        ).start()
        return super().start()

    def close(self) -> None:
        try:
            super().close()
        finally:
            try:
                if self.operator is not None:
                    self.operator.stop()
            finally:
                self.cluster.stop()
        assert self.cluster.api.denied == [], f"RBAC too narrow: {self.cluster.api.denied}"

    def client_hashes(self, deployment_id: str) -> dict[str, bytes]:
        secret = self.cluster.find("secrets", f"{deployment_id}-clients") or {}
        return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}

    def running(self, deployment_id: str) -> list[str]:
        pods = self.cluster.objects("pods", f"primehub.io/phdeployment={deployment_id}")
        return [f"pods/{p['metadata']['name']}" for p in pods]

    def remnants(self, deployment_id: str) -> list[str]:
        found = self.running(deployment_id)
        if self.cluster.find("phdeployments", deployment_id) is not None:
            found.append(f"phdeployments/{deployment_id}")
        # Children are per predictor (<id>-<predictor>): found by the deployment's label.
        for plural in ("deployments", "services", "ingresses"):
            selector = f"primehub.io/phdeployment={deployment_id}"
            found += [
                f"{plural}/{o['metadata']['name']}" for o in self.cluster.objects(plural, selector)
            ]
        if self.cluster.find("secrets", f"{deployment_id}-clients") is not None:
            found.append(f"secrets/{deployment_id}-clients")
        return found


TARGETS: dict[str, type[Target]] = {
    "memory": MemoryTarget,
    "local": LocalTarget,
    "kubernetes": KubernetesTarget,
}


def groups_file(directory: Path) -> Path:
    """tests/conftest.py's groups, instance types and quota, as a YAML file."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "groups.yaml"
    path.write_text(yaml.safe_dump(GROUPS, sort_keys=False))
    return path
