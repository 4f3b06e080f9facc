"""KubernetesEngine: deployments as PhDeployment custom resources, reconciled by the operator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import aiohttp
from pydantic import ValidationError as PydanticError
from traitlets import Bool, Enum, Float, Int, Unicode

from ...core.errors import Conflict, NotFound, ServiceError, ValidationError
from ...core.jobs import JobRecord
from ...core.metrics import MetricsReport
from ...core.models import (
    MAX_HISTORY,
    DeploymentRecord,
    DeploymentSpec,
    DeploymentStatus,
    HistoryEntry,
    Phase,
    PredictorStatus,
    ReplicaStatus,
    describe_problems,
    format_time,
    pydantic_problems,
    utcnow,
)
from ...core.traffic import PredictorCounters
from ..base import Engine, InvokeResult
from . import edgeauth, jobs, resources, routing
from .client import PHDEPLOYMENTS, SECRETS, Kube, KubeError, load_configuration
from .crd import (
    ANNOTATION_DEPLOY_TIMEOUT,
    ANNOTATION_HISTORY,
    API_VERSION,
    GROUP,
    KIND,
    LABEL_GROUP,
    VERSION,
)
from .jobstore import KubeJobs, sweep_forever
from .logs import PodLogs
from .metrics import PodMetrics, prometheus_metrics
from .phases import parse_time
from .samples import SampleRequests
from .settings import MODEL_PORT
from .status import merged_history

_DROP_HEADERS = {"authorization", "cookie", "host", "content-length", "x-forwarded-user"}


def clean(value: Any) -> Any:
    """JSON without nulls: the API server prunes them from a structural schema anyway."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


# Stands in for a predictor field that does not validate; never a usable model or instance type.
_PLACEHOLDER_PREDICTOR = {"name": "predictor1", "instanceType": "unknown", "modelImage": "unknown"}


def salvaged_spec(raw: dict[str, Any], name: str, labels: dict[str, str]) -> DeploymentSpec:
    """The valid spec closest to an invalid one: each field of `raw` that validates is kept.

    Fields are tried one at a time on a valid skeleton (the id as displayName, the group from
    the object's label, a placeholder predictor), so the result always validates.
    """
    group = labels.get(LABEL_GROUP) or "unknown"
    document: dict[str, Any] = {"displayName": name or "unknown", "groupName": group}
    document["predictors"] = [dict(_PLACEHOLDER_PREDICTOR)]

    def valid(candidate: dict[str, Any]) -> bool:
        try:
            DeploymentSpec.model_validate(candidate)
        except (PydanticError, ValueError, TypeError):
            return False
        return True

    for key, value in raw.items():
        if key != "predictors" and valid({**document, key: value}):
            document[key] = value
    predictors = raw.get("predictors")
    first = predictors[0] if isinstance(predictors, list) and predictors else None
    if isinstance(first, dict):
        predictor = document["predictors"][0]
        for key, value in first.items():
            trials = [{**predictor, key: value}]
            if key in ("modelImage", "modelURI"):  # the user's model replaces the placeholder
                without = {k: v for k, v in predictor.items() if k != "modelImage"}
                trials.insert(0, {**without, key: value})
            for trial in trials:
                if valid({**document, "predictors": [trial]}):
                    predictor = document["predictors"][0] = trial
                    break
    return DeploymentSpec.model_validate(document)


class ClusterUnavailable(ServiceError):
    """The cluster cannot be reached, or refuses this server's account."""

    status = 503
    reason = "ClusterUnavailable"


class KubernetesEngine(Engine):
    """Stores each deployment as a PhDeployment; the operator in the cluster runs it."""

    namespace = Unicode(
        "",
        config=True,
        help="Namespace of the PhDeployments (default: the kubeconfig context's, or the pod's).",
    )
    kubeconfig = Unicode("", config=True, help="kubeconfig file (default: $KUBECONFIG, ~/.kube).")
    context = Unicode("", config=True, help="kubeconfig context (default: the current one).")
    in_cluster = Bool(
        None,
        allow_none=True,
        config=True,
        help="Use the pod's service account (default: when running in a pod with no kubeconfig).",
    )
    traffic_router = Enum(
        ["ingress-nginx", "gateway-api"],
        "ingress-nginx",
        config=True,
        help="What splits traffic in the cluster: the operator's `router` setting (check_spec "
        "refuses early what that router cannot do, e.g. three answering predictors on "
        "ingress-nginx).",
    )
    endpoint_base_url = Unicode(
        "",
        config=True,
        help="Public URL of the model ingress, e.g. https://models.example.com "
        "(default: the endpoint the operator reports).",
    )
    service_url_template = Unicode(
        "http://{name}.{namespace}.svc:{port}",
        config=True,
        help="How this server reaches a deployment's Service for invoke ({name}, {namespace}, "
        "{port}).",
    )
    pod_url_template = Unicode(
        "http://{ip}:{port}",
        config=True,
        help="How this server reaches a pod's /metrics without Prometheus ({ip}, {pod}, {port}).",
    )
    prometheus_url = Unicode(
        "", config=True, help="Prometheus base URL for metrics (default: scrape the pods)."
    )
    deploy_timeout = Float(
        300.0, config=True, help="Seconds a rollout may take before the deployment is Failed."
    )
    delete_wait_seconds = Float(
        60.0, config=True, help="How long delete waits for the children to be removed."
    )
    request_timeout = Float(30.0, config=True, help="Seconds for one Kubernetes API call.")
    invoke_timeout = Float(120.0, config=True, help="Seconds for one invoke call.")
    metrics_interval = Float(5.0, config=True, help="Seconds between scrapes of pod metrics.")
    follow_poll_seconds = Float(2.0, config=True, help="How often followed logs look for pods.")
    operator_grace_seconds = Float(
        60.0, config=True, help="After this long, an unapplied change asks if the operator runs."
    )
    job_backoff_limit = Int(2, config=True, help="Retries of a batch job's lost pod.")
    job_ttl_seconds = Int(
        86400, config=True, help="Seconds a finished Job (and its pod's log) is kept."
    )
    job_active_deadline_seconds = Int(
        0, config=True, help="Seconds a batch job may run before it fails (0: no limit)."
    )
    job_sweep_seconds = Float(
        60.0, config=True, help="How often finished Jobs are recorded (before their TTL)."
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._kube: Kube | None = None
        self._session: aiohttp.ClientSession | None = None
        self._pod_metrics: PodMetrics | None = None
        self._job_sweep: asyncio.Task | None = None
        self._samples = SampleRequests(
            lambda record: self._service_url(
                resources.child_name(record.id, record.spec.predictor.name)
            ),
            self._http,
        )

    # ---- lifecycle --------------------------------------------------------------------

    @property
    def kube(self) -> Kube:
        assert self._kube is not None, "the engine is not started"
        return self._kube

    @property
    def _logs(self) -> PodLogs:
        return PodLogs(self.kube, self._error, self.follow_poll_seconds)

    @property
    def gpu_supported(self) -> bool:
        return True

    async def start(self) -> None:
        configuration, namespace = await load_configuration(
            self.kubeconfig, self.context, self.in_cluster
        )
        self._kube = Kube.from_configuration(configuration, self.namespace or namespace)
        try:
            await self.kube.request("GET", f"/apis/{GROUP}/{VERSION}", timeout=self.request_timeout)
        except KubeError as error:
            if error.not_found:
                raise RuntimeError(
                    f"the {KIND} custom resource is not installed in this cluster: "
                    "apply deploy/base (kubectl apply -k deploy/base), see docs/kubernetes.md"
                ) from None
            raise RuntimeError(error.message) from None
        try:
            await self.kube.list(PHDEPLOYMENTS)
        except KubeError as error:
            raise RuntimeError(
                f"cannot list {KIND}s in namespace '{self.kube.namespace}': {error.message}"
            ) from None
        self._pod_metrics = PodMetrics(self.kube, self._pod_url, self.metrics_interval)
        self._job_sweep = asyncio.create_task(
            sweep_forever(lambda: self._jobs, self.job_sweep_seconds)
        )
        self.log.info("PrimeHub Kubernetes engine: namespace %s", self.kube.namespace)

    async def shutdown(self) -> None:
        if self._job_sweep is not None:
            self._job_sweep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._job_sweep
        if self._pod_metrics is not None:
            await self._pod_metrics.close()
        if self._session is not None:
            await self._session.close()
        if self._kube is not None:
            await self._kube.close()

    def check_spec(self, spec: DeploymentSpec) -> None:
        problems = resources.model_uri_problems(spec)
        problems = problems or routing.traffic_problems(spec, self.traffic_router)
        if self.jwt_settings is not None:  # the operator's edge enforces the policy
            problems = problems or edgeauth.policy_problems(spec)
        if problems:
            raise ValidationError(
                "; ".join(f"{p['field']}: {p['message']}" for p in problems), details=problems
            )

    # ---- conversions ------------------------------------------------------------------

    @property
    def endpoint_base(self) -> str | None:
        return self.endpoint_base_url.rstrip("/") or None

    def _endpoint(self, deployment_id: str, status: dict[str, Any]) -> str | None:
        if self.endpoint_base_url:
            base = self.endpoint_base_url.rstrip("/")
            return f"{base}/deployment/{deployment_id}/{resources.PREDICT_PATH}"
        return status.get("endpoint") or None

    def to_deployment(self, cr: dict[str, Any]) -> DeploymentRecord:
        """The API's deployment object from a PhDeployment.

        A PhDeployment this server cannot read (a spec edited with kubectl that fails our
        validation, a status with unknown values) becomes a Failed deployment saying why,
        so one bad object never hides the others.
        """
        try:
            spec = DeploymentSpec.model_validate(cr.get("spec") or {})
        except PydanticError as error:
            problem = describe_problems(pydantic_problems(error))
            return self._quarantined(cr, f"the spec is invalid: {problem}")
        try:
            return self._deployment(cr, spec)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            return self._quarantined(cr, f"the status cannot be read: {error}")

    def _quarantined(self, cr: dict[str, Any], problem: str) -> DeploymentRecord:
        """A Failed deployment for an unreadable PhDeployment: every field that validates is
        kept, the rest comes from placeholders, so it can be shown, fixed by an update (which
        writes a whole valid spec) or deleted."""
        meta = cr.get("metadata") or {}
        name = meta.get("name", "")
        raw = cr.get("spec")
        spec = salvaged_spec(raw if isinstance(raw, dict) else {}, name, meta.get("labels") or {})
        message = (
            f"{problem}; update the deployment (any change writes the valid fields shown "
            f"back), or fix the {KIND} with kubectl edit {KIND.lower()} {name}"
        )
        try:
            return DeploymentRecord(
                id=name,
                spec=spec,
                status=DeploymentStatus(
                    phase=Phase.FAILED,
                    message=message,
                    endpoint=self._endpoint(name, {}),
                    creation_time=meta.get("creationTimestamp"),
                    last_updated=meta.get("creationTimestamp"),
                ),
                resource_version=str(meta.get("generation") or 1),
            )
        except PydanticError as error:  # not even the name is a deployment id
            raise ServiceError(f"{KIND} '{name}' cannot be read: {problem}; {error}") from None

    def _deployment(self, cr: dict[str, Any], spec: DeploymentSpec) -> DeploymentRecord:
        meta = cr["metadata"]
        status = cr.get("status") or {}
        name = meta["name"]
        history = []
        for item in merged_history(cr) or status.get("history") or []:
            with contextlib.suppress(PydanticError):
                history.append(HistoryEntry.model_validate(item))
        generation = int(meta.get("generation") or 1)
        phase = status.get("phase")
        message = status.get("message", "")
        if int(status.get("observedGeneration") or 0) < generation or not phase:
            # The operator has not seen this spec yet: say what is about to happen.
            if spec.stop:
                phase = Phase.STOPPING.value if status.get("replicas") else Phase.STOPPED.value
                message = ""
            else:
                phase = Phase.DEPLOYING.value
                message = "waiting for the operator to apply the change"
            changed = parse_time(status.get("lastUpdated")) or parse_time(
                meta.get("creationTimestamp")
            )
            waited = (datetime.now(timezone.utc) - changed).total_seconds() if changed else 0.0
            if waited > self.operator_grace_seconds:
                message = (
                    f"the operator has not applied this change for {waited:.0f} s: is "
                    f"primehub-operator running in namespace '{self.kube.namespace}'? (kubectl -n "
                    f"{self.kube.namespace} get pods -l app.kubernetes.io/name=primehub-operator)"
                )
        created = status.get("creationTime")
        if not created:
            parsed = parse_time(meta.get("creationTimestamp"))
            created = format_time(parsed) if parsed else None
        statuses = []
        for item in status.get("replicaStatuses") or []:
            with contextlib.suppress(PydanticError):
                statuses.append(ReplicaStatus.model_validate(item))
        predictors = []
        for item in status.get("predictors") or []:
            with contextlib.suppress(PydanticError):
                predictors.append(PredictorStatus.model_validate(item))
        record = DeploymentRecord(
            id=name,
            spec=spec,
            status=DeploymentStatus(
                phase=Phase(phase),
                message=message or "",
                replicas=int(status.get("replicas") or 0),
                available_replicas=int(status.get("availableReplicas") or 0),
                endpoint=self._endpoint(name, status),
                creation_time=created,
                last_updated=status.get("lastUpdated") or created,
                replica_statuses=statuses,
                predictors=predictors,
                history=history[:MAX_HISTORY],
            ),
            resource_version=str(generation),
        )
        record.status.sample_request = self._samples.known(record)
        return record

    def _annotations(self, entry: HistoryEntry | None) -> dict[str, str]:
        annotations = {ANNOTATION_DEPLOY_TIMEOUT: f"{self.deploy_timeout:g}"}
        if entry is not None:
            annotations[ANNOTATION_HISTORY] = json.dumps(
                clean(entry.to_json()), separators=(",", ":")
            )
        return annotations

    # ---- the Engine interface ---------------------------------------------------------

    async def create(self, deployment: DeploymentRecord) -> DeploymentRecord:
        spec = deployment.spec
        history = deployment.status.history
        body = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": deployment.id,
                "labels": resources.labels(deployment.id, spec.group_name),
                "annotations": self._annotations(history[0] if history else None),
            },
            "spec": clean(spec.to_json()),
        }
        try:
            created = await self.kube.create(PHDEPLOYMENTS, body)
        except KubeError as error:
            if error.conflict:
                raise Conflict(f"deployment id '{deployment.id}' is already taken") from None
            raise self._error(error) from None
        status = {
            "history": [clean(h.to_json()) for h in history],
            "creationTime": deployment.status.creation_time or utcnow(),
            "lastUpdated": deployment.status.last_updated or utcnow(),
        }
        try:
            created = await self.kube.patch(
                PHDEPLOYMENTS, deployment.id, {"status": status}, sub="status"
            )
        except KubeError as error:  # the annotation still holds the first history entry
            self.log.warning("deployment %s: status not written: %s", deployment.id, error)
        return self.to_deployment(created)

    async def _read(self, deployment_id: str) -> dict[str, Any]:
        try:
            cr = await self.kube.find(PHDEPLOYMENTS, deployment_id)
        except KubeError as error:
            raise self._error(error) from None
        if cr is None or cr["metadata"].get("deletionTimestamp"):
            raise NotFound(f"deployment '{deployment_id}' not found")
        return cr

    async def get(self, deployment_id: str) -> DeploymentRecord:
        record = self.to_deployment(await self._read(deployment_id))
        await self._samples.fill([record])
        return record

    async def list_deployments(self) -> list[DeploymentRecord]:
        try:
            items = await self.kube.list(PHDEPLOYMENTS)
        except KubeError as error:
            raise self._error(error) from None
        result = []
        for cr in items:
            if cr["metadata"].get("deletionTimestamp"):
                continue
            try:
                result.append(self.to_deployment(cr))
            except ServiceError as error:
                self.log.warning("%s", error.message)
        await self._samples.fill(result)
        return result

    async def replace(
        self, deployment: DeploymentRecord, *, client_secret: tuple[str, str] | None = None
    ) -> DeploymentRecord:
        history = deployment.status.history
        for _attempt in range(8):
            live = await self._read(deployment.id)
            generation = str(live["metadata"].get("generation") or 1)
            if generation != deployment.resource_version:
                raise Conflict(
                    f"deployment '{deployment.id}' was changed by someone else "
                    f"(resourceVersion {deployment.resource_version} is stale, current is "
                    f"{generation}); reload it and apply your change again"
                )
            body = {k: v for k, v in live.items() if k != "status"}
            body["spec"] = clean(deployment.spec.to_json())
            meta = body["metadata"] = dict(live["metadata"])
            meta["annotations"] = {
                **(meta.get("annotations") or {}),
                **self._annotations(history[0] if history else None),
            }
            try:
                updated = await self.kube.replace(PHDEPLOYMENTS, deployment.id, body)
                break
            except KubeError as error:
                if error.conflict:  # the operator wrote the status meanwhile: read again
                    continue
                if error.not_found:
                    raise NotFound(f"deployment '{deployment.id}' not found") from None
                raise self._error(error) from None
        else:
            raise Conflict(f"deployment '{deployment.id}' keeps changing; try again")
        status = {"history": [clean(h.to_json()) for h in history], "lastUpdated": utcnow()}
        with contextlib.suppress(KubeError):
            updated = await self.kube.patch(
                PHDEPLOYMENTS, deployment.id, {"status": status}, sub="status"
            )
        # Hashes after the spec (see Reconciler._prune_clients for why this order is safe).
        names = {c.name for c in deployment.spec.endpoint.clients}
        if client_secret is not None:
            await self._write_client_hash(updated, deployment.spec.group_name, *client_secret)
        await self._drop_client_hashes(deployment.id, names)
        return self.to_deployment(updated)

    async def _write_client_hash(
        self, cr: dict[str, Any], group: str, name: str, hashed: str
    ) -> None:
        secret_name = resources.clients_secret_name(cr["metadata"]["name"])
        value = resources.encode_secret_value(resources.nginx_hash(hashed))
        try:
            await self.kube.patch(SECRETS, secret_name, {"data": {name: value}})
            return
        except KubeError as error:
            if not error.not_found:
                raise self._error(error) from None
        manifest = resources.clients_secret_manifest(cr, group, {name: hashed})
        try:
            await self.kube.create(SECRETS, manifest)
        except KubeError as error:
            if not error.conflict:
                raise self._error(error) from None
            await self.kube.patch(SECRETS, secret_name, {"data": {name: value}})

    async def _drop_client_hashes(self, deployment_id: str, keep: set[str]) -> None:
        secret_name = resources.clients_secret_name(deployment_id)
        try:
            secret = await self.kube.find(SECRETS, secret_name)
            stale = [k for k in ((secret or {}).get("data") or {}) if k not in keep]
            if stale:
                await self.kube.patch(SECRETS, secret_name, {"data": dict.fromkeys(stale)})
        except KubeError as error:
            raise self._error(error) from None

    async def delete(self, deployment_id: str) -> None:
        try:
            await self.kube.delete(PHDEPLOYMENTS, deployment_id, propagation="Foreground")
        except KubeError as error:
            if error.not_found:
                raise NotFound(f"deployment '{deployment_id}' not found") from None
            raise self._error(error) from None
        if self._pod_metrics is not None:
            self._pod_metrics.forget(deployment_id)
        self._samples.forget(deployment_id)
        # Foreground deletion: the object goes once its children are gone.
        deadline = time.monotonic() + self.delete_wait_seconds
        while time.monotonic() < deadline:
            if await self.kube.find(PHDEPLOYMENTS, deployment_id) is None:
                return
            await asyncio.sleep(0.25)
        self.log.warning("deployment %s: still being deleted", deployment_id)

    # ---- replicas and logs ------------------------------------------------------------

    async def replica_names(self, deployment_id: str) -> list[str]:
        await self._read(deployment_id)
        return [p["metadata"]["name"] for p in await self._logs.pods(deployment_id)]

    async def logs(self, deployment_id: str, replica: str | None, tail: int | None) -> list[str]:
        await self._read(deployment_id)
        return await self._logs.lines(deployment_id, replica, tail)

    async def follow_logs(self, deployment_id: str, replica: str | None) -> AsyncIterator[str]:
        await self._read(deployment_id)
        async for line in self._logs.follow(deployment_id, replica):
            yield line

    async def download_logs(self, deployment_id: str, replica: str | None) -> AsyncIterator[bytes]:
        await self._read(deployment_id)
        async for chunk in self._logs.download(deployment_id, replica):
            yield chunk

    # ---- invoke and metrics -----------------------------------------------------------

    def _pod_url(self, pod: dict[str, Any]) -> str:
        return self.pod_url_template.format(
            ip=(pod.get("status") or {}).get("podIP", ""),
            pod=pod["metadata"]["name"],
            port=MODEL_PORT,
            namespace=self.kube.namespace,
        ).rstrip("/")

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.invoke_timeout)
            )
        return self._session

    def _service_url(self, service: str) -> str:
        return self.service_url_template.format(
            name=service, namespace=self.kube.namespace, port=MODEL_PORT
        ).rstrip("/")

    async def invoke(
        self, deployment_id: str, path: str, body: bytes, headers: dict[str, str], user: str
    ) -> InvokeResult:
        record = self.to_deployment(await self._read(deployment_id))
        session = self._http()
        base = self._service_url(routing.invoked_service(record.spec, deployment_id))
        url = f"{base}/{path.lstrip('/')}"
        # The signed-in user calls the Service directly (no ingress, no client token); the
        # model sees who it is in X-Forwarded-User, as it sees a client's name through nginx.
        sent = {k: v for k, v in headers.items() if k.lower() not in _DROP_HEADERS}
        sent["X-Forwarded-User"] = user
        try:
            async with session.post(url, data=body, headers=sent) as response:
                data = await response.read()
                keep = {"Content-Type", "Request-ID", "X-PrimeHub-Predictor"}
                return InvokeResult(
                    response.status,
                    data,
                    {k: v for k, v in response.headers.items() if k in keep},
                )
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            reason = str(error) or type(error).__name__
            message = f"deployment '{deployment_id}' cannot be reached at {base}: {reason}"
            return InvokeResult(
                503,
                json.dumps({"message": message, "reason": "Unavailable"}).encode(),
                {"Content-Type": "application/json"},
            )

    async def predictor_counters(self, deployment_id: str) -> list[PredictorCounters]:
        """Per predictor, from its pods' model-server metrics (PodMetrics.predictor_counters)."""
        record = self.to_deployment(await self._read(deployment_id))
        assert self._pod_metrics is not None
        return await self._pod_metrics.predictor_counters(
            deployment_id, [(p.name, p.shadow) for p in record.spec.predictors]
        )

    async def metrics(self, deployment_id: str, window: float, step: float) -> MetricsReport:
        await self._read(deployment_id)
        if self.prometheus_url:
            if self._session is None or self._session.closed:
                self._session = aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=self.invoke_timeout)
                )
            return await prometheus_metrics(
                self._session,
                self.prometheus_url,
                self.kube.namespace,
                deployment_id,
                window,
                step,
            )
        assert self._pod_metrics is not None
        return await self._pod_metrics.series(deployment_id, window, step)

    # ---- batch jobs (jobstore.py, jobs.py; docs/kubernetes.md "Batch jobs") -------------

    @property
    def _jobs(self) -> KubeJobs:
        options = jobs.JobOptions(
            backoff_limit=self.job_backoff_limit,
            ttl_seconds=self.job_ttl_seconds,
            active_deadline_seconds=self.job_active_deadline_seconds or None,
        )
        return KubeJobs(self.kube, self._error, options)

    async def create_job(self, deployment: DeploymentRecord, job: JobRecord) -> JobRecord:
        return await self._jobs.create(await self._read(deployment.id), job)

    async def list_jobs(self, deployment_id: str) -> list[JobRecord]:
        await self._read(deployment_id)
        return await self._jobs.all(deployment_id)

    async def get_job(self, deployment_id: str, job_id: str) -> JobRecord:
        await self._read(deployment_id)
        return await self._jobs.get(deployment_id, job_id)

    async def delete_job(self, deployment_id: str, job_id: str) -> JobRecord:
        await self._read(deployment_id)
        return await self._jobs.delete(deployment_id, job_id)

    async def job_logs(self, deployment_id: str, job_id: str, tail: int | None) -> list[str]:
        await self._read(deployment_id)
        return await self._jobs.logs(deployment_id, job_id, tail)

    async def running_jobs(self) -> list[JobRecord]:
        return await self._jobs.running()

    # ---- errors -----------------------------------------------------------------------

    def _error(self, error: KubeError) -> ServiceError:
        """An API error the user can read; 403s name the missing permission."""
        if error.status in (401, 403):
            return ClusterUnavailable(
                f"the Kubernetes API refused this server's account: {error.message}; "
                "see the RBAC section of docs/kubernetes.md"
            )
        if error.status == 0:
            return ClusterUnavailable(error.message)
        if error.status == 422:
            return ValidationError(f"the cluster rejected the deployment: {error.message}")
        return ServiceError(f"Kubernetes API error {error.status}: {error.message}")
