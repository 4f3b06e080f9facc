"""The operator: kopf watches PhDeployments and their children; a reconciler makes them so.

kopf is used as the watch layer only (event handlers, no kopf state in the objects and no
kopf finalizer): every event enqueues the PhDeployment's name in the `OperatorReconciler`
(reconciler.py), which owns the work queue; children.py applies the Deployment, Service,
Ingress and Secret that resources.py builds; admission.py holds group quota; status.py writes
status and Events.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from ...core.config import ConfigStore
from .client import Kube, KubeError, bearer_token
from .crd import APP, GROUP, LABEL_APP, LABEL_ID, PLURAL, VERSION
from .reconciler import OperatorReconciler
from .settings import OperatorSettings

# The engine reads history as the operator writes it; it imported this name from here.
__all__ = ["Operator", "OperatorFailed", "configure_kopf"]

log = logging.getLogger("primehub.operator")


# ---- kopf wiring ----------------------------------------------------------------------


class OperatorFailed(RuntimeError):
    """The operator cannot work at all (no CRD, no permission); the message says why."""


class Operator:
    """The kopf operator around a Reconciler; `run()` until the stop flag is set."""

    def __init__(
        self, settings: OperatorSettings, config_store: ConfigStore, configuration: Any
    ) -> None:
        self.settings = settings
        self.config_store = config_store
        self.configuration = configuration
        self.reconciler: OperatorReconciler | None = None
        self.failure = ""
        self._stop = asyncio.Event()

    def registry(self) -> Any:
        """kopf's handlers: login, startup, cleanup, and the events that enqueue a name."""
        import kopf

        registry = kopf.OperatorRegistry()
        selector = f"{LABEL_APP}={APP}"

        @kopf.on.login(registry=registry)
        async def login(**_: Any) -> kopf.ConnectionInfo:
            cfg = self.configuration
            return kopf.ConnectionInfo(
                server=cfg.host,
                ca_path=cfg.ssl_ca_cert,
                insecure=not cfg.verify_ssl,
                token=await bearer_token(cfg),
                certificate_path=cfg.cert_file,
                private_key_path=cfg.key_file,
                default_namespace=self.settings.namespace,
            )

        @kopf.on.startup(registry=registry)
        async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
            configure_kopf(settings, selector)
            kube = Kube.from_configuration(self.configuration, self.settings.namespace)
            self.reconciler = OperatorReconciler(kube, self.settings, self.config_store)
            try:
                await self.reconciler.start()
            except KubeError as error:
                # Say it once and stop, rather than retry something only an admin can fix
                # (kopf itself would keep running without its startup handler).
                hint = (
                    "the PhDeployment CRD is not installed (kubectl apply -k deploy/base)"
                    if error.not_found
                    else error.message
                )
                self.failure = f"cannot list PhDeployments in '{self.settings.namespace}': {hint}"
                self._stop.set()
                await kube.close()
                raise kopf.PermanentError(self.failure) from None
            log.info(
                "PrimeHub operator: namespace %s, model server %s",
                self.settings.namespace,
                self.settings.model_server_image,
            )

        @kopf.on.cleanup(registry=registry)
        async def cleanup(**_: Any) -> None:
            # Stopped by a signal (kopf handles SIGTERM/SIGINT itself): release kopf's own
            # waiter on our stop flag, or it waits its 5 s for "hung" tasks on the way out.
            self._stop.set()
            if self.reconciler is not None:
                await self.reconciler.stop()
                await self.reconciler.kube.close()

        @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
        async def phdeployment_event(event: Any, name: str, **_: Any) -> None:
            if self.reconciler is None:
                return
            if event.get("type") == "DELETED":
                self.reconciler.forget(name)
            else:
                self.reconciler.enqueue(name)

        @kopf.on.event("apps", "v1", "deployments", labels={LABEL_APP: APP}, registry=registry)
        @kopf.on.event("", "v1", "pods", labels={LABEL_APP: APP}, registry=registry)
        async def child_event(labels: Any, **_: Any) -> None:
            owner = labels.get(LABEL_ID)
            if owner and self.reconciler is not None:
                self.reconciler.enqueue(owner)

        return registry

    async def run(
        self,
        *,
        stop_flag: asyncio.Event | threading.Event | None = None,
        ready_flag: Any = None,
        liveness_endpoint: str | None = None,
    ) -> None:
        """Run until `stop_flag` is set; OperatorFailed if the operator cannot start at all."""
        import kopf

        settings = kopf.OperatorSettings()
        configure_kopf(settings, f"{LABEL_APP}={APP}")
        self._stop = asyncio.Event()
        relay = asyncio.create_task(self._relay(stop_flag))
        try:
            await kopf.operator(
                registry=self.registry(),
                settings=settings,
                namespaces=[self.settings.namespace],
                standalone=True,
                stop_flag=self._stop,
                ready_flag=ready_flag,
                liveness_endpoint=liveness_endpoint,
            )
        except Exception:  # kopf's own error about the failed startup: ours says more
            if not self.failure:
                raise
        finally:
            relay.cancel()
        if self.failure:
            raise OperatorFailed(self.failure)

    async def _relay(self, flag: asyncio.Event | threading.Event | None) -> None:
        """Pass the caller's stop flag (from any thread) on to kopf's."""
        if isinstance(flag, asyncio.Event):
            await flag.wait()
        elif isinstance(flag, threading.Event):
            while not flag.is_set():
                await asyncio.sleep(0.1)
        else:
            return
        self._stop.set()


def configure_kopf(settings: Any, selector: str) -> None:
    """kopf as a watch layer: namespaced, no scanning, no kopf events, server-side selectors."""
    settings.posting.enabled = False
    # A namespaced operator with least privilege cannot watch CRDs or namespaces.
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    for resource in ("deployments", "pods"):
        settings.watching.label_selectors[resource] = selector
