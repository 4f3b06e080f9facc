"""The emulated cluster and the operator, each on its own event loop and thread."""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import yaml

from primehub_jupyter.core.config import ConfigStore
from primehub_jupyter.engines.kubernetes.crd import crd_manifest
from primehub_jupyter.engines.kubernetes.settings import OperatorSettings

from .cluster import MODEL_SERVER_IMAGE, Cluster
from .fakeapi import RBAC, Background, FakeKubeAPI, Store, serve
from .storage import Storage
from .validation import vendored_crds

NAMESPACE = "primehub"
REPO = Path(__file__).resolve().parents[2]
ADMIN = "admin-token"
OPERATOR = "operator-token"
JUPYTER = "jupyter-token"
TOKENS = {
    ADMIN: None,
    OPERATOR: f"system:serviceaccount:{NAMESPACE}:primehub-operator",
    JUPYTER: f"system:serviceaccount:{NAMESPACE}:primehub-jupyter",
}
PLURALS = {
    "phdeployments": "primehub.io/phdeployments",
    "deployments": "apps/deployments",
    "replicasets": "apps/replicasets",
    "pods": "/pods",
    "services": "/services",
    "ingresses": "networking.k8s.io/ingresses",
    "secrets": "/secrets",
    "configmaps": "/configmaps",
    "jobs": "batch/jobs",
    "events": "/events",
    "resourcequotas": "/resourcequotas",
    "horizontalpodautoscalers": "autoscaling/horizontalpodautoscalers",
    "scaledobjects": "keda.sh/scaledobjects",
    "httpscaledobjects": "http.keda.sh/httpscaledobjects",
    "httproutes": "gateway.networking.k8s.io/httproutes",
}


def rbac_documents() -> list[dict[str, Any]]:
    """deploy/base/rbac.yaml as kustomize renders it into the namespace."""
    docs = [d for d in yaml.safe_load_all((REPO / "deploy/base/rbac.yaml").read_text()) if d]
    for doc in docs:
        doc["metadata"]["namespace"] = NAMESPACE
    return docs


class FakeCluster:
    """A running emulated API server with its simulated cluster; thread-safe handles."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.background = Background()
        self.store = Store()
        self.store.install_crd(crd_manifest())
        for crd in vendored_crds():  # KEDA, its HTTP add-on, the Gateway API
            self.store.install_crd(crd)
        self.sim = Cluster(self.store, NAMESPACE, workdir / "cluster")
        self.storage = Storage(workdir / "storage")
        self.api = FakeKubeAPI(
            self.store, tokens=TOKENS, rbac=RBAC(rbac_documents()), logs=self.sim
        )
        self.port = 0
        self._runner: Any = None

    def start(self) -> FakeCluster:
        (self.workdir / "storage").mkdir(parents=True, exist_ok=True)
        self.background.start()
        self.background.call(self._start)
        return self

    async def _start(self) -> None:
        self._runner, self.port = await serve(self.api.app)
        self.sim.route_hooks.append(self.storage.add_routes)
        await self.sim.start()

    def stop(self) -> None:
        async def shutdown() -> None:
            await self.sim.stop()
            if self._runner is not None:
                await self._runner.cleanup()

        try:
            self.background.call(shutdown)
        finally:
            self.background.stop()

    # ---- access -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def network(self) -> str:
        return f"http://127.0.0.1:{self.sim.network_port}"

    def kubeconfig(self, path: Path, token: str) -> Path:
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "user", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "user", "namespace": NAMESPACE},
                }
            ],
            "current-context": "fake",
        }
        path.write_text(yaml.safe_dump(document))
        return path

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.background.call(fn, *args)

    def objects(self, plural: str, labels: str | None = None) -> list[dict[str, Any]]:
        """Copies of the objects of a kind in the namespace (e.g. "pods")."""
        rt = self.store.types[PLURALS[plural]]
        return self.call(lambda: copy.deepcopy(self.store.list(rt, NAMESPACE, labels)))

    def find(self, plural: str, name: str) -> dict[str, Any] | None:
        rt = self.store.types[PLURALS[plural]]
        return self.call(lambda: copy.deepcopy(self.store.find(rt, NAMESPACE, name)))

    def request(
        self, method: str, path: str, body: Any = None, token: str = ADMIN, **kw: Any
    ) -> requests.Response:
        """An HTTP call to the emulated API, as the admin by default."""
        headers = {"Authorization": f"Bearer {token}", **kw.pop("headers", {})}
        return requests.request(
            method, self.url + path, json=body, headers=headers, timeout=30, **kw
        )

    def apply(self, obj: dict[str, Any], token: str = ADMIN) -> dict[str, Any]:
        """Create an object over HTTP (validated like any client's)."""
        api = obj["apiVersion"]
        plural = next(k for k, v in PLURALS.items() if self.store.types[v].kind == obj["kind"])
        base = f"/api/{api}" if "/" not in api else f"/apis/{api}"
        response = self.request("POST", f"{base}/namespaces/{NAMESPACE}/{plural}", obj, token)
        assert response.status_code == 201, response.text
        return response.json()

    def patch(self, plural: str, name: str, patch: dict[str, Any], sub: str = "") -> dict[str, Any]:
        rt = self.store.types[PLURALS[plural]]
        base = f"/apis/{rt.api_version}" if rt.group else "/api/v1"
        path = f"{base}/namespaces/{NAMESPACE}/{rt.plural}/{name}" + (f"/{sub}" if sub else "")
        response = self.request(
            "PATCH", path, patch, headers={"Content-Type": "application/merge-patch+json"}
        )
        assert response.status_code == 200, response.text
        return response.json()

    def delete(self, plural: str, name: str) -> None:
        rt = self.store.types[PLURALS[plural]]
        base = f"/apis/{rt.api_version}" if rt.group else "/api/v1"
        response = self.request("DELETE", f"{base}/namespaces/{NAMESPACE}/{rt.plural}/{name}")
        assert response.status_code == 200, response.text

    def wait(self, predicate: Callable[[], Any], what: str, limit: float = 30) -> Any:
        """Poll until truthy; the limit only bounds a hang."""
        deadline = time.monotonic() + limit
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def status(self, name: str) -> dict[str, Any]:
        return ((self.find("phdeployments", name) or {}).get("status")) or {}

    def wait_phase(
        self, name: str, phase: str, limit: float = 30, contains: str = ""
    ) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            status = self.status(name)
            ok = status.get("phase") == phase and contains in status.get("message", "")
            return status if ok else None

        try:
            return self.wait(reached, f"{name} to be {phase} ({contains})", limit)
        except AssertionError:
            raise AssertionError(
                f"{name} never reached {phase} {contains!r}: {self.status(name)}"
            ) from None


class OperatorThread:
    """`primehub-deploy operator`'s Operator, run by kopf on its own loop and thread."""

    def __init__(
        self, cluster: FakeCluster, groups_file: Path, settings: OperatorSettings, workdir: Path
    ) -> None:
        self.cluster = cluster
        self.groups_file = groups_file
        self.settings = settings
        self.kubeconfig = cluster.kubeconfig(workdir / "operator.kubeconfig", OPERATOR)
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.error: BaseException | None = None
        self.operator: Any = None
        self._thread = threading.Thread(target=self._main, daemon=True, name="operator")

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as error:  # surfaced by start()/stop()
            self.error = error
            self.ready_flag.set()

    async def _run(self) -> None:
        from primehub_jupyter.engines.kubernetes.client import load_configuration
        from primehub_jupyter.engines.kubernetes.operator import Operator

        configuration, namespace = await load_configuration(str(self.kubeconfig))
        self.settings.namespace = namespace
        self.operator = Operator(self.settings, ConfigStore(self.groups_file), configuration)
        await self.operator.run(stop_flag=self.stop_flag, ready_flag=self.ready_flag)

    def start(self) -> OperatorThread:
        self._thread.start()
        assert self.ready_flag.wait(30), "the operator did not start"
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        self.stop_flag.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the operator did not stop"


def operator_settings(**overrides: Any) -> OperatorSettings:
    document: dict[str, Any] = {
        "modelServerImage": MODEL_SERVER_IMAGE,
        "resyncSeconds": 0.5,
        "ingress": {"baseURL": "https://models.example.com"},
    }
    document.update(overrides)
    return OperatorSettings.model_validate(document)
