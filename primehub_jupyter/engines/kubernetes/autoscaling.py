"""Pure functions: the autoscaler of each autoscaled predictor (an HPA, or KEDA for zero).

- `minReplicas >= 1`: an autoscaling/v2 HorizontalPodAutoscaler. With metric "concurrency"
  (the default) it is a Pods metric of in-flight requests per pod, averaged to
  `targetConcurrency`: prometheus-adapter serves it from the model server's request-duration
  histogram (Little's law: in-flight = rate of the seconds' sum; rule in docs/kubernetes.md).
  With metric "cpu" it is CPU utilization (no adapter needed, but blind to I/O-bound models).
- `minReplicas: 0`: the KEDA HTTP add-on (http.keda.sh/v1alpha1 HTTPScaledObject) counts and
  holds requests in its interceptor while pods start, and scales on concurrency; we create the
  KEDA ScaledObject (keda.sh/v1alpha1) ourselves, with the add-on's external-push trigger, and
  tell the add-on not to (annotation `httpscaledobject.keda.sh/skip-scaledobject-creation`,
  operator/controllers/http/app.go of kedacore/http-add-on), so it is ours: owned,
  labelled, garbage-collected with the PhDeployment.
"""

from __future__ import annotations

from typing import Any

from ...core.models import DeploymentSpec, Predictor
from .resources import child_name, meta, with_applied_hash
from .routing import wake_host
from .settings import MODEL_PORT, OperatorSettings

SKIP_SCALEDOBJECT = "httpscaledobject.keda.sh/skip-scaledobject-creation"
# How often KEDA polls (seconds); the add-on's own ScaledObjects use 15 too.
POLLING_SECONDS = 15
# A stable window before scaling down, as the local autoscaler waits (HPA's default is 300 s).
SCALE_DOWN_WINDOW = 120


def _target(deployment: str) -> dict[str, str]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment}


def hpa_manifest(
    cr: dict[str, Any], spec: DeploymentSpec, predictor: Predictor, settings: OperatorSettings
) -> dict[str, Any]:
    """The HorizontalPodAutoscaler of a predictor with minReplicas >= 1."""
    name = child_name(cr["metadata"]["name"], predictor.name)
    scaling = settings.autoscaling
    if scaling.metric == "cpu":
        metric: dict[str, Any] = {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": scaling.cpu_utilization},
            },
        }
    else:
        metric = {
            "type": "Pods",
            "pods": {
                "metric": {"name": scaling.concurrency_metric},
                "target": {
                    "type": "AverageValue",
                    "averageValue": str(predictor.concurrency_target),
                },
            },
        }
    manifest = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(cr, name, spec.group_name, predictor.name),
        "spec": {
            "scaleTargetRef": _target(name),
            "minReplicas": predictor.lowest,
            "maxReplicas": predictor.highest,
            "metrics": [metric],
            "behavior": {
                "scaleDown": {"stabilizationWindowSeconds": SCALE_DOWN_WINDOW},
            },
        },
    }
    return with_applied_hash(manifest)


def http_scaled_object_manifest(
    cr: dict[str, Any], spec: DeploymentSpec, predictor: Predictor, settings: OperatorSettings
) -> dict[str, Any]:
    """The HTTPScaledObject that holds a predictor's requests while it wakes from zero."""
    name = child_name(cr["metadata"]["name"], predictor.name)
    manifest = {
        "apiVersion": "http.keda.sh/v1alpha1",
        "kind": "HTTPScaledObject",
        "metadata": meta(
            cr, name, spec.group_name, predictor.name, annotations={SKIP_SCALEDOBJECT: "true"}
        ),
        "spec": {
            "hosts": [wake_host(cr, predictor)],
            "scaleTargetRef": {**_target(name), "service": name, "port": MODEL_PORT},
            "replicas": {"min": 0, "max": predictor.highest},
            "scaledownPeriod": predictor.idle_seconds,
            "scalingMetric": {"concurrency": {"targetValue": predictor.concurrency_target}},
            "timeouts": {"conditionWait": settings.autoscaling.wake_timeout},
        },
    }
    return with_applied_hash(manifest)


def scaled_object_manifest(
    cr: dict[str, Any], spec: DeploymentSpec, predictor: Predictor, settings: OperatorSettings
) -> dict[str, Any]:
    """The KEDA ScaledObject scaling a predictor between 0 and maxReplicas."""
    name = child_name(cr["metadata"]["name"], predictor.name)
    manifest = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": meta(cr, name, spec.group_name, predictor.name),
        "spec": {
            "scaleTargetRef": _target(name),
            "minReplicaCount": 0,
            "maxReplicaCount": predictor.highest,
            "cooldownPeriod": predictor.idle_seconds,
            "pollingInterval": POLLING_SECONDS,
            "triggers": [
                {
                    "type": "external-push",
                    "metadata": {
                        "scalerAddress": settings.autoscaling.external_scaler,
                        "httpScaledObject": name,
                    },
                }
            ],
        },
    }
    return with_applied_hash(manifest)


def autoscaler_manifests(
    cr: dict[str, Any], spec: DeploymentSpec, predictor: Predictor, settings: OperatorSettings
) -> list[dict[str, Any]]:
    """What scales one predictor: [] (fixed replicas), an HPA, or KEDA's two objects."""
    if not predictor.autoscaled:
        return []
    if predictor.idle_seconds is None:
        return [hpa_manifest(cr, spec, predictor, settings)]
    return [
        http_scaled_object_manifest(cr, spec, predictor, settings),
        scaled_object_manifest(cr, spec, predictor, settings),
    ]
