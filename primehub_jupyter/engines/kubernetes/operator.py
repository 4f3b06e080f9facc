"""The operator: kopf watches PhDeployments and their children; a reconciler makes them so.

kopf is used as the watch layer only (event handlers, no kopf state in the objects and no
kopf finalizer): every event enqueues the PhDeployment's name, and a small pool of workers
reconciles one name at a time, level-triggered, from a fresh read. A resync loop re-enqueues
every deployment periodically, which is what turns a deploy timeout or a fixed configuration
(a group enabled, a quota raised) into a new phase without any change to the object.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError as PydanticError

from ...core.config import ConfigStore, PrimeHubConfig
from ...core.models import MAX_HISTORY, DeploymentSpec, Phase, describe_problems, pydantic_problems
from ...core.models import format_time as format_api_time
from ...core.quota import Usage, quota_problem_for_usage, requested
from . import phases, resources
from .client import (
    DEPLOYMENTS,
    EVENTS,
    INGRESSES,
    PHDEPLOYMENTS,
    PODS,
    REPLICASETS,
    SECRETS,
    SERVICES,
    Kind,
    Kube,
    KubeError,
    bearer_token,
)
from .crd import (
    ANNOTATION_APPLIED,
    ANNOTATION_DEPLOY_TIMEOUT,
    ANNOTATION_HISTORY,
    API_VERSION,
    APP,
    GROUP,
    KIND,
    LABEL_APP,
    LABEL_ID,
    PLURAL,
    VERSION,
)
from .settings import OperatorSettings

log = logging.getLogger("primehub.operator")

# Annotation prefixes the operator owns on its children.
_OWN_PREFIXES = ("nginx.ingress.kubernetes.io/", "primehub.io/", "prometheus.io/")
# Fields the API server assigns to a Service; a replace must carry them over.
_SERVICE_ASSIGNED = ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def usage_json(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {"cpu": usage.cpu, "memory": usage.memory, "gpu": usage.gpu}


def usage_from(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    return Usage(
        float(data.get("cpu") or 0), float(data.get("memory") or 0), int(data.get("gpu") or 0), 1
    )


def _fits_within(want: Usage, held: Usage | None) -> bool:
    """Whether `want` needs nothing beyond what is already admitted (a scale-down does not)."""
    return held is not None and (
        want.cpu <= held.cpu + 1e-9 and want.memory <= held.memory and want.gpu <= held.gpu
    )


def merged_history(cr: dict[str, Any]) -> list[dict[str, Any]] | None:
    """status.history with the pending entry of the last spec write; None when unchanged."""
    status = cr.get("status") or {}
    history = list(status.get("history") or [])
    raw = (cr["metadata"].get("annotations") or {}).get(ANNOTATION_HISTORY)
    if not raw:
        return None
    try:
        entry = json.loads(raw)
        revision = int(entry["revision"])
    except (ValueError, KeyError, TypeError):
        return None
    if any(h.get("revision") == revision for h in history):
        return None
    history.append(entry)
    history.sort(key=lambda h: int(h.get("revision", 0)), reverse=True)
    return history[:MAX_HISTORY]


class Reconciler:
    """Turns PhDeployments into Deployments, Services, Ingresses and Secrets, and reports."""

    def __init__(
        self,
        kube: Kube,
        settings: OperatorSettings,
        config_store: ConfigStore,
        *,
        now: Callable[[], datetime] = _now,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.config_store = config_store
        self.now = now
        self.admitted: dict[str, Usage] = {}
        self._admission = asyncio.Lock()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._busy: set[str] = set()
        self._again: set[str] = set()
        self._tasks: list[asyncio.Task] = []
        self._failed_for_quota: set[str] = set()
        self._groups: dict[str, str] = {}

    # ---- the work queue ---------------------------------------------------------------

    def enqueue(self, name: str) -> None:
        """Reconcile `name` soon (once, however often it is asked before it runs)."""
        if name in self._busy:
            self._again.add(name)
        elif name not in self._queued:
            self._queued.add(name)
            self._queue.put_nowait(name)

    async def start(self) -> None:
        """Learn what is admitted already, then start the workers and the resync loop."""
        for cr in await self.kube.list(PHDEPLOYMENTS):
            usage = usage_from((cr.get("status") or {}).get("admitted"))
            if usage is not None:
                self.admitted[cr["metadata"]["name"]] = usage
        for i in range(self.settings.workers):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"reconciler-{i}"))
        self._tasks.append(asyncio.create_task(self._resync(), name="resync"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _worker(self) -> None:
        while True:
            name = await self._queue.get()
            self._queued.discard(name)
            self._busy.add(name)
            try:
                await self.reconcile(name)
            except asyncio.CancelledError:
                raise
            except KubeError as error:
                log.warning("reconcile %s: %s; will retry", name, error)
                self._again.add(name)
                await asyncio.sleep(0.5)
            except Exception:  # one bad object must not stop the others
                log.exception("reconcile %s failed", name)
            finally:
                self._busy.discard(name)
                if name in self._again:
                    self._again.discard(name)
                    self.enqueue(name)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            try:
                for cr in await self.kube.list(PHDEPLOYMENTS):
                    self.enqueue(cr["metadata"]["name"])
            except KubeError as error:
                log.warning("resync: %s", error)

    def forget(self, name: str) -> None:
        """A PhDeployment is gone: its quota is free again."""
        if self.admitted.pop(name, None) is not None:
            log.info("deployment %s deleted; its quota is released", name)
        self._reconcile_group_later()

    def _reconcile_group_later(self) -> None:
        # Failed-for-quota deployments may fit now; the resync would find them too, later.
        for name in list(self._failed_for_quota):
            self.enqueue(name)

    # ---- one reconciliation -----------------------------------------------------------

    async def reconcile(self, name: str) -> None:
        """Make the children of PhDeployment `name` match its spec and report its status."""
        cr = await self.kube.find(PHDEPLOYMENTS, name)
        if cr is None or cr["metadata"].get("deletionTimestamp"):
            if cr is None:
                self.forget(name)
            return
        status: dict[str, Any] = {}
        try:
            spec = DeploymentSpec.model_validate(cr.get("spec") or {})
        except PydanticError as error:
            problem = describe_problems(pydantic_problems(error))
            await self._scale_to_zero(name)
            await self._report(
                cr, phases.Outcome(Phase.FAILED, f"the spec is invalid: {problem}"), status
            )
            return
        try:
            config = self.config_store.get()
        except Exception as error:  # an admin's YAML mistake, said as is
            message = getattr(error, "message", str(error))
            await self._report(
                cr, phases.Outcome(Phase.FAILED, f"the operator's configuration: {message}"), status
            )
            return
        timeout = self._deploy_timeout(cr)
        blocked = config.problem_with(spec.group_name, spec.predictor.instance_type)
        if spec.stop or blocked:
            await self._release(name, status)
            await self._scale_to_zero(name)
            pods = await self.kube.list(PODS, labels=f"{LABEL_ID}={name}")
            outcome = phases.stopped_outcome(pods, blocked or "")
            status["rolloutStarted"] = None
            await self._report(cr, outcome, status)
            return
        outcome = await self._run(cr, spec, config, timeout, status)
        await self._report(cr, outcome, status)

    async def _run(
        self,
        cr: dict[str, Any],
        spec: DeploymentSpec,
        config: PrimeHubConfig,
        timeout: float,
        status: dict[str, Any],
    ) -> phases.Outcome:
        name = cr["metadata"]["name"]
        live = await self.kube.find(DEPLOYMENTS, name)
        running = live is not None and int((live.get("spec") or {}).get("replicas") or 0) > 0
        keeps = "; the running version keeps serving" if running else ""
        problem = await self._admit(name, spec, config, status)
        if problem is None:
            instance = config.instance_type(spec.predictor.instance_type)
            assert instance is not None  # problem_with() checked it
            try:
                desired = resources.deployment_manifest(
                    cr,
                    spec,
                    instance,
                    self.settings,
                    replicas=spec.predictor.replicas,
                    deploy_timeout=timeout,
                )
            except resources.ModelURIError as error:
                problem = str(error)
        if problem is not None:
            if not running:
                await self._scale_to_zero(name)
                await self._release(name, status)
            outcome = await self._observe(cr, spec, live, timeout, status)
            outcome.phase, outcome.message = Phase.FAILED, problem + keeps
            return outcome
        self._failed_for_quota.discard(name)
        if spec.endpoint.access_type == "private":
            await self._ensure_clients_secret(cr, spec)
        await self._apply(SERVICES, resources.service_manifest(cr, spec))
        await self._apply(INGRESSES, resources.ingress_manifest(cr, spec, self.settings))
        before = ((live or {}).get("metadata", {}).get("annotations") or {}).get(ANNOTATION_APPLIED)
        live = await self._apply(DEPLOYMENTS, desired)
        if before != desired["metadata"]["annotations"][ANNOTATION_APPLIED]:
            status["rolloutStarted"] = format_api_time(self.now())
        await self._prune_clients(cr)
        return await self._observe(cr, spec, live, timeout, status)

    async def _observe(
        self,
        cr: dict[str, Any],
        spec: DeploymentSpec,
        live: dict[str, Any] | None,
        timeout: float,
        status: dict[str, Any],
    ) -> phases.Outcome:
        name = cr["metadata"]["name"]
        selector = f"{LABEL_ID}={name}"
        pods = await self.kube.list(PODS, labels=selector)
        replicasets = await self.kube.list(REPLICASETS, labels=selector) if live else []
        events: list[dict[str, Any]] = []
        if any((p.get("status") or {}).get("phase", "Pending") == "Pending" for p in pods):
            events = await self.kube.list(EVENTS, fields="type=Warning")
        started_text = status.get("rolloutStarted") or (cr.get("status") or {}).get(
            "rolloutStarted"
        )
        started = phases.parse_time(started_text)
        if started is None:
            started = self.now()
            status["rolloutStarted"] = format_api_time(started)
        outcome = phases.running_outcome(
            phases.Observation(
                wanted=spec.predictor.replicas,
                deployment=live,
                replicasets=replicasets,
                pods=pods,
                events=events,
                rollout_started=started,
                deploy_timeout=timeout,
                now=self.now(),
            )
        )
        if outcome.phase == Phase.DEPLOYED:
            status["rolloutStarted"] = None
        return outcome

    # ---- quota ------------------------------------------------------------------------

    async def _admit(
        self, name: str, spec: DeploymentSpec, config: PrimeHubConfig, status: dict[str, Any]
    ) -> str | None:
        """Reserve the group quota this spec needs; the reason when it does not fit."""
        from ...core.models import Deployment

        want = requested(config, Deployment(id=name, spec=spec))
        async with self._admission:
            held = self.admitted.get(name)
            if held is not None and _fits_within(want, held):
                if (held.cpu, held.memory, held.gpu) != (want.cpu, want.memory, want.gpu):
                    self.admitted[name] = want
                    status["admitted"] = usage_json(want)
                    self._reconcile_group_later()
                return None
            others = Usage()
            for other, usage in self.admitted.items():
                if other != name and await self._same_group(other, spec.group_name):
                    others = others.add(usage)
            problem = quota_problem_for_usage(config, spec.group_name, want, others)
            if problem:
                self._failed_for_quota.add(name)
                return problem
            self.admitted[name] = want
            status["admitted"] = usage_json(want)
            return None

    async def _same_group(self, name: str, group: str) -> bool:
        known = self._groups.get(name)
        if known is None:
            cr = await self.kube.find(PHDEPLOYMENTS, name)
            if cr is None:
                self.admitted.pop(name, None)
                return False
            known = (cr.get("spec") or {}).get("groupName", "")
            self._groups[name] = known
        return known == group

    async def _release(self, name: str, status: dict[str, Any]) -> None:
        async with self._admission:
            if self.admitted.pop(name, None) is not None:
                status["admitted"] = None
                self._reconcile_group_later()

    # ---- children ---------------------------------------------------------------------

    def _deploy_timeout(self, cr: dict[str, Any]) -> float:
        raw = (cr["metadata"].get("annotations") or {}).get(ANNOTATION_DEPLOY_TIMEOUT)
        try:
            value = float(raw) if raw else 0.0
        except ValueError:
            value = 0.0
        return value if value > 0 else self.settings.deploy_timeout_seconds

    async def _apply(self, kind: Kind, desired: dict[str, Any]) -> dict[str, Any]:
        """Create the object, or replace it when what we asked for changed (by hash)."""
        name = desired["metadata"]["name"]
        live = await self.kube.find(kind, name)
        if live is None:
            try:
                return await self.kube.create(kind, desired)
            except KubeError as error:
                if error.status != 409:
                    raise
                live = await self.kube.get(kind, name)
        want = desired["metadata"]["annotations"][ANNOTATION_APPLIED]
        annotations = live["metadata"].get("annotations") or {}
        if annotations.get(ANNOTATION_APPLIED) == want:
            return live
        body = json.loads(json.dumps(desired))
        meta = body["metadata"]
        meta["resourceVersion"] = live["metadata"]["resourceVersion"]
        # Keep what others added (the deployment controller's revision annotation, labels of
        # other tools), but not keys of ours that we no longer set (auth annotations of an
        # endpoint that became public).
        theirs = {k: v for k, v in annotations.items() if not k.startswith(_OWN_PREFIXES)}
        meta["annotations"] = {**theirs, **meta.get("annotations", {})}
        meta["labels"] = {**(live["metadata"].get("labels") or {}), **meta.get("labels", {})}
        if kind is SERVICES:
            for key in _SERVICE_ASSIGNED:
                if key in (live.get("spec") or {}):
                    body["spec"][key] = live["spec"][key]
        log.info("updating %s %s", kind.kind, name)
        return await self.kube.replace(kind, name, body)

    async def _scale_to_zero(self, name: str) -> None:
        live = await self.kube.find(DEPLOYMENTS, name)
        if live is not None and int((live.get("spec") or {}).get("replicas") or 0) != 0:
            log.info("scaling %s to zero", name)
            # The hash is cleared so that starting again re-applies the whole manifest.
            await self.kube.patch(
                DEPLOYMENTS,
                name,
                {"metadata": {"annotations": {ANNOTATION_APPLIED: None}}, "spec": {"replicas": 0}},
            )

    async def _ensure_clients_secret(self, cr: dict[str, Any], spec: DeploymentSpec) -> None:
        """nginx needs the Secret to exist before it accepts a private Ingress."""
        name = resources.clients_secret_name(cr["metadata"]["name"])
        if await self.kube.find(SECRETS, name) is None:
            try:
                await self.kube.create(
                    SECRETS, resources.clients_secret_manifest(cr, spec.group_name)
                )
            except KubeError as error:
                if error.status != 409:
                    raise

    async def _prune_clients(self, cr: dict[str, Any]) -> None:
        """Drop hashes of clients no longer in the spec (the engine does it too, at once).

        The Secret is read before the PhDeployment and written with the Secret's
        resourceVersion: a client the engine is adding right now is either already in the spec
        we read, or its hash write makes our patch fail; it is never pruned by mistake.
        """
        secret_name = resources.clients_secret_name(cr["metadata"]["name"])
        secret = await self.kube.find(SECRETS, secret_name)
        if secret is None or not secret.get("data"):
            return
        fresh = await self.kube.find(PHDEPLOYMENTS, cr["metadata"]["name"])
        if fresh is None:
            return
        clients = ((fresh.get("spec") or {}).get("endpoint") or {}).get("clients") or []
        names = {c.get("name") for c in clients}
        stale = [key for key in secret["data"] if key not in names]
        if not stale:
            return
        patch = {
            "metadata": {"resourceVersion": secret["metadata"]["resourceVersion"]},
            "data": dict.fromkeys(stale),
        }
        try:
            await self.kube.patch(SECRETS, secret_name, patch)
            log.info("removed stale client hashes %s of %s", stale, cr["metadata"]["name"])
        except KubeError as error:
            if error.status != 409:
                raise
            self.enqueue(cr["metadata"]["name"])

    # ---- status -----------------------------------------------------------------------

    async def _report(
        self, cr: dict[str, Any], outcome: phases.Outcome, extra: dict[str, Any]
    ) -> None:
        """Write the status fields that changed, and an Event when the phase changed."""
        name = cr["metadata"]["name"]
        old = cr.get("status") or {}
        new: dict[str, Any] = {
            "phase": outcome.phase.value,
            "message": outcome.message,
            "replicas": outcome.replicas,
            "availableReplicas": outcome.available,
            "replicaStatuses": outcome.replica_statuses,
            "observedGeneration": cr["metadata"].get("generation", 0),
            **extra,
        }
        endpoint = resources.endpoint_url(name, self.settings)
        if endpoint:
            new["endpoint"] = endpoint
        if not old.get("creationTime"):
            created = phases.parse_time(cr["metadata"].get("creationTimestamp"))
            new["creationTime"] = format_api_time(created or self.now())
        history = merged_history(cr)
        if history is not None:
            new["history"] = history
        patch = {
            k: v for k, v in new.items() if old.get(k) != v and not (v is None and k not in old)
        }
        if not patch:
            return
        try:
            await self.kube.patch(PHDEPLOYMENTS, name, {"status": patch}, sub="status")
        except KubeError as error:
            if error.not_found:
                return
            raise
        if old.get("phase") != outcome.phase.value or (
            outcome.phase == Phase.FAILED and old.get("message") != outcome.message
        ):
            log.info("deployment %s: %s %s", name, outcome.phase.value, outcome.message)
            await self._event(cr, outcome)

    async def _event(self, cr: dict[str, Any], outcome: phases.Outcome) -> None:
        now = self.now().strftime("%Y-%m-%dT%H:%M:%SZ")
        failed = outcome.phase == Phase.FAILED
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{cr['metadata']['name']}."},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": cr["metadata"]["name"],
                "namespace": self.kube.namespace,
                "uid": cr["metadata"].get("uid"),
            },
            "reason": outcome.phase.value,
            "message": (outcome.message or outcome.phase.value)[:1024],
            "type": "Warning" if failed else "Normal",
            "source": {"component": "primehub-operator"},
            "reportingComponent": "primehub-operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.kube.create(EVENTS, event)
        except KubeError as error:  # events are a courtesy; never fail a reconcile for one
            log.debug("cannot post an event: %s", error)


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
        self.reconciler: Reconciler | None = None
        self.failure = ""
        self._stop = asyncio.Event()

    def registry(self) -> Any:
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
            self.reconciler = Reconciler(kube, self.settings, self.config_store)
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
