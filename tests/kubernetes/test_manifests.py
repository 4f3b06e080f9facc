"""Every object we generate or ship validates: Kubernetes OpenAPI schemas, the CRD, kustomize."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import bcrypt
import jsonschema
import kubernetes_validate
import pytest
import yaml

from primehub_jupyter.core.config import ConfigStore, InstanceType
from primehub_jupyter.core.models import DeploymentRecord, DeploymentSpec, HistoryEntry
from primehub_jupyter.core.security import hash_token
from primehub_jupyter.engines.kubernetes import resources, routing
from primehub_jupyter.engines.kubernetes.crd import crd_manifest, openapi_schema
from primehub_jupyter.engines.kubernetes.engine import clean
from primehub_jupyter.engines.kubernetes.settings import OperatorSettings

from .validation import check_cel, prune

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.33"


def validate_k8s(obj: dict[str, Any]) -> None:
    """Strict (no unknown fields) validation against the Kubernetes OpenAPI schema."""
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(p) for p in error.path)
        raise AssertionError(
            f"{obj['kind']} {obj['metadata'].get('name')}: {path}: {error.message}"
        ) from None


def validate_phdeployment(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """What the API server says about a PhDeployment: [] when it is accepted."""
    schema = openapi_schema()
    pruned = prune(copy.deepcopy(obj), schema)
    pruned["metadata"] = obj["metadata"]
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(pruned)]
    return errors + check_cel(pruned, old, schema)


CR = {
    "apiVersion": "primehub.io/v1alpha1",
    "kind": "PhDeployment",
    "metadata": {
        "name": "iris",
        "namespace": "primehub",
        "uid": "0b5e2a48-0000-4000-8000-000000000001",
    },
}


def spec(**predictor: Any) -> DeploymentSpec:
    top = {k: predictor.pop(k) for k in list(predictor) if k in ("env", "endpoint", "userName")}
    return DeploymentSpec.model_validate(
        {
            "displayName": "Iris",
            "groupName": "Data_Science",
            "userName": "alice",
            **top,
            "predictors": [{"instanceType": "cpu-1", **predictor}],
        }
    )


SETTINGS = OperatorSettings.model_validate(
    {
        "modelServerImage": "ghcr.io/primehub-io/primehub-model-server:0.1.0",
        "storageSecret": "model-storage",
        "mlflowTrackingURI": "http://mlflow:5000",
        "serviceAccountName": "models",
        "modelVolumes": [
            {"prefix": "/home/jovyan", "claimName": "claim-{user}", "subPath": "home"}
        ],
        "ingress": {"host": "models.example.com", "tlsSecretName": "models-tls"},
    }
)
CPU = InstanceType.model_validate({"name": "cpu-1", "cpu": 1, "memory": "2Gi"})
GPU = InstanceType.model_validate(
    {
        "name": "gpu",
        "cpu": 0.5,
        "memory": "1536Mi",
        "gpu": 1,
        "nodeSelector": {"gpu": "a100"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
)
VARIANTS = {
    "image": (
        spec(
            modelImage="registry.example.com/iris:1",
            imagePullSecret="regcred",
            env=[{"name": "A", "value": "1"}],
            metadata={"team": "ds"},
        ),
        CPU,
    ),
    "pvc": (spec(modelURI="pvc://models/iris/v1", replicas=3), GPU),
    "home": (spec(modelURI="/home/jovyan/bundles/iris"), CPU),
    "http": (spec(modelURI="https://files.example.com/iris.tar.gz"), CPU),
    "s3": (spec(modelURI="s3://bucket/iris/"), CPU),
    "mlflow": (spec(modelURI="models:/iris/3"), CPU),
    "private": (
        spec(modelImage="iris:1", endpoint={"accessType": "private", "clients": [{"name": "app"}]}),
        CPU,
    ),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_generated_objects_validate_against_the_kubernetes_schemas(variant):
    deployment_spec, instance = VARIANTS[variant]
    deployment = resources.deployment_manifest(
        CR,
        deployment_spec,
        instance,
        SETTINGS,
        replicas=deployment_spec.predictor.replicas,
        deploy_timeout=300,
    )
    objects = [
        deployment,
        resources.service_manifest(CR, deployment_spec),
        routing.ingress_manifests(CR, deployment_spec, SETTINGS)[0],
        resources.clients_secret_manifest(
            CR, deployment_spec.group_name, {"app": hash_token("t", 4)}
        ),
    ]
    for obj in objects:
        validate_k8s(obj)
        assert (
            obj["metadata"]["labels"]["primehub.io/group"] == "Data_Science"
        )  # a valid label value
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == "models"
    if deployment_spec.predictor.model_uri:
        args = pod["containers"][0]["args"]
        assert args[:3] == ["/mnt/models", "--host", "0.0.0.0"]
        assert args[args.index("--port") + 1] == "9000"
        assert args[args.index("--termination-log") + 1] == "/dev/termination-log"
        (init,) = pod["initContainers"]
        assert init["args"][-1] == "/mnt/models"
        assert init["envFrom"] == [{"secretRef": {"name": "model-storage", "optional": True}}]
        assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"} in init["env"]


def test_model_sources_map_to_volumes():
    home = resources.model_source(spec(modelURI="/home/jovyan/bundles/iris"), SETTINGS)
    assert home.uri == "file:///mnt/source/home/bundles/iris"
    assert home.volumes[0]["persistentVolumeClaim"] == {
        "claimName": "claim-alice",
        "readOnly": True,
    }
    pvc = resources.model_source(spec(modelURI="pvc://models/iris/v1"), SETTINGS)
    assert pvc.uri == "file:///mnt/source/iris/v1"
    assert resources.model_source(spec(modelURI="s3://b/k"), SETTINGS).volumes == []


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("gs://bucket/model", "scheme of 'gs' is not supported"),
        (
            "/data/elsewhere/model",
            "is not on a volume the cluster mounts (model volumes: /home/jovyan)",
        ),
        ("pvc://Not_A_Claim/x", "is not a valid PersistentVolumeClaim name"),
        ("models:/only-a-name", "is not models:/<name>/<version>"),
        ("https:///no-host", "has no host or bucket"),
    ],
)
def test_unusable_model_uris_say_why(uri, message):
    with pytest.raises(resources.ModelURIError) as raised:
        resources.model_source(spec(modelURI=uri), SETTINGS)
    assert message in str(raised.value)
    assert str(raised.value).startswith("model URI cannot be fetched")


def test_instance_type_becomes_resources_node_selector_and_tolerations():
    deployment = resources.deployment_manifest(
        CR, VARIANTS["pvc"][0], GPU, SETTINGS, replicas=3, deploy_timeout=120
    )
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "500m", "memory": "1536Mi", "nvidia.com/gpu": "1"},
        "limits": {"cpu": "500m", "memory": "1536Mi", "nvidia.com/gpu": "1"},
    }
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert pod["tolerations"] == GPU.tolerations
    assert deployment["spec"]["progressDeadlineSeconds"] == 120
    assert deployment["spec"]["replicas"] == 3


def test_private_ingress_and_nginx_hash_format():
    private = routing.ingress_manifests(CR, VARIANTS["private"][0], SETTINGS)[0]
    annotations = private["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/auth-secret"] == "iris-clients"
    assert annotations["nginx.ingress.kubernetes.io/auth-secret-type"] == "auth-map"
    assert private["spec"]["tls"] == [{"hosts": ["models.example.com"], "secretName": "models-tls"}]
    assert resources.endpoint_url("iris", SETTINGS) == (
        "https://models.example.com/deployment/iris/api/v1.0/predictions"
    )
    hashed = hash_token("s3cret-token", 4)
    assert hashed.startswith("$2b$")
    converted = resources.nginx_hash(hashed)
    assert converted.startswith("$2y$") and converted[4:] == hashed[4:]
    assert bcrypt.checkpw(b"s3cret-token", converted.encode())
    assert not bcrypt.checkpw(b"wrong", converted.encode())


def test_ingress_serves_the_catalog_to_browsers():
    """The whole /deployment/<id>/ prefix reaches the model server (api/model/info and
    openapi.json included); the catalog's Swagger UI may call it from JupyterLab's origin."""
    annotations = routing.ingress_manifests(CR, VARIANTS["private"][0], SETTINGS)[0]["metadata"][
        "annotations"
    ]
    nginx = "nginx.ingress.kubernetes.io"
    assert annotations[f"{nginx}/x-forwarded-prefix"] == "/deployment/iris"
    assert annotations[f"{nginx}/enable-cors"] == "true"
    assert annotations[f"{nginx}/cors-allow-origin"] == "*"
    assert annotations[f"{nginx}/cors-allow-credentials"] == "false"
    assert "Authorization" in annotations[f"{nginx}/cors-allow-headers"]


# ---- the CRD ---------------------------------------------------------------------------


def test_the_crd_file_is_the_generated_one_and_a_valid_crd():
    shipped = yaml.safe_load((REPO / "deploy/base/crd.yaml").read_text())
    assert shipped == crd_manifest(), "deploy/base/crd.yaml is out of date: run `make generate`"
    validate_k8s(shipped)


def _structural_problems(schema: dict[str, Any], path: str = "") -> list[str]:
    problems = []
    if "type" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        problems.append(f"{path or '<root>'}: no type")
    for banned in ("$ref", "definitions", "dependencies", "patternProperties", "oneOf"):
        if banned in schema:
            problems.append(f"{path}: {banned} is not allowed in a structural schema")
    if "properties" in schema and "additionalProperties" in schema:
        problems.append(f"{path}: properties and additionalProperties together")
    for key, sub in (schema.get("properties") or {}).items():
        problems += _structural_problems(sub, f"{path}.{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            problems += _structural_problems(schema[key], f"{path}[{key}]")
    return problems


def test_the_crd_schema_is_structural_with_status_and_printer_columns():
    schema = openapi_schema()
    assert _structural_problems(schema) == []
    version = crd_manifest()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert list(columns) == ["Phase", "Replicas", "Available", "Endpoint", "Age"]
    for json_path in columns.values():
        node: dict[str, Any] = schema
        for part in json_path.strip(".").split(".")[:-1]:
            node = node["properties"][part]
        assert json_path.split(".")[-1] in node.get("properties", {}) or json_path.startswith(
            ".metadata"
        )


def example_documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((REPO / "deploy/examples").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_every_example_validates_against_the_crd_and_the_model():
    examples = example_documents()
    assert len(examples) >= 4
    for example in examples:
        assert validate_phdeployment(example) == [], example["metadata"]["name"]
        DeploymentSpec.model_validate(example["spec"])  # and the API's own model agrees


def test_the_engine_writes_what_the_crd_accepts():
    deployment_spec = VARIANTS["private"][0]
    entry = HistoryEntry(
        revision=1, time="2026-11-22T13:53:00.000Z", user="alice", spec=deployment_spec
    )
    deployment = DeploymentRecord(id="iris", spec=deployment_spec)
    deployment.status.history = [entry]
    resource = deployment.to_custom_resource()
    resource["spec"] = clean(resource["spec"])
    resource["status"] = clean(resource["status"])
    assert validate_phdeployment(resource) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["spec"]["predictors"][0].pop("modelURI"),
            "a predictor needs a modelImage or a modelURI",
        ),
        (lambda d: d["spec"]["predictors"][0].update(replicas=0), "less than the minimum of 1"),
        (lambda d: d["spec"].update(endpoint={"accessType": "secret"}), "'secret' is not one of"),
        (lambda d: d["metadata"].update(name="x" * 64), "at most 63 characters"),
        (lambda d: d["spec"].update(env=[{"name": "1 bad"}]), "does not match"),
    ],
)
def test_invalid_phdeployments_are_refused(change, message):
    document = copy.deepcopy(example_documents()[0])
    change(document)
    problems = validate_phdeployment(document)
    assert any(message in p for p in problems), problems


def test_group_and_display_name_are_immutable():
    old = example_documents()[0]
    new = copy.deepcopy(old)
    new["spec"]["groupName"] = "other"
    assert "spec: Invalid value: groupName is immutable" in validate_phdeployment(new, old)
    new = copy.deepcopy(old)
    new["spec"]["predictors"][0]["replicas"] = 5
    assert validate_phdeployment(new, old) == []


# ---- kustomize -------------------------------------------------------------------------


def kustomize(path: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with kustomize) is not installed")
    out = subprocess.run(
        [kubectl, "kustomize", str(REPO / path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.parametrize("path", ["deploy/base", "deploy/monitoring"])
def test_kustomize_renders_valid_manifests(path):
    documents = kustomize(path)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
    assert {
        ("CustomResourceDefinition", "phdeployments.primehub.io"),
        ("Deployment", "primehub-operator"),
        ("Role", "primehub-operator"),
        ("ConfigMap", "primehub-config"),
    } <= kinds
    for document in documents:
        if document["kind"] == "PodMonitor":
            check_podmonitor(document)
            continue
        validate_k8s(document)
        if document["kind"] not in ("Namespace", "CustomResourceDefinition"):
            assert document["metadata"]["namespace"] == "primehub", document["metadata"]["name"]
    config_map = next(d for d in documents if d["metadata"]["name"] == "primehub-config")
    config = ConfigStore.parse(yaml.safe_load(config_map["data"]["config.yaml"]))
    assert config.group("data-science") and config.instance_type("gpu-1").gpu == 1
    settings = OperatorSettings.model_validate(yaml.safe_load(config_map["data"]["operator.yaml"]))
    assert settings.ingress.class_name == "nginx"
    operator = next(d for d in documents if d["kind"] == "Deployment")
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/primehub-io/primehub-operator:0.1.0"
    assert container["args"][0] == "operator"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert all(arg.split("=", 1)[1].rsplit("/", 1)[0] in mounts for arg in container["args"][1:3])


def test_rbac_is_namespaced_and_deletes_only_children_it_makes():
    documents = kustomize("deploy/base")
    assert not [d for d in documents if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    operator = next(
        d for d in documents if d["kind"] == "Role" and d["metadata"]["name"] == "primehub-operator"
    )
    verbs = {verb for rule in operator["rules"] for verb in rule["verbs"]}
    assert "*" not in verbs
    assert all("*" not in rule["resources"] for rule in operator["rules"])
    deletable = {
        r for rule in operator["rules"] if "delete" in rule["verbs"] for r in rule["resources"]
    }
    assert deletable == {
        "deployments",
        "services",
        "ingresses",
        "horizontalpodautoscalers",
        "scaledobjects",
        "httpscaledobjects",
        "httproutes",
    }


def check_podmonitor(document: dict[str, Any]) -> None:
    """The PodMonitor's shape (prometheus-operator's CRD is not among the published schemas)."""
    assert document["apiVersion"] == "monitoring.coreos.com/v1"
    spec = document["spec"]
    assert spec["selector"] == {"matchLabels": {"app": "primehub-deployment"}}
    assert set(spec) <= {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel"}
    for endpoint in spec["podMetricsEndpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "relabelings", "scrapeTimeout"}
        # The port the model container names in every generated Deployment.
        assert endpoint["port"] == resources.PORT_NAME and endpoint["path"] == "/metrics"


def test_monitoring_renders_the_dashboard():
    documents = kustomize("deploy/monitoring")
    board_map = next(
        d for d in documents if d["metadata"]["name"] == "primehub-deployment-dashboard"
    )
    assert board_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(board_map["data"]["primehub-deployments.json"])
    titles = [p["title"] for p in board["panels"]]
    assert titles == [
        "QPS",
        "Predict QPS",
        "Success rate",
        "4xx",
        "5xx",
        "Latency",
        "Feedback reward",
        "Replicas",
        "CPU",
        "Memory",
    ]
    for panel in board["panels"]:
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            assert "$deployment" in target["expr"]
    latency = next(p for p in board["panels"] if p["title"] == "Latency")
    assert [t["legendFormat"] for t in latency["targets"]] == ["p50", "p90", "p99"]


# ---- the model pod's securityContext ------------------------------------------------------------


def _pod(variant: str, settings: OperatorSettings = SETTINGS) -> dict[str, Any]:
    deployment_spec, instance = VARIANTS[variant]
    manifest = resources.deployment_manifest(
        CR, deployment_spec, instance, settings, replicas=1, deploy_timeout=300
    )
    validate_k8s(manifest)
    return manifest["spec"]["template"]["spec"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_model_pods_run_unprivileged(variant):
    pod = _pod(variant)
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    containers = pod["containers"] + pod.get("initContainers", [])
    assert len(containers) == (2 if VARIANTS[variant][0].predictor.model_uri else 1)
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in containers:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["privileged"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["readOnlyRootFilesystem"] is True
        assert context["runAsNonRoot"] is True
        # The root is read-only: whatever the container writes goes to emptyDir volumes.
        writable = {
            m["mountPath"]: volumes[m["name"]]
            for m in container["volumeMounts"]
            if not m.get("readOnly")
        }
        assert writable["/tmp"] == {"name": "tmp", "emptyDir": {}}
        assert all("emptyDir" in volume for volume in writable.values())
    if VARIANTS[variant][0].predictor.model_uri:
        model, init = pod["containers"][0], pod["initContainers"][0]
        assert {"name": "model-store", "mountPath": "/mnt/models"} in model["volumeMounts"]
        assert {"name": "model-store", "mountPath": "/mnt/models"} in init["volumeMounts"]
        # Our image's user has its home in the read-only image: caches go to /tmp.
        assert {"name": "HOME", "value": "/tmp"} in model["env"]
        assert {"name": "HOME", "value": "/tmp"} in init["env"]
    else:  # a user's image keeps its own HOME
        assert "HOME" not in {e["name"] for e in pod["containers"][0]["env"]}


def test_pod_security_is_configurable_and_users_env_wins():
    settings = SETTINGS.model_copy(
        update={
            "pod_security": SETTINGS.pod_security.model_validate(
                {"runAsUser": 8888, "fsGroup": 2000, "readOnlyRootFilesystem": False}
            )
        }
    )
    pod = _pod("image", settings)
    assert pod["securityContext"]["runAsUser"] == 8888
    assert pod["securityContext"]["fsGroup"] == 2000
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is False
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        OperatorSettings.load(None, pod_security={"runAsUser": 0})  # root is never an option
    custom_home = spec(modelURI="pvc://models/iris", env=[{"name": "HOME", "value": "/mnt/h"}])
    manifest = resources.deployment_manifest(
        CR, custom_home, CPU, SETTINGS, replicas=1, deploy_timeout=60
    )
    pod = manifest["spec"]["template"]["spec"]
    for container in (pod["containers"][0], pod["initContainers"][0]):
        homes = [e["value"] for e in container["env"] if e["name"] == "HOME"]
        assert homes == ["/mnt/h"]
