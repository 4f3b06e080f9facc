"""The operator's reconciler: a work queue of PhDeployment names, each made so from a fresh read.

Every event enqueues the PhDeployment's name, and a small pool of workers reconciles one name
at a time, level-triggered. A resync loop re-enqueues every deployment periodically, which is
what turns a deploy timeout or a fixed configuration (a group enabled, a quota raised) into a
new phase without any change to the object.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError as PydanticError

from ...core.config import ConfigStore, PrimeHubConfig
from ...core.models import DeploymentSpec, Phase, describe_problems, pydantic_problems
from ...core.models import format_time as format_api_time
from ..rollout import RUNNING_KEEPS_SERVING
from . import autoscaling, children, edgeauth, phases, resources, routing
from .admission import QuotaAdmission
from .client import DEPLOYMENTS, EVENTS, PHDEPLOYMENTS, PODS, REPLICASETS, Kube, KubeError
from .crd import ANNOTATION_APPLIED, ANNOTATION_DEPLOY_TIMEOUT, LABEL_ID, LABEL_PREDICTOR
from .settings import OperatorSettings
from .status import report

log = logging.getLogger("primehub.operator")


# What a spec needs the cluster to have, by the kind whose API is missing.
_MISSING_COMPONENT = {
    "ScaledObject": "minReplicas: 0 needs KEDA and its HTTP add-on",
    "HTTPScaledObject": "minReplicas: 0 needs KEDA's HTTP add-on",
    "HTTPRoute": "the operator's router: gateway-api needs the Gateway API CRDs",
    "HorizontalPodAutoscaler": "autoscaling needs the autoscaling/v2 API (Kubernetes 1.23+)",
}


def _now() -> datetime:
    return datetime.now(timezone.utc)


class OperatorReconciler:
    """Turns PhDeployments into predictors' Deployments, Services, autoscalers, routes; reports."""

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
        self.quota = QuotaAdmission(kube, retry=self.enqueue)
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._busy: set[str] = set()
        self._again: set[str] = set()
        self._tasks: list[asyncio.Task] = []

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
        self.quota.learn(await self.kube.list(PHDEPLOYMENTS))
        for i in range(self.settings.workers):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"reconciler-{i}"))
        self._tasks.append(asyncio.create_task(self._resync(), name="resync"))

    async def stop(self) -> None:
        """Cancel the workers and the resync loop, and wait for them to end."""
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
        if self.quota.forget(name):
            log.info("deployment %s deleted; its quota is released", name)

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
            await children.scale_to_zero(self.kube, name)
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
        blocked = next(
            (
                why
                for p in spec.predictors
                if (why := config.problem_with(spec.group_name, p.instance_type))
            ),
            None,
        )
        if spec.stop or blocked:
            await self.quota.release(name, status)
            await children.scale_to_zero(self.kube, name)
            pods = await self.kube.list(PODS, labels=f"{LABEL_ID}={name}")
            outcome = phases.stopped_outcome(pods, blocked or "", spec)
            status["rolloutStarted"] = None
            await self._report(cr, outcome, status)
            return
        outcome = await self._run(cr, spec, config, timeout, status)
        await self._report(cr, outcome, status)

    async def _report(
        self, cr: dict[str, Any], outcome: phases.Outcome, extra: dict[str, Any]
    ) -> None:
        await report(self.kube, self.settings, cr, outcome, extra, self.now())

    def _desired(
        self, cr: dict[str, Any], spec: DeploymentSpec, config: PrimeHubConfig, timeout: float
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Every child the spec asks for (Deployments first), or why it cannot run."""
        problems = routing.traffic_problems(spec, self.settings.router)
        if self.settings.jwt is not None:
            problems += edgeauth.policy_problems(spec)
        if problems:
            return [], "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        if self.settings.router == "gateway-api" and not self.settings.gateway.parent_refs:
            return [], (
                "the operator's configuration: router gateway-api needs gateway.parentRefs "
                "(the Gateway the HTTPRoutes attach to)"
            )
        deployments: list[dict[str, Any]] = []
        others: list[dict[str, Any]] = []
        for predictor in spec.predictors:
            instance = config.instance_type(predictor.instance_type)
            assert instance is not None  # problem_with() checked it
            try:
                deployments.append(
                    resources.deployment_manifest(
                        cr,
                        spec,
                        instance,
                        self.settings,
                        replicas=predictor.replicas or max(predictor.lowest, 1),
                        deploy_timeout=timeout,
                        predictor=predictor,
                    )
                )
            except resources.ModelURIError as error:
                prefix = f"predictor {predictor.name}: " if len(spec.predictors) > 1 else ""
                return [], prefix + str(error)
            others.append(resources.service_manifest(cr, spec, predictor))
            if predictor.idle_seconds is not None:
                others.append(routing.wake_service_manifest(cr, spec, predictor, self.settings))
            others += autoscaling.autoscaler_manifests(cr, spec, predictor, self.settings)
        if self.settings.router == "gateway-api":
            others.append(routing.httproute_manifest(cr, spec, self.settings))
        else:
            others += routing.ingress_manifests(cr, spec, self.settings)
        return deployments + others, None

    async def _run(
        self,
        cr: dict[str, Any],
        spec: DeploymentSpec,
        config: PrimeHubConfig,
        timeout: float,
        status: dict[str, Any],
    ) -> phases.Outcome:
        name = cr["metadata"]["name"]
        lives = await children.owned(self.kube, DEPLOYMENTS, name)
        running = any(int((d.get("spec") or {}).get("replicas") or 0) > 0 for d in lives)
        keeps = RUNNING_KEEPS_SERVING if running else ""
        problem = await self.quota.admit(name, spec, config, status)
        desired: list[dict[str, Any]] = []
        if problem is None:
            desired, problem = self._desired(cr, spec, config, timeout)
        if problem is not None:
            if not running:
                await children.scale_to_zero(self.kube, name)
                await self.quota.release(name, status)
            outcome = await self._observe(cr, spec, timeout, status)
            outcome.phase, outcome.message = Phase.FAILED, problem + keeps
            return outcome
        self.quota.fits(name)
        if spec.endpoint.access_type == "private":
            await children.ensure_clients_secret(self.kube, cr, spec)
            # Before the Ingress names it in auth-url: nginx would answer 500 without it.
            await edgeauth.ensure_proxy(self.kube, self.settings)
        before = {
            d["metadata"]["name"]: (d["metadata"].get("annotations") or {}).get(ANNOTATION_APPLIED)
            for d in lives
        }
        autoscaled = {resources.child_name(name, p.name) for p in spec.predictors if p.autoscaled}
        # Deployments and Services first: a route never points at a Service yet to come.
        for manifest in desired:
            child = manifest["metadata"]["name"]
            keep = manifest["kind"] == "Deployment" and child in autoscaled
            kind = children.KINDS[manifest["kind"]]
            try:
                await children.apply(self.kube, kind, manifest, keep_replicas=keep)
            except KubeError as error:
                missing = _MISSING_COMPONENT.get(kind.kind)
                if not (error.not_found and missing):
                    raise
                outcome = await self._observe(cr, spec, timeout, status)
                outcome.phase = Phase.FAILED
                outcome.message = (
                    f"the cluster has no {kind.plural}.{kind.group}: {missing} "
                    '(docs/kubernetes.md, "Traffic and scale")'
                )
                return outcome
            if (
                manifest["kind"] == "Deployment"
                and before.get(child) != (manifest["metadata"]["annotations"][ANNOTATION_APPLIED])
            ):
                status["rolloutStarted"] = format_api_time(self.now())
        await children.prune(self.kube, name, desired)
        if not await children.prune_clients(self.kube, cr):
            self.enqueue(name)
        return await self._observe(cr, spec, timeout, status)

    async def _observe(
        self,
        cr: dict[str, Any],
        spec: DeploymentSpec,
        timeout: float,
        status: dict[str, Any],
    ) -> phases.Outcome:
        name = cr["metadata"]["name"]
        selector = f"{LABEL_ID}={name}"
        pods = await self.kube.list(PODS, labels=selector)
        lives = {
            d["metadata"]["name"]: d for d in await children.owned(self.kube, DEPLOYMENTS, name)
        }
        replicasets = await self.kube.list(REPLICASETS, labels=selector) if lives else []
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
        previous = {
            p.get("name"): p.get("phase") for p in (cr.get("status") or {}).get("predictors") or []
        }
        parts = []
        for predictor in spec.predictors:
            live = lives.get(resources.child_name(name, predictor.name))
            observation = phases.Observation(
                wanted=predictor.replicas or max(predictor.lowest, 1),
                deployment=live,
                replicasets=replicasets,
                pods=[
                    p
                    for p in pods
                    if (p["metadata"].get("labels") or {}).get(LABEL_PREDICTOR) == predictor.name
                ],
                events=events,
                rollout_started=started,
                deploy_timeout=timeout,
                now=self.now(),
            )
            outcome = phases.running_outcome(observation)
            phase, message = phases.predictor_phase(
                predictor, observation, outcome, previous.get(predictor.name) or ""
            )
            parts.append((predictor, outcome, phase, message))
        outcome = phases.deployment_outcome(spec, parts)
        if outcome.phase == Phase.DEPLOYED:
            status["rolloutStarted"] = None
        return outcome

    def _deploy_timeout(self, cr: dict[str, Any]) -> float:
        raw = (cr["metadata"].get("annotations") or {}).get(ANNOTATION_DEPLOY_TIMEOUT)
        try:
            value = float(raw) if raw else 0.0
        except ValueError:
            value = 0.0
        return value if value > 0 else self.settings.deploy_timeout_seconds
