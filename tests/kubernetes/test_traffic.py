"""Traffic and scale on Kubernetes: per-predictor children, canary/mirror routes, HPA and KEDA."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from primehub_jupyter.core.config import InstanceType
from primehub_jupyter.core.errors import ValidationError
from primehub_jupyter.core.models import DeploymentSpec, Phase, PredictorPhase
from primehub_jupyter.engines.kubernetes import autoscaling, phases, resources, routing
from primehub_jupyter.engines.kubernetes.engine import KubernetesEngine
from primehub_jupyter.engines.kubernetes.settings import OperatorSettings

from .test_manifests import CR, validate_k8s
from .validation import SCHEMAS, crd_problems

NGINX = "nginx.ingress.kubernetes.io"
CPU = InstanceType.model_validate({"name": "cpu-1", "cpu": 1, "memory": "2Gi"})
SETTINGS = OperatorSettings.model_validate(
    {
        "modelServerImage": "ghcr.io/primehub-io/primehub-model-server:0.1.0",
        "ingress": {"host": "models.example.com", "tlsSecretName": "models-tls"},
    }
)
GATEWAY = SETTINGS.model_copy(
    update={
        "router": "gateway-api",
        "gateway": SETTINGS.gateway.model_validate(
            {"parentRefs": [{"name": "models", "namespace": "gateway-system"}]}
        ),
    }
)
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def spec(*predictors: dict[str, Any], **top: Any) -> DeploymentSpec:
    return DeploymentSpec.model_validate(
        {
            "displayName": "Iris",
            "groupName": "Data_Science",
            "userName": "alice",
            **top,
            "predictors": [
                {"instanceType": "cpu-1", "modelImage": f"iris:{i}", **p}
                for i, p in enumerate(predictors, 1)
            ],
        }
    )


CANARY = spec({"name": "v1", "traffic": 90}, {"name": "v2", "traffic": 10})
SHADOW = spec({"name": "v1"}, {"name": "v2", "shadow": True})
HPA = spec({"name": "v1", "minReplicas": 1, "maxReplicas": 4, "targetConcurrency": 6})
KEDA = spec({"name": "v1", "minReplicas": 0, "maxReplicas": 3, "scaleToZeroAfterSeconds": 60})
FOUR = spec(
    {"name": "a", "traffic": 40},
    {"name": "b", "traffic": 30},
    {"name": "c", "traffic": 30, "minReplicas": 0, "maxReplicas": 2},
    {"name": "d", "shadow": True},
)


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.json").read_text())["openAPIV3Schema"]


def validate(obj: dict[str, Any]) -> None:
    """Kubernetes' schemas for core kinds, the vendored CRD schemas for the others."""
    vendored = {
        "ScaledObject": "keda.sh_scaledobjects",
        "HTTPScaledObject": "http.keda.sh_httpscaledobjects",
        "HTTPRoute": "gateway.networking.k8s.io_httproutes",
    }
    if obj["kind"] in vendored:
        problems = crd_problems(obj, schema(vendored[obj["kind"]]))
        assert not problems, f"{obj['kind']} {obj['metadata']['name']}: {problems}"
    else:
        validate_k8s(obj)


def everything(deployment_spec: DeploymentSpec, settings: OperatorSettings) -> list[dict]:
    """What the operator applies for a spec (reconciler._desired without a cluster)."""
    objects: list[dict[str, Any]] = []
    for predictor in deployment_spec.predictors:
        objects.append(
            resources.deployment_manifest(
                CR,
                deployment_spec,
                CPU,
                settings,
                replicas=predictor.replicas or max(predictor.lowest, 1),
                deploy_timeout=300,
                predictor=predictor,
            )
        )
        objects.append(resources.service_manifest(CR, deployment_spec, predictor))
        if predictor.idle_seconds is not None:
            objects.append(routing.wake_service_manifest(CR, deployment_spec, predictor, settings))
        objects += autoscaling.autoscaler_manifests(CR, deployment_spec, predictor, settings)
    if settings.router == "gateway-api":
        objects.append(routing.httproute_manifest(CR, deployment_spec, settings))
    else:
        objects += routing.ingress_manifests(CR, deployment_spec, settings)
    return objects


@pytest.mark.parametrize(
    ("case", "settings"),
    [
        (spec({"name": "v1"}), SETTINGS),
        (CANARY, SETTINGS),
        (SHADOW, SETTINGS),
        (HPA, SETTINGS),
        (
            HPA,
            SETTINGS.model_copy(
                update={"autoscaling": SETTINGS.autoscaling.model_copy(update={"metric": "cpu"})}
            ),
        ),
        (KEDA, SETTINGS),
        (FOUR, GATEWAY),
    ],
    ids=["one", "canary", "shadow", "hpa", "hpa-cpu", "keda", "gateway"],
)
def test_every_generated_object_validates(case, settings):
    objects = everything(case, settings)
    for obj in objects:
        validate(obj)
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names)), names
    for predictor in case.predictors:
        name = resources.child_name("iris", predictor.name)
        deployment = next(
            o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name
        )
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["primehub.io/predictor"] == predictor.name
        assert deployment["spec"]["selector"]["matchLabels"]["primehub.io/predictor"] == (
            predictor.name
        )
        env = {
            e["name"]: e.get("value")
            for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["PREDICTIVE_UNIT_ID"] == predictor.name  # the X-PrimeHub-Predictor header


def test_canary_ingress_takes_the_weight_of_the_second_predictor():
    main, canary = routing.ingress_manifests(CR, CANARY, SETTINGS)
    assert main["metadata"]["name"] == "iris"
    assert main["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "iris-v1"
    assert f"{NGINX}/canary" not in main["metadata"]["annotations"]
    assert canary["metadata"]["name"] == "iris-v2"
    assert canary["metadata"]["annotations"] == {
        f"{NGINX}/canary": "true",
        f"{NGINX}/canary-weight": "10",
        "primehub.io/applied-hash": canary["metadata"]["annotations"]["primehub.io/applied-hash"],
    }
    # Same host and path as the main Ingress: that is what makes it its canary.
    assert canary["spec"]["rules"][0]["host"] == main["spec"]["rules"][0]["host"]
    assert (
        canary["spec"]["rules"][0]["http"]["paths"][0]["path"]
        == main["spec"]["rules"][0]["http"]["paths"][0]["path"]
    )
    service = canary["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert service == {"name": "iris-v2", "port": {"name": "http"}}


def test_a_weight_change_touches_only_the_canary_annotations():
    before = {(o["kind"], o["metadata"]["name"]): o for o in everything(CANARY, SETTINGS)}
    even = spec({"name": "v1", "traffic": 50}, {"name": "v2", "traffic": 50})
    after = {(o["kind"], o["metadata"]["name"]): o for o in everything(even, SETTINGS)}
    assert before.keys() == after.keys()
    changed = [key for key in before if before[key] != after[key]]
    assert changed == [("Ingress", "iris-v2")]
    old, new = before[changed[0]], after[changed[0]]
    assert old["spec"] == new["spec"]
    assert new["metadata"]["annotations"][f"{NGINX}/canary-weight"] == "50"


def test_shadow_is_mirrored_through_its_own_ingress():
    main, shadow = routing.ingress_manifests(CR, SHADOW, SETTINGS)
    annotations = main["metadata"]["annotations"]
    assert annotations[f"{NGINX}/mirror-target"] == (
        "http://ingress-nginx-controller.ingress-nginx.svc.cluster.local$request_uri"
    )
    host = annotations[f"{NGINX}/mirror-host"]
    assert shadow["spec"]["rules"][0]["host"] == host
    path = shadow["spec"]["rules"][0]["http"]["paths"][0]
    assert path["path"] == "/deployment/iris(/|$)(.*)"  # the same rewrite as the main Ingress
    assert path["backend"]["service"]["name"] == "iris-v2"
    assert shadow["metadata"]["annotations"][f"{NGINX}/rewrite-target"] == "/$2"
    assert "tls" not in shadow["spec"]  # an in-cluster host only


def test_private_shadow_ingress_asks_for_the_same_clients():
    private = spec(
        {"name": "v1"}, {"name": "v2", "shadow": True}, endpoint={"accessType": "private"}
    )
    _, shadow = routing.ingress_manifests(CR, private, SETTINGS)
    assert shadow["metadata"]["annotations"][f"{NGINX}/auth-secret"] == "iris-clients"


def test_hpa_scales_on_in_flight_requests_per_pod():
    (hpa,) = autoscaling.autoscaler_manifests(CR, HPA, HPA.predictor, SETTINGS)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "iris-v1",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "primehub_inflight_requests"
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "6"}


def test_keda_holds_requests_for_a_predictor_at_zero():
    http, scaled = autoscaling.autoscaler_manifests(CR, KEDA, KEDA.predictor, SETTINGS)
    assert http["metadata"]["annotations"][autoscaling.SKIP_SCALEDOBJECT] == "true"
    assert http["spec"]["scaleTargetRef"]["service"] == "iris-v1"
    assert http["spec"]["scaleTargetRef"]["port"] == 9000
    assert http["spec"]["replicas"] == {"min": 0, "max": 3}
    assert http["spec"]["scaledownPeriod"] == 60
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "external-push"
    assert trigger["metadata"]["httpScaledObject"] == http["metadata"]["name"]
    assert scaled["spec"]["minReplicaCount"] == 0 and scaled["spec"]["cooldownPeriod"] == 60
    # The route sends the predictor's requests to the interceptor, with the Host it knows.
    (main,) = routing.ingress_manifests(CR, KEDA, SETTINGS)
    backend = main["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "iris-v1-wake", "port": {"number": 8080}}
    assert main["metadata"]["annotations"][f"{NGINX}/upstream-vhost"] == http["spec"]["hosts"][0]
    wake = routing.wake_service_manifest(CR, KEDA, KEDA.predictor, SETTINGS)
    assert wake["spec"]["externalName"] == (
        "keda-add-ons-http-interceptor-proxy.keda.svc.cluster.local"
    )
    # The CEL rules of the vendored schemas that these objects meet are checked too.
    assert crd_problems(
        {**scaled, "spec": {**scaled["spec"], "minReplicaCount": 5}},
        schema("keda.sh_scaledobjects"),
    )


def test_httproute_splits_by_weight_and_mirrors_the_shadow():
    route = routing.httproute_manifest(CR, FOUR, GATEWAY)
    (rule,) = route["spec"]["rules"]
    assert [(r["name"], r["weight"]) for r in rule["backendRefs"]] == [
        ("iris-a", 40),
        ("iris-b", 30),
        ("iris-c-wake", 30),
    ]
    mirror = next(f for f in rule["filters"] if f["type"] == "RequestMirror")
    assert mirror["requestMirror"]["backendRef"]["name"] == "iris-d"
    assert route["spec"]["parentRefs"] == [{"name": "models", "namespace": "gateway-system"}]


def test_child_names_are_deterministic_dns_labels():
    long_id = "a" * 60
    names = {
        resources.child_name(long_id, p) for p in ("predictor-one", "predictor-two", "v_1", "v.1")
    }
    assert len(names) == 4
    for name in names | {resources.child_name("iris", "V_1", "wake")}:
        assert DNS1035.match(name) and len(name) <= 63, name
    assert resources.child_name("iris", "v1") == "iris-v1"
    assert resources.child_name(long_id, "v1", "wake") == resources.child_name(
        long_id, "v1", "wake"
    )


@pytest.mark.parametrize(
    ("case", "router", "field"),
    [
        (
            spec({"name": "a"}, routing={"stickyHeader": "X-User"}),
            "ingress-nginx",
            "spec.routing.stickyHeader",
        ),
        (
            spec(
                {"name": "a", "traffic": 50},
                {"name": "b", "traffic": 30},
                {"name": "c", "traffic": 20},
            ),
            "ingress-nginx",
            "spec.predictors",
        ),
        (
            spec(
                {"name": "a", "traffic": 50, "minReplicas": 0, "maxReplicas": 1},
                {"name": "b", "traffic": 50, "minReplicas": 0, "maxReplicas": 1},
            ),
            "ingress-nginx",
            "spec.predictors.1.minReplicas",
        ),
        (
            spec({"name": "a"}, endpoint={"accessType": "private"}),
            "gateway-api",
            "spec.endpoint.accessType",
        ),
    ],
    ids=["sticky", "three-on-nginx", "two-at-zero", "private-on-gateway"],
)
def test_what_the_router_cannot_do_is_a_422_naming_the_field(case, router, field):
    engine = KubernetesEngine(traffic_router=router)
    with pytest.raises(ValidationError) as raised:
        engine.check_spec(case)
    assert raised.value.status == 422
    assert field in str(raised.value) and field in [d["field"] for d in raised.value.details]


def test_four_predictors_are_fine_on_the_gateway_api():
    KubernetesEngine(traffic_router="gateway-api").check_spec(FOUR)
    assert routing.traffic_problems(FOUR, "gateway-api") == []


# ---- phases of a predictor at zero --------------------------------------------------------


def _deployment(replicas: int, available: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"name": "iris-v1", "uid": "d1", "generation": 1},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 1,
            "replicas": available,
            "updatedReplicas": available,
            "availableReplicas": available,
        },
    }


def _observe(deployment: dict[str, Any], pods: list[dict[str, Any]], previous: str = ""):
    observation = phases.Observation(wanted=1, deployment=deployment, pods=pods)
    outcome = phases.running_outcome(observation)
    return outcome, phases.predictor_phase(KEDA.predictor, observation, outcome, previous)


def test_a_predictor_at_zero_is_scaled_to_zero_and_the_deployment_deployed():
    outcome, (phase, message) = _observe(_deployment(0), [])
    assert phase == PredictorPhase.SCALED_TO_ZERO and "next request" in message
    combined = phases.deployment_outcome(KEDA, [(KEDA.predictor, outcome, phase, message)])
    assert combined.phase == Phase.DEPLOYED
    assert combined.predictors[0]["phase"] == "ScaledToZero"


def test_a_predictor_raised_from_zero_is_waking_up():
    pod = {
        "metadata": {"name": "iris-v1-abc", "labels": {"primehub.io/predictor": "v1"}},
        "status": {"phase": "Pending"},
    }
    outcome, (phase, message) = _observe(_deployment(1), [pod], previous="ScaledToZero")
    assert phase == PredictorPhase.WAKING_UP and "held" in message
    combined = phases.deployment_outcome(KEDA, [(KEDA.predictor, outcome, phase, message)])
    assert combined.phase == Phase.DEPLOYED
    # Without having been at zero, the same pod is an ordinary rollout.
    _, (phase, _) = _observe(_deployment(1), [pod])
    assert phase == PredictorPhase.DEPLOYING


def test_a_deployment_waits_only_for_predictors_with_traffic():
    zero = spec({"name": "v1", "traffic": 100}, {"name": "v2", "traffic": 0})
    ready = phases.Outcome(Phase.DEPLOYED, "", 1, 1)
    rolling = phases.Outcome(Phase.DEPLOYING, "0 of 1 replicas ready", 1, 0)
    parts = [
        (zero.predictors[0], ready, PredictorPhase.DEPLOYED, ""),
        (zero.predictors[1], rolling, PredictorPhase.DEPLOYING, rolling.message),
    ]
    assert phases.deployment_outcome(zero, parts).phase == Phase.DEPLOYED
    parts[1] = (zero.predictors[1], rolling, PredictorPhase.FAILED, "image cannot be pulled")
    failed = phases.deployment_outcome(zero, parts)
    assert failed.phase == Phase.FAILED
    assert failed.message == "predictor v2: image cannot be pulled"
    assert [p["traffic"] for p in failed.predictors] == [100, 0]


def test_unknown_fields_of_custom_objects_are_caught():
    (scaled,) = [
        o
        for o in autoscaling.autoscaler_manifests(CR, KEDA, KEDA.predictor, SETTINGS)
        if o["kind"] == "ScaledObject"
    ]
    bogus = {**scaled, "spec": {**scaled["spec"], "idleAfter": 60}}
    assert crd_problems(bogus, schema("keda.sh_scaledobjects"))


# ---- the operator on the emulated cluster ---------------------------------------------------

IMAGE = "registry.example.com/iris:1"
IMAGE_V2 = "registry.example.com/iris:2"


def phdeployment(name: str, *predictors: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "primehub.io/v1alpha1",
        "kind": "PhDeployment",
        "metadata": {"name": name},
        "spec": {
            "displayName": name,
            "groupName": "default",
            "userName": "alice",
            "predictors": [{"instanceType": "cpu-0.5", **p} for p in predictors],
        },
    }


def predictor_status(cluster, name: str, predictor: str) -> dict[str, Any]:
    return next(
        (p for p in cluster.status(name).get("predictors") or [] if p["name"] == predictor), {}
    )


def test_canary_children_weights_and_removal_on_the_operator(cluster, operator):
    cluster.sim.images[IMAGE] = cluster.sim.images[IMAGE_V2] = "ok"
    cluster.apply(
        phdeployment(
            "ab",
            {"name": "v1", "modelImage": IMAGE, "traffic": 90},
            {"name": "v2", "modelImage": IMAGE_V2, "traffic": 10, "replicas": 2},
        )
    )
    status = cluster.wait_phase("ab", "Deployed")
    assert [
        (p["name"], p["traffic"], p["phase"], p["availableReplicas"]) for p in status["predictors"]
    ] == [("v1", 90, "Deployed", 1), ("v2", 10, "Deployed", 2)]
    assert sorted(r["predictor"] for r in status["replicaStatuses"]) == ["v1", "v2", "v2"]
    assert status["availableReplicas"] == 3
    for child in ("ab-v1", "ab-v2"):
        assert cluster.find("deployments", child) is not None
        assert (
            cluster.find("services", child)["spec"]["selector"]["primehub.io/predictor"]
            == (child[3:])
        )
    canary = cluster.find("ingresses", "ab-v2")
    assert canary["metadata"]["annotations"][f"{NGINX}/canary-weight"] == "10"
    versions = {
        (plural, o["metadata"]["name"]): o["metadata"]["resourceVersion"]
        for plural in ("deployments", "services", "ingresses")
        for o in cluster.objects(plural, "primehub.io/phdeployment=ab")
    }

    # A weight change is an update of the canary Ingress's annotations, nothing else.
    spec = cluster.find("phdeployments", "ab")["spec"]
    spec["predictors"][0]["traffic"], spec["predictors"][1]["traffic"] = 50, 50
    cluster.patch("phdeployments", "ab", {"spec": {"predictors": spec["predictors"]}})
    cluster.wait(
        lambda: (
            cluster.find("ingresses", "ab-v2")["metadata"]["annotations"][f"{NGINX}/canary-weight"]
            == "50"
        ),
        "the new weight",
    )
    cluster.wait(lambda: predictor_status(cluster, "ab", "v2").get("traffic") == 50, "status")
    now = {
        (plural, o["metadata"]["name"]): o["metadata"]["resourceVersion"]
        for plural in ("deployments", "services", "ingresses")
        for o in cluster.objects(plural, "primehub.io/phdeployment=ab")
    }
    assert {k for k in versions if versions[k] != now[k]} == {("ingresses", "ab-v2")}

    # Promote v1: v2's Deployment, Service and canary Ingress go at once.
    cluster.patch(
        "phdeployments",
        "ab",
        {"spec": {"predictors": [{"name": "v1", "instanceType": "cpu-0.5", "modelImage": IMAGE}]}},
    )
    # Routes go first, the Deployment last.
    cluster.wait(lambda: cluster.find("deployments", "ab-v2") is None, "v2 to be deleted")
    assert cluster.find("services", "ab-v2") is None and cluster.find("ingresses", "ab-v2") is None
    status = cluster.wait_phase("ab", "Deployed")
    cluster.wait(lambda: [p["name"] for p in cluster.status("ab")["predictors"]] == ["v1"], "v1")
    main = cluster.find("ingresses", "ab")
    assert main["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "ab-v1"


def test_hpa_owns_the_replica_count_and_stop_removes_it(cluster, operator):
    cluster.sim.images[IMAGE] = "ok"
    cluster.apply(
        phdeployment(
            "auto", {"name": "v1", "modelImage": IMAGE, "minReplicas": 1, "maxReplicas": 3}
        )
    )
    cluster.wait_phase("auto", "Deployed")
    hpa = cluster.find("horizontalpodautoscalers", "auto-v1")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "auto-v1" and hpa["spec"]["maxReplicas"] == 3
    # The HPA scales up; a later change of the spec keeps its count.
    cluster.patch("deployments", "auto-v1", {"spec": {"replicas": 3}})
    cluster.wait(lambda: cluster.status("auto").get("availableReplicas") == 3, "3 replicas")
    cluster.patch("phdeployments", "auto", {"spec": {"env": [{"name": "A", "value": "1"}]}})
    cluster.wait(
        lambda: (
            {"name": "A", "value": "1"}
            in cluster.find("deployments", "auto-v1")["spec"]["template"]["spec"]["containers"][0][
                "env"
            ]
        ),
        "the new template",
    )
    assert cluster.find("deployments", "auto-v1")["spec"]["replicas"] == 3
    cluster.patch("phdeployments", "auto", {"spec": {"stop": True}})
    cluster.wait_phase("auto", "Stopped")
    assert cluster.find("horizontalpodautoscalers", "auto-v1") is None
    assert predictor_status(cluster, "auto", "v1")["phase"] == "Stopped"


def test_a_predictor_scales_to_zero_and_wakes_up_under_keda(cluster, operator):
    cluster.sim.images[IMAGE] = "ok"
    cluster.apply(
        phdeployment(
            "lazy",
            {
                "name": "v1",
                "modelImage": IMAGE,
                "minReplicas": 0,
                "maxReplicas": 2,
                "scaleToZeroAfterSeconds": 30,
            },
        )
    )
    cluster.wait_phase("lazy", "Deployed")
    http = cluster.find("httpscaledobjects", "lazy-v1")
    scaled = cluster.find("scaledobjects", "lazy-v1")
    assert scaled["spec"]["minReplicaCount"] == 0 and scaled["spec"]["cooldownPeriod"] == 30
    assert http["spec"]["scaleTargetRef"]["service"] == "lazy-v1"
    assert cluster.find("services", "lazy-v1-wake")["spec"]["type"] == "ExternalName"
    main = cluster.find("ingresses", "lazy")
    assert main["metadata"]["annotations"][f"{NGINX}/upstream-vhost"] == http["spec"]["hosts"][0]

    # KEDA scales the idle predictor to zero: the deployment stays Deployed.
    cluster.patch("deployments", "lazy-v1", {"spec": {"replicas": 0}})
    cluster.wait(
        lambda: predictor_status(cluster, "lazy", "v1").get("phase") == "ScaledToZero", "zero"
    )
    status = cluster.status("lazy")
    assert status["phase"] == "Deployed" and status["replicas"] == 0

    # A request arrives: the scaler raises the count; the pod starts slowly.
    startup = cluster.sim.startup_seconds
    cluster.sim.startup_seconds = 3600
    cluster.patch("deployments", "lazy-v1", {"spec": {"replicas": 1}})
    cluster.wait(
        lambda: predictor_status(cluster, "lazy", "v1").get("phase") == "WakingUp", "waking"
    )
    assert cluster.status("lazy")["phase"] == "Deployed"
    cluster.sim.startup_seconds = startup
    cluster.wait(
        lambda: predictor_status(cluster, "lazy", "v1").get("phase") == "Deployed", "awake"
    )
    assert predictor_status(cluster, "lazy", "v1")["availableReplicas"] == 1


def test_without_keda_a_predictor_at_zero_fails_saying_what_is_missing(cluster, operator):
    cluster.sim.images[IMAGE] = "ok"
    cluster.call(lambda: cluster.store.types.pop("keda.sh/scaledobjects"))
    cluster.call(lambda: cluster.store.types.pop("http.keda.sh/httpscaledobjects"))
    cluster.apply(
        phdeployment(
            "nokeda", {"name": "v1", "modelImage": IMAGE, "minReplicas": 0, "maxReplicas": 1}
        )
    )
    cluster.wait_phase("nokeda", "Failed", contains="minReplicas: 0 needs KEDA")


@pytest.mark.parametrize(
    "operator_overrides",
    [{"router": "gateway-api", "gateway": {"parentRefs": [{"name": "models"}]}}],
)
def test_the_gateway_api_router_makes_one_httproute(cluster, operator):
    cluster.sim.images[IMAGE] = cluster.sim.images[IMAGE_V2] = "ok"
    cluster.apply(
        phdeployment(
            "gw",
            {"name": "a", "modelImage": IMAGE, "traffic": 50},
            {"name": "b", "modelImage": IMAGE_V2, "traffic": 30},
            {"name": "c", "modelImage": IMAGE_V2, "traffic": 20},
            {"name": "d", "modelImage": IMAGE_V2, "shadow": True},
        )
    )
    status = cluster.wait_phase("gw", "Deployed")
    assert [p["name"] for p in status["predictors"]] == ["a", "b", "c", "d"]
    route = cluster.find("httproutes", "gw")
    assert [(r["name"], r["weight"]) for r in route["spec"]["rules"][0]["backendRefs"]] == [
        ("gw-a", 50),
        ("gw-b", 30),
        ("gw-c", 20),
    ]
    assert cluster.objects("ingresses", "primehub.io/phdeployment=gw") == []
