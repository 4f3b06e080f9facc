"""A simulated cluster behind the emulated API: controllers, a scheduler, a kubelet, a network.

It does what kube-controller-manager, kube-scheduler and a kubelet would do to the objects the
operator writes, so that every phase is reached through real state: the Deployment controller
makes ReplicaSets (revisions, rolling updates that keep old pods until new ones are available),
the ReplicaSet controller makes Pods (refused by a namespace ResourceQuota with a FailedCreate
condition and event), the scheduler places pods on one node (Unschedulable when resources,
node selectors or taints do not fit, or a PVC is missing), the Job controller makes a pod per
attempt (backoffLimit, podFailurePolicy, TTL after finish), and the kubelet pulls images (unknown
images fail with ErrImagePull/ImagePullBackOff), runs the model initializer *for real* (the
fetcher as a subprocess, with the pod's volumes mapped to directories and its env resolved from
Secrets), starts the model container with a behaviour per image (ready, crash loop, load failure
with exit code 3 and a termination message, out of memory, never ready), runs a job pod's
container for real, restarts with backoff, and keeps container logs. A small HTTP server is the
pod network: /svc/<service>/... and /pod/<pod>/... answer like a model server (predictions,
health, /metrics) and log each request.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from primehub_jupyter.core.config import parse_memory

from .controllers import Controllers
from .jobcontroller import JobController
from .kubelet import MODEL_SERVER_IMAGE, Kubelet, PodRun
from .network import PodNetwork
from .store import LogSource, Store, now_text

__all__ = ["MODEL_SERVER_IMAGE", "Cluster"]


class Cluster(Controllers, JobController, Kubelet, PodNetwork, LogSource):
    """Controllers, scheduler, kubelet and pod network for one namespace."""

    def __init__(
        self,
        store: Store,
        namespace: str,
        workdir: Path,
        *,
        node_cpu: float = 8.0,
        node_memory: str = "32Gi",
        node_labels: dict[str, str] | None = None,
        taints: list[dict[str, str]] | None = None,
    ) -> None:
        self.store = store
        self.namespace = namespace
        self.workdir = workdir
        self.node_cpu = node_cpu
        self.node_memory = parse_memory(node_memory)
        self.node_labels = {"kubernetes.io/hostname": "node-1", **(node_labels or {})}
        self.taints = taints or []
        self.images: dict[str, str] = {MODEL_SERVER_IMAGE: "ok"}
        self.pvcs: dict[str, Path] = {}
        self.pods: dict[str, PodRun] = {}
        self.stopping: set[asyncio.Task] = set()
        self.logs: dict[tuple[str, str], list[tuple[int, str, str]]] = {}
        self.log_changed = asyncio.Event()
        self.startup_seconds = 0.2
        self.termination_seconds = 0.3
        self.backoff = 0.5
        self._terminating: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._next_ip = 10
        self._events_seen: set[tuple[str, str, str]] = set()
        self.network_port = 0
        self._network: web.AppRunner | None = None
        self._round_robin: dict[str, int] = {}
        self.route_hooks: list[Any] = []
        #: `python -m MODULE` in a container runs this script instead (a stand-in runner).
        self.module_overrides: dict[str, str] = {}
        store.listeners.append(lambda key, kind, obj: self._wake.set())

    # ---- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        from .fakeapi import serve

        app = web.Application()
        app.router.add_route("*", "/svc/{service}/{path:.*}", self._service_request)
        app.router.add_route("*", "/pod/{pod}/{path:.*}", self._pod_request)
        for add_routes in self.route_hooks:
            add_routes(app)
        self._network, self.network_port = await serve(app)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        running = [
            c.process
            for run in self.pods.values()
            for c in (run.init, run.model)
            if c is not None and c.process is not None
        ]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, *self.stopping, return_exceptions=True)
        if self._network is not None:
            await self._network.cleanup()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)
            self._wake.clear()
            try:
                self.tick()
            except Exception as error:  # a bug in the simulator must be loud
                print(f"cluster simulator error: {error!r}", file=sys.stderr)
                raise

    def _wake_later(self, seconds: float) -> None:
        asyncio.get_running_loop().call_later(seconds, self._wake.set)

    def tick(self) -> None:
        self._deployments()
        self._replicasets()
        self._jobs()
        self._schedule()
        self._kubelet()

    # ---- helpers --------------------------------------------------------------------

    def _type(self, key: str) -> Any:
        return self.store.types[key]

    def _list(self, key: str) -> list[dict[str, Any]]:
        return self.store.list(self._type(key), self.namespace)

    def _update(self, key: str, obj: dict[str, Any]) -> dict[str, Any]:
        return self.store.update(self._type(key), self.namespace, obj)

    def event(self, obj: dict[str, Any], reason: str, message: str, kind: str = "Warning") -> None:
        once = (obj["metadata"]["uid"], reason, message)
        if once in self._events_seen:
            return
        self._events_seen.add(once)
        self.store.create(
            self._type("/events"),
            self.namespace,
            {
                "metadata": {"generateName": f"{obj['metadata']['name']}."},
                "involvedObject": {
                    "kind": obj["kind"],
                    "name": obj["metadata"]["name"],
                    "namespace": self.namespace,
                    "uid": obj["metadata"]["uid"],
                },
                "reason": reason,
                "message": message,
                "type": kind,
                "count": 1,
                "firstTimestamp": now_text(),
                "lastTimestamp": now_text(),
                "source": {"component": "fake-cluster"},
            },
        )

    @staticmethod
    def _owned(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
        uid = owner["metadata"]["uid"]
        return any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or [])

    @staticmethod
    def _ref(owner: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": owner["apiVersion"],
            "kind": owner["kind"],
            "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
