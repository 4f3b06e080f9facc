"""Pure functions: the Deployment and Service of each predictor, and the clients Secret."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ...core.config import InstanceType
from ...core.models import DeploymentSpec, Predictor
from .crd import (
    ANNOTATION_APPLIED,
    API_VERSION,
    APP,
    KIND,
    LABEL_APP,
    LABEL_GROUP,
    LABEL_ID,
    LABEL_PREDICTOR,
)
from .settings import MODEL_PORT, OperatorSettings

MODEL_CONTAINER = "model"
INITIALIZER_CONTAINER = "model-initializer"
MODEL_DIR = "/mnt/models"
SOURCE_DIR = "/mnt/source"
TERMINATION_LOG = "/dev/termination-log"
#: The writable scratch directory of every container (an emptyDir: the root is read-only).
TMP_DIR = "/tmp"
PORT_NAME = "http"
HEALTH_PATH = "/health/ping"
PREDICT_PATH = "api/v1.0/predictions"
SUPPORTED_SCHEMES = ("pvc://", "http://", "https://", "s3://", "models:/", "file://", "/")
_LABEL_VALUE = re.compile(r"[^-_.a-zA-Z0-9]+")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class ModelURIError(ValueError):
    """The modelURI cannot be fetched in the cluster; the message says what to do."""


# ---- names, labels, ownership ---------------------------------------------------------


def label_value(text: str) -> str:
    """`text` as a valid label value (at most 63 characters, alphanumeric at both ends)."""
    value = _LABEL_VALUE.sub("-", text)[:63]
    return re.sub(r"^[^a-zA-Z0-9]+|[^a-zA-Z0-9]+$", "", value)


def selector_labels(deployment_id: str, predictor: str | None = None) -> dict[str, str]:
    """The labels selecting a deployment's pods, or one predictor's (fixed after create)."""
    selected = {LABEL_APP: APP, LABEL_ID: deployment_id}
    if predictor is not None:
        selected[LABEL_PREDICTOR] = label_value(predictor)
    return selected


def labels(deployment_id: str, group: str, predictor: str | None = None) -> dict[str, str]:
    """The labels on every object made for a deployment (and the predictor it is for)."""
    return {**selector_labels(deployment_id, predictor), LABEL_GROUP: label_value(group)}


_CHILD_NAME = re.compile(r"[^a-z0-9-]+")


def child_name(deployment_id: str, predictor: str, suffix: str = "") -> str:
    """`<id>-<predictor>[-suffix]`: the name of a predictor's objects, a DNS-1035 label.

    Deterministic and at most 63 characters (a Service name's limit). A predictor name that
    is not a DNS label as is (upper case, '_' or '.'), or too long, is shortened and
    followed by a hash of the original, so two predictors never share a name.
    """
    tail = f"-{suffix}" if suffix else ""
    plain = _CHILD_NAME.sub("-", predictor.lower()).strip("-")
    name = f"{deployment_id}-{plain}{tail}"
    if plain == predictor and len(name) <= 63:
        return name
    digest = hashlib.sha256(f"{deployment_id}/{predictor}".encode()).hexdigest()[:8]
    head = f"{deployment_id}-{plain}"[: 63 - len(tail) - 9].rstrip("-")
    return f"{head}-{digest}{tail}"


def owner_reference(cr: dict[str, Any]) -> dict[str, Any]:
    """Makes a child garbage-collected with its PhDeployment."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": cr["metadata"]["name"],
        "uid": cr["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def meta(
    cr: dict[str, Any], name: str, group: str, predictor: str | None = None, **extra: Any
) -> dict[str, Any]:
    """metadata of a child: name, namespace, our labels, the PhDeployment as its owner."""
    deployment_id = cr["metadata"]["name"]
    result: dict[str, Any] = {
        "name": name,
        "namespace": cr["metadata"].get("namespace"),
        "labels": labels(deployment_id, group, predictor),
        "ownerReferences": [owner_reference(cr)],
    }
    result.update(extra)
    if result["namespace"] is None:
        del result["namespace"]
    return result


def clients_secret_name(deployment_id: str) -> str:
    """The Secret of a deployment's client hashes (nginx basic auth, auth-map format)."""
    return f"{deployment_id}-clients"


def applied_hash(manifest: dict[str, Any]) -> str:
    """A stable hash of what we asked for; compared instead of the live object."""
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def with_applied_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest annotated with its own hash."""
    digest = applied_hash(manifest)
    annotations = manifest["metadata"].setdefault("annotations", {})
    annotations[ANNOTATION_APPLIED] = digest
    return manifest


def endpoint_url(deployment_id: str, settings: OperatorSettings) -> str | None:
    """The public prediction URL, when the ingress base URL (or host) is known."""
    base = settings.ingress.base_url.rstrip("/")
    if not base and settings.ingress.host:
        scheme = "https" if settings.ingress.tls_secret_name else "http"
        base = f"{scheme}://{settings.ingress.host}"
    if not base:
        return None
    return f"{base}/deployment/{deployment_id}/{PREDICT_PATH}"


# ---- quantities ------------------------------------------------------------------------


def cpu_quantity(cores: float) -> str:
    """Cores as a Kubernetes quantity: 2 -> '2', 0.5 -> '500m'."""
    if float(cores).is_integer():
        return str(int(cores))
    return f"{round(cores * 1000)}m"


def memory_quantity(value: float) -> str:
    """Bytes as the shortest exact binary quantity: 1073741824 -> '1Gi'."""
    number = int(value)
    for unit, factor in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if number >= factor and number % factor == 0:
            return f"{number // factor}{unit}"
    return str(number)


def resources(instance: InstanceType) -> dict[str, Any]:
    """Requests equal limits: a replica gets exactly its instance type (Guaranteed QoS)."""
    amounts = {"cpu": cpu_quantity(instance.cpu), "memory": memory_quantity(instance.memory)}
    if instance.gpu:
        amounts["nvidia.com/gpu"] = str(instance.gpu)
    return {"requests": dict(amounts), "limits": dict(amounts)}


# ---- the model source ----------------------------------------------------------------


@dataclass
class ModelSource:
    """How the init container reaches a modelURI: the URI it fetches and what it mounts."""

    uri: str
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)


def _claim_source(claim: str, path: str) -> ModelSource:
    if not _DNS1123.match(claim) or len(claim) > 253:
        raise ModelURIError(
            f"model URI cannot be fetched: '{claim}' is not a valid PersistentVolumeClaim name"
        )
    path = path.strip("/")
    return ModelSource(
        uri=f"file://{SOURCE_DIR}/{path}" if path else f"file://{SOURCE_DIR}",
        volumes=[
            {
                "name": "model-source",
                "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
            }
        ],
        mounts=[{"name": "model-source", "mountPath": SOURCE_DIR, "readOnly": True}],
    )


def model_source(
    spec: DeploymentSpec, settings: OperatorSettings, predictor: Predictor | None = None
) -> ModelSource:
    """Where the init container fetches a predictor's bundle from; ModelURIError when it cannot."""
    uri = (predictor or spec.predictor).model_uri or ""
    if uri.startswith("pvc://"):
        claim, _, path = uri[len("pvc://") :].partition("/")
        return _claim_source(claim, path)
    if uri.startswith(("http://", "https://", "s3://", "models:/")):
        parsed = urlsplit(uri)
        if uri.startswith("models:/"):
            parts = [p for p in uri[len("models:/") :].split("/") if p]
            if len(parts) != 2:
                raise ModelURIError(
                    f"model URI cannot be fetched: '{uri}' is not models:/<name>/<version> "
                    "(or models:/<name>/<stage>)"
                )
        elif not parsed.netloc:
            raise ModelURIError(f"model URI cannot be fetched: '{uri}' has no host or bucket")
        return ModelSource(uri=uri)
    if uri.startswith("file://") or uri.startswith("/"):
        path = uri[len("file://") :] if uri.startswith("file://") else uri
        volumes = sorted(settings.model_volumes, key=lambda v: len(v.prefix), reverse=True)
        for volume in volumes:
            prefix = volume.prefix.rstrip("/")
            if path == prefix or path.startswith(prefix + "/"):
                claim = volume.claim_name.format(
                    user=label_value(spec.user_name).lower(), group=label_value(spec.group_name)
                )
                rest = path[len(prefix) :].strip("/")
                inside = "/".join(p for p in (volume.sub_path.strip("/"), rest) if p)
                return _claim_source(claim, inside)
        known = ", ".join(v.prefix for v in volumes) or "none configured"
        raise ModelURIError(
            f"model URI cannot be fetched: the path {path} is not on a volume the cluster "
            f"mounts (model volumes: {known}); use pvc://<claim>/<path>, http(s)://, s3:// "
            "or models:/<name>/<version>, or ask your administrator to add a modelVolume"
        )
    scheme = uri.split(":", 1)[0] if ":" in uri else uri
    raise ModelURIError(
        f"model URI cannot be fetched: the scheme of '{scheme}' is not supported; use "
        "pvc://, http(s)://, s3://, models:/ (MLflow) or an absolute path on a model volume"
    )


def model_uri_problems(spec: DeploymentSpec) -> list[dict[str, str]]:
    """[{field, message}] for a modelURI the cluster cannot fetch (the first one found)."""
    for index, predictor in enumerate(spec.predictors):
        uri = predictor.model_uri
        if predictor.model_image or not uri or uri.startswith(SUPPORTED_SCHEMES):
            continue
        message = (
            f"model URI '{uri}' cannot be used on Kubernetes: use pvc://<claim>/<path>, "
            "http(s)://, s3://, models:/<name>/<version> (MLflow) or an absolute path on a "
            "volume the cluster mounts (see docs/kubernetes.md)"
        )
        return [{"field": f"spec.predictors.{index}.modelURI", "message": message}]
    return []


# ---- the Deployment --------------------------------------------------------------------


def _probe(path: str, period: int, failures: int, timeout: int = 5) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def model_env(
    cr: dict[str, Any],
    spec: DeploymentSpec,
    instance: InstanceType,
    predictor: Predictor | None = None,
) -> list[dict[str, Any]]:
    """The model container's environment: ours first, the user's last (theirs win).

    PREDICTIVE_UNIT_ID names the predictor: our model server puts it in every answer's
    X-PrimeHub-Predictor header (and in its metrics' predictor_name label).
    """
    predictor = predictor or spec.predictor
    deployment_id = cr["metadata"]["name"]
    threads = str(max(1, int(instance.cpu)))
    ours: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "PRIMEHUB_DEPLOYMENT_ID", "value": deployment_id},
        {"name": "PRIMEHUB_REPLICA", "value": "$(POD_NAME)"},
        {"name": "SELDON_DEPLOYMENT_ID", "value": deployment_id},
        {"name": "PREDICTIVE_UNIT_ID", "value": predictor.name},
        {"name": "PREDICTIVE_UNIT_SERVICE_PORT", "value": str(MODEL_PORT)},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "OMP_NUM_THREADS", "value": threads},
        {"name": "OPENBLAS_NUM_THREADS", "value": threads},
        {"name": "MKL_NUM_THREADS", "value": threads},
    ]
    if not predictor.model_image:  # our model-server image
        ours.append(_HOME)
    if predictor.metadata:
        ours.append(
            {
                "name": "PRIMEHUB_MODEL_METADATA",
                "value": json.dumps(predictor.metadata, sort_keys=True),
            }
        )
    user = [{"name": e.name, "value": e.value} for e in spec.env]
    names = {e["name"] for e in user}
    return [e for e in ours if e["name"] not in names] + user


def container_security_context(settings: OperatorSettings) -> dict[str, Any]:
    """What every container of a model pod may do: nothing beyond running as its user."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": settings.pod_security.read_only_root_filesystem,
        "runAsNonRoot": True,
    }


def pod_security_context(settings: OperatorSettings) -> dict[str, Any]:
    """A non-root user for the whole pod, its group on the volumes, the runtime's seccomp."""
    security = settings.pod_security
    return {
        "runAsNonRoot": True,
        "runAsUser": security.run_as_user,
        "runAsGroup": security.run_as_group,
        "fsGroup": security.fs_group,
        # Only the volume's root is checked: no recursive chown of a large model volume.
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


_TMP_VOLUME = {"name": "tmp", "emptyDir": {}}
_TMP_MOUNT = {"name": "tmp", "mountPath": TMP_DIR}
# Our images' user has its home in the read-only image; caches and configs go to /tmp.
_HOME = {"name": "HOME", "value": TMP_DIR}


def _initializer(
    spec: DeploymentSpec, source: ModelSource, instance: InstanceType, settings: OperatorSettings
) -> dict[str, Any]:
    env: list[dict[str, Any]] = [_HOME]
    if settings.mlflow_tracking_uri:
        env.append({"name": "MLFLOW_TRACKING_URI", "value": settings.mlflow_tracking_uri})
    user = [{"name": e.name, "value": e.value} for e in spec.env]
    names = {e["name"] for e in user}
    env = [e for e in env if e["name"] not in names] + user
    container: dict[str, Any] = {
        "name": INITIALIZER_CONTAINER,
        "image": settings.initializer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["python", "-m", "primehub_jupyter.engines.kubernetes.fetch"],
        "args": ["--termination-log", TERMINATION_LOG, source.uri, MODEL_DIR],
        "env": env,
        "resources": resources(instance),
        "volumeMounts": [
            {"name": "model-store", "mountPath": MODEL_DIR},
            _TMP_MOUNT,
            *source.mounts,
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security_context(settings),
    }
    if settings.storage_secret:
        container["envFrom"] = [{"secretRef": {"name": settings.storage_secret, "optional": True}}]
    return container


def deployment_manifest(
    cr: dict[str, Any],
    spec: DeploymentSpec,
    instance: InstanceType,
    settings: OperatorSettings,
    *,
    replicas: int,
    deploy_timeout: float,
    predictor: Predictor | None = None,
) -> dict[str, Any]:
    """The apps/v1 Deployment that runs one predictor (ModelURIError for an unusable URI).

    `replicas` is the count to create with; for an autoscaled predictor the autoscaler owns
    it afterwards (children.apply keeps the live count on a replace).
    """
    deployment_id = cr["metadata"]["name"]
    predictor = predictor or spec.predictor
    pod_labels = labels(deployment_id, spec.group_name, predictor.name)
    container: dict[str, Any] = {
        "name": MODEL_CONTAINER,
        "imagePullPolicy": settings.image_pull_policy,
        "ports": [{"name": PORT_NAME, "containerPort": MODEL_PORT, "protocol": "TCP"}],
        "env": model_env(cr, spec, instance, predictor),
        "resources": resources(instance),
        # The model loads before the server answers: the startup probe gives it the whole
        # deploy timeout; liveness only starts after that, so a slow load is never killed.
        "startupProbe": _probe(HEALTH_PATH, 5, max(1, int(deploy_timeout // 5))),
        "readinessProbe": _probe(HEALTH_PATH, 5, 3),
        "livenessProbe": _probe(HEALTH_PATH, 10, 6),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security_context(settings),
        "volumeMounts": [_TMP_MOUNT],
    }
    pod_spec: dict[str, Any] = {
        "containers": [container],
        # User model code must not reach the Kubernetes API with the pod's identity.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(settings),
        "terminationGracePeriodSeconds": 30,
        "volumes": [_TMP_VOLUME],
    }
    if predictor.model_image:
        container["image"] = predictor.model_image
    else:
        source = model_source(spec, settings, predictor)
        container["image"] = settings.model_server_image
        container["command"] = ["primehub-deploy", "model-server"]
        container["args"] = [
            MODEL_DIR,
            "--host",
            "0.0.0.0",  # the server's default is loopback: probes and the Service need more
            "--port",
            str(MODEL_PORT),
            "--predictor",
            predictor.name,
            "--termination-log",
            TERMINATION_LOG,
            "--deployment",
            deployment_id,
            "--replica",
            "$(POD_NAME)",
        ]
        container["volumeMounts"] = [{"name": "model-store", "mountPath": MODEL_DIR}, _TMP_MOUNT]
        pod_spec["initContainers"] = [_initializer(spec, source, instance, settings)]
        pod_spec["volumes"] = [
            {"name": "model-store", "emptyDir": {}},
            _TMP_VOLUME,
            *source.volumes,
        ]
    if predictor.image_pull_secret:
        pod_spec["imagePullSecrets"] = [{"name": predictor.image_pull_secret}]
    if instance.node_selector:
        pod_spec["nodeSelector"] = dict(instance.node_selector)
    if instance.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in instance.tolerations]
    if settings.service_account_name:
        pod_spec["serviceAccountName"] = settings.service_account_name
    pod_annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(MODEL_PORT),
        "prometheus.io/path": "/metrics",
        **settings.pod_annotations,
    }
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(
            cr, child_name(deployment_id, predictor.name), spec.group_name, predictor.name
        ),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": settings.revision_history_limit,
            "progressDeadlineSeconds": max(1, int(deploy_timeout)),
            "selector": {"matchLabels": selector_labels(deployment_id, predictor.name)},
            "strategy": {
                "type": "RollingUpdate",
                # Never fewer ready replicas than asked for: a new one must be ready first.
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": pod_spec,
            },
        },
    }
    return with_applied_hash(manifest)


# ---- Service, Secret ---------------------------------------------------------------------


def service_manifest(
    cr: dict[str, Any], spec: DeploymentSpec, predictor: Predictor | None = None
) -> dict[str, Any]:
    """A ClusterIP Service in front of one predictor's ready replicas."""
    deployment_id = cr["metadata"]["name"]
    predictor = predictor or spec.predictor
    manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(
            cr, child_name(deployment_id, predictor.name), spec.group_name, predictor.name
        ),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(deployment_id, predictor.name),
            "ports": [
                {"name": PORT_NAME, "port": MODEL_PORT, "targetPort": PORT_NAME, "protocol": "TCP"}
            ],
        },
    }
    return with_applied_hash(manifest)


def nginx_hash(bcrypt_hash: str) -> str:
    """A bcrypt hash in the form every nginx crypt() accepts.

    nginx checks basic auth with the C library's crypt(): musl (the ingress-nginx image) and
    libxcrypt accept `$2y$`, and older crypt_blowfish builds know `$2a$`/`$2y$` but not `$2b$`.
    `$2b$` and `$2y$` are the same algorithm (both fixed the old wrap-around bug), so renaming
    the prefix keeps the hash valid everywhere.
    """
    if bcrypt_hash.startswith("$2b$"):
        return "$2y$" + bcrypt_hash[4:]
    return bcrypt_hash


def encode_secret_value(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def clients_secret_manifest(
    cr: dict[str, Any], group: str, hashes: dict[str, str] | None = None
) -> dict[str, Any]:
    """The Secret of client hashes: one key per client name, its bcrypt hash as the value."""
    deployment_id = cr["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": meta(cr, clients_secret_name(deployment_id), group),
        "data": {name: encode_secret_value(nginx_hash(h)) for name, h in (hashes or {}).items()},
    }
