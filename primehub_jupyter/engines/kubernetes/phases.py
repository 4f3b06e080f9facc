"""Phase and message of a deployment (and each predictor) from Deployments, Pods and Events."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ...core.models import DeploymentSpec, Phase, Predictor, PredictorPhase
from ..rollout import LOAD_FAILURE_EXIT_CODE, Rollout, rollout_phase, stopped_phase
from .crd import LABEL_PREDICTOR
from .resources import INITIALIZER_CONTAINER, MODEL_CONTAINER

REVISION = "deployment.kubernetes.io/revision"
TEMPLATE_HASH = "pod-template-hash"
PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
CONFIG_FAILURES = ("CreateContainerConfigError", "CreateContainerError")
VOLUME_EVENTS = ("FailedMount", "FailedAttachVolume")


def parse_time(value: str | None) -> datetime | None:
    """A Kubernetes timestamp (RFC 3339) as an aware datetime."""
    if not value:
        return None
    text = value.replace("Z", "+00:00")
    if "." in text:
        # Python before 3.11 wants at most 6 fraction digits; the API may send 9.
        head, _, rest = text.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return None


def _owned_by(obj: dict[str, Any], uid: str | None) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


def _revision(obj: dict[str, Any]) -> int:
    try:
        return int((obj.get("metadata", {}).get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def current_replicaset(
    deployment: dict[str, Any], replicasets: Iterable[dict[str, Any]]
) -> dict[str, Any] | None:
    """The ReplicaSet of the Deployment's newest revision (its current pod template)."""
    uid = deployment.get("metadata", {}).get("uid")
    owned = [rs for rs in replicasets if _owned_by(rs, uid)]
    return max(owned, key=_revision, default=None)


def rollout_complete(deployment: dict[str, Any], wanted: int) -> bool:
    """What `kubectl rollout status` waits for: every replica updated, available, no old ones."""
    status = deployment.get("status") or {}
    generation = deployment.get("metadata", {}).get("generation", 0)
    return (
        status.get("observedGeneration", 0) >= generation
        and status.get("updatedReplicas", 0) >= wanted
        and status.get("replicas", 0) == status.get("updatedReplicas", 0)
        and status.get("availableReplicas", 0) >= wanted
    )


def pod_ready(pod: dict[str, Any]) -> bool:
    condition = _condition(pod, "Ready")
    return bool(condition and condition.get("status") == "True") and not _terminating(pod)


def _terminating(pod: dict[str, Any]) -> bool:
    return bool(pod.get("metadata", {}).get("deletionTimestamp"))


def _container(pod: dict[str, Any], name: str, init: bool = False) -> dict[str, Any]:
    key = "initContainerStatuses" if init else "containerStatuses"
    for status in (pod.get("status") or {}).get(key) or []:
        if status.get("name") == name:
            return status
    return {}


def _terminated_text(terminated: dict[str, Any]) -> str:
    message = (terminated.get("message") or "").strip()
    if message:
        # FallbackToLogsOnError puts a log tail here: the last lines say the most.
        lines = [line for line in message.splitlines() if line.strip()]
        message = " ".join(lines[-3:])
    return message or terminated.get("reason") or f"exit code {terminated.get('exitCode')}"


def _image_problem(status: dict[str, Any], what: str) -> str | None:
    waiting = (status.get("state") or {}).get("waiting") or {}
    reason = waiting.get("reason")
    if reason in PULL_FAILURES:
        image = status.get("image", "")
        detail = waiting.get("message") or reason
        return (
            f"image cannot be pulled: {image} ({what}): {detail}; "
            "check the image name and the imagePullSecret"
        )
    if reason in CONFIG_FAILURES:
        return f"the {what} cannot be created: {waiting.get('message') or reason}"
    return None


def _initializer_problem(pod: dict[str, Any]) -> str | None:
    status = _container(pod, INITIALIZER_CONTAINER, init=True)
    if not status:
        return None
    image = _image_problem(status, "model initializer")
    if image:
        return image
    state = status.get("state") or {}
    terminated = state.get("terminated") or {}
    if terminated and terminated.get("exitCode", 0) != 0:
        return f"model URI cannot be fetched: {_terminated_text(terminated)}"
    waiting = state.get("waiting") or {}
    last = (status.get("lastState") or {}).get("terminated") or {}
    if waiting and last and last.get("exitCode", 0) != 0:
        return f"model URI cannot be fetched: {_terminated_text(last)}"
    return None


def _model_problem(pod: dict[str, Any], memory_limit: str | None) -> str | None:
    status = _container(pod, MODEL_CONTAINER)
    if not status:
        return None
    image = _image_problem(status, "model container")
    if image:
        return image
    state = status.get("state") or {}
    terminated = state.get("terminated") or (status.get("lastState") or {}).get("terminated")
    waiting = state.get("waiting") or {}
    crash_looping = waiting.get("reason") == "CrashLoopBackOff"
    if not terminated or terminated.get("exitCode", 0) == 0:
        return None
    code = terminated.get("exitCode")
    text = _terminated_text(terminated)
    if code == LOAD_FAILURE_EXIT_CODE:
        return text if text.startswith("model failed to load") else f"model failed to load: {text}"
    if not crash_looping:
        return None  # one crash, restarting now: not yet a failure
    if terminated.get("reason") == "OOMKilled":
        limit = f" of {memory_limit}" if memory_limit else ""
        return (
            f"the model container ran out of memory (OOMKilled, limit{limit}); "
            "choose an instance type with more memory"
        )
    restarts = status.get("restartCount", 0)
    return (
        f"the model container keeps crashing (exit code {code}, {restarts} restarts): {text}; "
        "see the logs"
    )


def pod_problem(
    pod: dict[str, Any], events: Iterable[dict[str, Any]] = (), memory_limit: str | None = None
) -> str | None:
    """Why this pod cannot become ready, in words a person can act on; None if it may."""
    if _terminating(pod):
        return None
    scheduled = _condition(pod, "PodScheduled")
    if (
        scheduled
        and scheduled.get("status") == "False"
        and scheduled.get("reason") == "Unschedulable"
    ):
        message = scheduled.get("message") or "no node fits"
        if "persistentvolumeclaim" in message:
            return f"a volume cannot be mounted: {message}"
        return f"cluster resource not enough: {message}"
    problem = _initializer_problem(pod) or _model_problem(pod, memory_limit)
    if problem:
        return problem
    if (pod.get("status") or {}).get("phase", "Pending") == "Pending":
        name = pod.get("metadata", {}).get("name")
        for event in events:
            involved = event.get("involvedObject") or {}
            if involved.get("name") != name or event.get("type") != "Warning":
                continue
            if event.get("reason") in VOLUME_EVENTS:
                return f"a volume cannot be mounted: {event.get('message', '')}"
            if event.get("reason") == "FailedScheduling" and not scheduled:
                return f"cluster resource not enough: {event.get('message', '')}"
    return None


def pod_state(pod: dict[str, Any]) -> str:
    """A short state like kubectl's STATUS column."""
    if _terminating(pod):
        return "Terminating"
    init = _container(pod, INITIALIZER_CONTAINER, init=True)
    init_state = init.get("state") or {}
    if init and "terminated" not in init_state:
        reason = (init_state.get("waiting") or {}).get("reason")
        return f"Init:{reason}" if reason else "Init:Running"
    model = _container(pod, MODEL_CONTAINER)
    waiting = (model.get("state") or {}).get("waiting") or {}
    if waiting.get("reason"):
        return str(waiting["reason"])
    return str((pod.get("status") or {}).get("phase") or "Pending")


def replica_status(pod: dict[str, Any], problem: str | None, predictor: str = "") -> dict[str, Any]:
    """One entry of status.replicaStatuses."""
    model = _container(pod, MODEL_CONTAINER)
    return {
        "name": pod["metadata"]["name"],
        "predictor": predictor,
        "ready": pod_ready(pod),
        "phase": pod_state(pod),
        "restarts": int(model.get("restartCount", 0)),
        "message": problem or "",
        "startTime": (pod.get("status") or {}).get("startTime") or "",
    }


@dataclass
class Observation:
    """What the operator saw of one running (not stopped) deployment."""

    wanted: int
    deployment: dict[str, Any] | None
    replicasets: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    rollout_started: datetime | None = None
    deploy_timeout: float = 300.0
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


@dataclass
class Outcome:
    """The status the operator writes."""

    phase: Phase
    message: str = ""
    replicas: int = 0
    available: int = 0
    replica_statuses: list[dict[str, Any]] = field(default_factory=list)
    predictors: list[dict[str, Any]] = field(default_factory=list)


def _progress_hint(pods: list[dict[str, Any]]) -> str:
    states = [pod_state(p) for p in pods if not pod_ready(p)]
    if any(s.startswith("Init:") for s in states):
        return "fetching the model"
    if any(s in ("ContainerCreating", "PodInitializing") for s in states):
        return "starting the container"
    if any(s == "Pending" for s in states):
        return "waiting for a node"
    if any(s == "Running" for s in states):
        return "loading the model"
    return ""


def _quota_message(message: str) -> str:
    if "exceeded quota" in message:
        return f"namespace resource quota exceeded: {message}"
    return f"pods cannot be created: {message}"


def _rollout_problem(
    owners: Iterable[dict[str, Any] | None],
    new_pods: list[dict[str, Any]],
    problems: dict[str, str | None],
) -> str:
    """Why the rollout cannot finish: pods refused (quota), else a new pod's problem."""
    for owner in owners:
        failure = _condition(owner, "ReplicaFailure")
        if failure and failure.get("status") == "True":
            return _quota_message(failure.get("message") or "")
    for pod in new_pods:
        problem = problems[pod["metadata"]["name"]]
        if problem:
            return problem
    return ""


def running_outcome(obs: Observation) -> Outcome:
    """Deploying, Deployed or Failed (with why) for a deployment that should run."""
    deployment = obs.deployment
    pods = [p for p in obs.pods if not _terminating(p)]
    if deployment is None:
        return Outcome(Phase.DEPLOYING, "creating the Kubernetes Deployment", len(pods))
    status = deployment.get("status") or {}
    available = int(status.get("availableReplicas") or 0)
    current = current_replicaset(deployment, obs.replicasets)
    template = ((current or {}).get("metadata", {}).get("labels") or {}).get(TEMPLATE_HASH)
    new_pods = [
        p for p in pods if (p["metadata"].get("labels") or {}).get(TEMPLATE_HASH) == template
    ]
    old_ready = [p for p in pods if p not in new_pods and pod_ready(p)]
    memory = _memory_limit(deployment)
    problems = {p["metadata"]["name"]: pod_problem(p, obs.events, memory) for p in pods}
    statuses = [
        replica_status(p, problems[p["metadata"]["name"]]) for p in _ordered(pods, new_pods)
    ]
    problem = _rollout_problem((current, deployment), new_pods, problems)
    progressing = _condition(deployment, "Progressing")
    deadline = bool(progressing and progressing.get("reason") == "ProgressDeadlineExceeded")
    waited = (obs.now - obs.rollout_started).total_seconds() if obs.rollout_started else 0.0
    phase, message = rollout_phase(
        Rollout(
            wanted=obs.wanted,
            ready=sum(1 for p in new_pods if pod_ready(p)),
            complete=rollout_complete(deployment, obs.wanted),
            old_serving=bool(old_ready),
            problem=problem,
            timed_out=deadline or waited > obs.deploy_timeout,
            deploy_timeout=obs.deploy_timeout,
            hint=_progress_hint(new_pods),
        )
    )
    return Outcome(phase, message, len(pods), available, statuses)


def stopped_outcome(
    pods: list[dict[str, Any]], message: str = "", spec: DeploymentSpec | None = None
) -> Outcome:
    """Stopping while any pod is left, then Stopped (or Failed, with `message`, if it is why)."""
    left = len(pods)
    statuses = [replica_status(p, None, _predictor_of(p)) for p in pods]
    predictors = []
    for predictor in spec.predictors if spec is not None else []:
        mine = [p for p in pods if _predictor_of(p) == predictor.name]
        predictors.append(
            _predictor_status(
                spec,  # type: ignore[arg-type]
                predictor,
                PredictorPhase.FAILED if message else PredictorPhase.STOPPED,
                message,
                len(mine),
                0,
            )
        )
    if message:
        return Outcome(Phase.FAILED, message, left, 0, statuses, predictors)
    return Outcome(stopped_phase(left), "", left, 0, statuses, predictors)


# ---- one deployment of several predictors -----------------------------------------------


def _predictor_of(pod: dict[str, Any]) -> str:
    return (pod["metadata"].get("labels") or {}).get(LABEL_PREDICTOR, "")


def _predictor_status(
    spec: DeploymentSpec,
    predictor: Predictor,
    phase: PredictorPhase,
    message: str,
    replicas: int,
    available: int,
) -> dict[str, Any]:
    return {
        "name": predictor.name,
        "traffic": spec.weights().get(predictor.name, 0),
        "shadow": predictor.shadow,
        "replicas": replicas,
        "availableReplicas": available,
        "phase": phase.value,
        "message": message,
    }


_AS_PREDICTOR = {
    Phase.DEPLOYED: PredictorPhase.DEPLOYED,
    Phase.DEPLOYING: PredictorPhase.DEPLOYING,
    Phase.FAILED: PredictorPhase.FAILED,
}


def predictor_phase(
    predictor: Predictor, obs: Observation, outcome: Outcome, previous: str = ""
) -> tuple[PredictorPhase, str]:
    """A predictor's phase: the rollout's, or ScaledToZero / WakingUp for one at zero by policy.

    At zero: its autoscaler (KEDA) set the Deployment to 0 replicas and no pod is left.
    Waking up: it was at zero (`previous`), the scaler raised the count on a request, and no
    replica is ready yet; the interceptor holds the requests meanwhile.
    """
    if predictor.idle_seconds is None or obs.deployment is None:
        return _AS_PREDICTOR[outcome.phase], outcome.message
    desired = int((obs.deployment.get("spec") or {}).get("replicas") or 0)
    pods = [p for p in obs.pods if not _terminating(p)]
    if desired == 0 and not pods:
        return (
            PredictorPhase.SCALED_TO_ZERO,
            f"no replica after {predictor.idle_seconds} s without requests; the next request "
            "wakes it",
        )
    ready = sum(1 for p in pods if pod_ready(p))
    dormant = previous in (PredictorPhase.SCALED_TO_ZERO.value, PredictorPhase.WAKING_UP.value)
    if desired > 0 and ready == 0 and dormant and outcome.phase != Phase.FAILED:
        return (
            PredictorPhase.WAKING_UP,
            f"waking up: {len(pods) or desired} replica(s) starting; requests are held",
        )
    return _AS_PREDICTOR[outcome.phase], outcome.message


def deployment_outcome(
    spec: DeploymentSpec,
    parts: list[tuple[Predictor, Outcome, PredictorPhase, str]],
) -> Outcome:
    """One deployment's outcome from its predictors' (in spec order).

    Failed when a predictor failed; Deploying while a predictor with traffic is not ready;
    else Deployed (a predictor at zero or waking counts as ready: that is its policy).
    With one predictor its outcome is the deployment's, message and all.
    """
    if len(parts) == 1:
        predictor, outcome, phase, message = parts[0]
        deployment_phase = outcome.phase
        if phase in (PredictorPhase.SCALED_TO_ZERO, PredictorPhase.WAKING_UP):
            deployment_phase = Phase.DEPLOYED
        text = message if deployment_phase != Phase.DEPLOYED else ""
    else:
        weights = spec.weights()
        failed = [(p, m) for p, _, ph, m in parts if ph == PredictorPhase.FAILED]
        waiting = [
            (p, m)
            for p, _, ph, m in parts
            if ph == PredictorPhase.DEPLOYING and weights.get(p.name, 0) > 0
        ]
        if failed:
            deployment_phase, (who, why) = Phase.FAILED, failed[0]
        elif waiting:
            deployment_phase, (who, why) = Phase.DEPLOYING, waiting[0]
        else:
            deployment_phase, who, why = Phase.DEPLOYED, None, ""
        text = f"predictor {who.name}: {why}" if who is not None else ""
    replica_statuses: list[dict[str, Any]] = []
    predictors: list[dict[str, Any]] = []
    for predictor, outcome, phase, message in parts:
        for status in outcome.replica_statuses:
            status["predictor"] = predictor.name
        replica_statuses += outcome.replica_statuses
        predictors.append(
            _predictor_status(spec, predictor, phase, message, outcome.replicas, outcome.available)
        )
    return Outcome(
        deployment_phase,
        text,
        sum(o.replicas for _, o, _, _ in parts),
        sum(o.available for _, o, _, _ in parts),
        replica_statuses,
        predictors,
    )


def _ordered(pods: list[dict[str, Any]], current: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Current-template pods first, then the old ones, each by name."""
    return sorted(pods, key=lambda p: (p not in current, p["metadata"]["name"]))


def _memory_limit(deployment: dict[str, Any]) -> str | None:
    template = deployment.get("spec", {}).get("template", {}).get("spec", {})
    for container in template.get("containers", []):
        if container.get("name") == MODEL_CONTAINER:
            return (container.get("resources") or {}).get("limits", {}).get("memory")
    return None
