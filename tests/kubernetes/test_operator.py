"""The operator against the emulated API and simulated cluster: every phase and failure message."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import yaml

from primehub_jupyter.core.errors import FEATURE_DISABLED_MESSAGE
from primehub_jupyter.core.jobs import JobRecord, JobSpec
from primehub_jupyter.core.models import utcnow
from primehub_jupyter.engines.kubernetes import jobs

from .cluster import MODEL_SERVER_IMAGE
from .conftest import phdeployment
from .harness import NAMESPACE, OperatorThread, operator_settings

IMAGE = "registry.example.com/iris:1"
IMAGE_V2 = "registry.example.com/iris:2"


def owned_children(cluster, name: str, predictor: str = "predictor1") -> dict[str, dict]:
    children = {}
    for plural, child in (
        ("deployments", f"{name}-{predictor}"),
        ("services", f"{name}-{predictor}"),
        ("ingresses", name),
    ):
        found = cluster.find(plural, child)
        assert found is not None, f"{plural}/{child} missing"
        children[plural] = found
    return children


def test_model_image_deploys_with_owned_labelled_children(cluster, operator):
    cluster.sim.images[IMAGE] = "ok"
    created = cluster.apply(phdeployment("iris", modelImage=IMAGE, replicas=2))
    status = cluster.wait_phase("iris", "Deployed")
    assert status["availableReplicas"] == 2 and status["replicas"] == 2
    assert status["endpoint"] == "https://models.example.com/deployment/iris/api/v1.0/predictions"
    assert [r["ready"] for r in status["replicaStatuses"]] == [True, True]

    uid = created["metadata"]["uid"]
    labels = {
        "app": "primehub-deployment",
        "primehub.io/phdeployment": "iris",
        "primehub.io/group": "default",
    }
    for kind, child in owned_children(cluster, "iris").items():
        assert child["metadata"]["labels"].items() >= labels.items(), kind
        (ref,) = child["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["uid"], ref["controller"]) == ("PhDeployment", uid, True), kind

    deployment = cluster.find("deployments", "iris-predictor1")
    strategy = deployment["spec"]["strategy"]["rollingUpdate"]
    assert strategy == {"maxUnavailable": 0, "maxSurge": 1}
    pod_spec = deployment["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    assert container["name"] == "model" and container["image"] == IMAGE
    assert container["resources"]["limits"] == {"cpu": "500m", "memory": "512Mi"}
    assert (
        container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"]
        >= 300
    )
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert (
        annotations["prometheus.io/scrape"] == "true"
        and annotations["prometheus.io/port"] == "9000"
    )

    ingress = cluster.find("ingresses", "iris")
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["path"] == "/deployment/iris(/|$)(.*)"
    assert "auth-type" not in str(ingress["metadata"]["annotations"])
    assert (
        "X-Forwarded-User $remote_user"
        in ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/configuration-snippet"]
    )
    # A phase change is told with an Event, for `kubectl describe phdeployment iris`.
    reasons = {(e["involvedObject"]["kind"], e["reason"]) for e in cluster.objects("events")}
    assert ("PhDeployment", "Deployed") in reasons


def test_model_uri_on_a_pvc_is_fetched_by_the_init_container(cluster, operator, bundle_dir):
    cluster.sim.pvcs["project-data"] = bundle_dir.parent
    cluster.apply(phdeployment("from-pvc", modelURI=f"pvc://project-data/{bundle_dir.name}"))
    cluster.wait_phase("from-pvc", "Deployed")
    pod_spec = cluster.find("deployments", "from-pvc-predictor1")["spec"]["template"]["spec"]
    (init,) = pod_spec["initContainers"]
    assert init["name"] == "model-initializer" and init["image"] == MODEL_SERVER_IMAGE
    assert pod_spec["containers"][0]["image"] == MODEL_SERVER_IMAGE
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod_spec["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == ["project-data"]
    # The real fetcher ran: the bundle is in the pod's emptyDir, and its log says so.
    (pod,) = cluster.objects("pods", "primehub.io/phdeployment=from-pvc")
    fetched = cluster.workdir / "cluster/pods" / pod["metadata"]["name"] / "volumes/model-store"
    assert (fetched / "bundle.yaml").exists() and (
        fetched / "model.joblib"
    ).read_bytes() == b"model"
    logs = cluster.request(
        "GET",
        f"/api/v1/namespaces/{NAMESPACE}/pods/{pod['metadata']['name']}/log?container=model-initializer",
    )
    assert "fetched 2 files" in logs.text


def _tarball(bundle: Path, target: Path) -> None:
    with tarfile.open(target, "w:gz") as tar:
        tar.add(bundle, arcname="iris-bundle")


def test_model_uri_fetch_failure_then_fix_recovers(cluster, operator, bundle_dir):
    storage = cluster.workdir / "storage"
    _tarball(bundle_dir, storage / "iris.tar.gz")
    missing = f"{cluster.network}/files/nothing-here.tar.gz"
    cluster.apply(phdeployment("fetch", modelURI=missing))
    status = cluster.wait_phase("fetch", "Failed", contains="model URI cannot be fetched")
    assert "HTTP 404" in status["message"] and "nothing-here.tar.gz" in status["message"]

    cluster.patch(
        "phdeployments",
        "fetch",
        {
            "spec": {
                "predictors": [
                    {
                        "name": "predictor1",
                        "instanceType": "cpu-0.5",
                        "replicas": 1,
                        "modelURI": f"{cluster.network}/files/iris.tar.gz",
                    }
                ]
            }
        },
    )
    cluster.wait_phase("fetch", "Deployed")


def test_image_pull_failure_then_fix_recovers(cluster, operator):
    cluster.apply(phdeployment("pull", modelImage="registry.example.com/typo:1"))
    status = cluster.wait_phase("pull", "Failed", contains="image cannot be pulled")
    assert "registry.example.com/typo:1" in status["message"]
    assert "imagePullSecret" in status["message"]

    cluster.sim.images[IMAGE] = "ok"
    spec = phdeployment("pull", modelImage=IMAGE)["spec"]
    cluster.patch("phdeployments", "pull", {"spec": {"predictors": spec["predictors"]}})
    cluster.wait_phase("pull", "Deployed")


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        ("crash", "the model container keeps crashing (exit code 1"),
        ("load-fail", "model failed to load: ValueError"),
        ("oom", "ran out of memory (OOMKilled, limit of 512Mi)"),
    ],
)
def test_container_failures_are_named(cluster, operator, behaviour, expected):
    image = f"registry.example.com/{behaviour}:1"
    cluster.sim.images[image] = behaviour
    cluster.apply(phdeployment("broken", modelImage=image))
    status = cluster.wait_phase("broken", "Failed", contains=expected)
    assert status["availableReplicas"] == 0


def test_broken_bundle_fails_to_load(cluster, operator, bundle_dir):
    (bundle_dir / "bundle.yaml").write_text(yaml.safe_dump({"runtime": "broken"}))
    cluster.sim.pvcs["data"] = bundle_dir
    cluster.apply(phdeployment("bad-bundle", modelURI="pvc://data/"))
    cluster.wait_phase("bad-bundle", "Failed", contains="model failed to load")


def test_rolling_update_keeps_the_previous_version_serving(cluster, operator):
    cluster.sim.images[IMAGE] = "ok"
    cluster.sim.images[IMAGE_V2] = "ok"
    cluster.apply(phdeployment("roll", modelImage=IMAGE, replicas=2))
    cluster.wait_phase("roll", "Deployed")
    old_pods = {
        p["metadata"]["name"] for p in cluster.objects("pods", "primehub.io/phdeployment=roll")
    }

    # A bad new version: Failed, and the old replicas keep serving meanwhile.
    spec = phdeployment("roll", modelImage="registry.example.com/missing:2", replicas=2)["spec"]
    cluster.patch("phdeployments", "roll", {"spec": {"predictors": spec["predictors"]}})
    status = cluster.wait_phase("roll", "Failed", contains="the previous version keeps serving")
    assert status["availableReplicas"] == 2
    ready = {p["metadata"]["name"] for p in cluster.objects("pods") if cluster.sim._ready(p)}
    assert old_pods <= ready

    spec = phdeployment("roll", modelImage=IMAGE_V2, replicas=2)["spec"]
    cluster.patch("phdeployments", "roll", {"spec": {"predictors": spec["predictors"]}})
    cluster.wait_phase("roll", "Deployed")
    cluster.wait(
        lambda: not old_pods & {p["metadata"]["name"] for p in cluster.objects("pods")},
        "the old replicas to go",
    )
    images = {p["spec"]["containers"][0]["image"] for p in cluster.objects("pods")}
    assert images == {IMAGE_V2}


def test_group_and_instance_type_problems_then_the_admin_fixes_them(cluster, operator, groups_file):
    cluster.sim.images[IMAGE] = "ok"
    cluster.apply(phdeployment("nogroup", modelImage=IMAGE, groupName="ghosts"))
    cluster.wait_phase("nogroup", "Failed", contains="group 'ghosts' not found")
    cluster.apply(phdeployment("noinstance", modelImage=IMAGE, instanceType="cpu-64"))
    cluster.wait_phase("noinstance", "Failed", contains="instance type 'cpu-64' not found")
    cluster.apply(phdeployment("disabled", modelImage=IMAGE, groupName="research"))
    status = cluster.wait_phase("disabled", "Failed")
    assert status["message"] == FEATURE_DISABLED_MESSAGE
    assert cluster.find("deployments", "disabled-predictor1") is None  # nothing runs for it

    # The admin enables deployment for the group: the resync picks the fix up, no edit needed.
    config = yaml.safe_load(groups_file.read_text())
    next(g for g in config["groups"] if g["name"] == "research")["enabledDeployment"] = True
    groups_file.write_text(yaml.safe_dump(config))
    cluster.wait_phase("disabled", "Deployed")


def test_group_quota_is_checked_before_scaling_up(cluster, operator):
    cluster.sim.images[IMAGE] = "ok"
    # Group 'small' has 1 CPU: two cpu-0.5 replicas fill it.
    cluster.apply(phdeployment("first", modelImage=IMAGE, replicas=2, groupName="small"))
    cluster.wait_phase("first", "Deployed")
    cluster.apply(phdeployment("second", modelImage=IMAGE, groupName="small"))
    status = cluster.wait_phase("second", "Failed", contains="group resource not enough")
    assert "cpu 0.5 requested, 0 of 1 free (group 'small')" in status["message"]
    assert cluster.find("deployments", "second-predictor1") is None  # never scaled up

    # Scaling the first one up does not fit either: it keeps running as it was.
    cluster.patch(
        "phdeployments",
        "first",
        {
            "spec": {
                "predictors": [
                    {
                        "name": "predictor1",
                        "instanceType": "cpu-0.5",
                        "replicas": 3,
                        "modelImage": IMAGE,
                    }
                ]
            }
        },
    )
    status = cluster.wait_phase("first", "Failed", contains="the running version keeps serving")
    assert cluster.find("deployments", "first-predictor1")["spec"]["replicas"] == 2

    # Stopping the first frees the quota: the second one starts by itself.
    cluster.patch("phdeployments", "first", {"spec": {"stop": True}})
    cluster.wait_phase("first", "Stopped")
    cluster.wait_phase("second", "Deployed")


def running_job(deployment_id: str, job_id: str, image: str) -> dict:
    """A batch Job as the engine labels and annotates it (the runner replaced by `pass`)."""
    record = JobRecord(
        id=job_id,
        deployment_id=deployment_id,
        user="alice",
        revision=1,
        spec=JobSpec(
            input="pvc://data/in.csv",
            output="pvc://data/out.csv",
            format="csv",
            output_format="csv",
            predictor="predictor1",
        ),
        create_time=utcnow(),
    )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": jobs.job_name(deployment_id, job_id),
            "labels": jobs.job_labels(deployment_id, job_id, "small"),
            "annotations": {jobs.ANNOTATION_JOB: jobs.record_json(record)},
        },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": jobs.job_labels(deployment_id, job_id, "small")},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "job", "image": image, "command": ["python", "-c", "pass"]}
                    ],
                },
            },
        },
    }


def test_a_running_batch_job_holds_group_quota_until_it_finishes(cluster, operator):
    cluster.sim.images[IMAGE] = "ok"
    # Group 'small' has 1 CPU: the scorer's replica and its job (cpu-0.5 each) fill it.
    cluster.apply(phdeployment("scorer", modelImage=IMAGE, groupName="small"))
    cluster.wait_phase("scorer", "Deployed")
    job_image = "registry.example.com/job:1"  # not pullable yet: the job stays active
    cluster.apply(running_job("scorer", "j0123456789", job_image))
    cluster.apply(phdeployment("second", modelImage=IMAGE, groupName="small"))
    status = cluster.wait_phase("second", "Failed", contains="group resource not enough")
    assert "cpu 0.5 requested, 0 of 1 free (group 'small')" in status["message"]
    assert cluster.find("deployments", "second-predictor1") is None  # never scaled up

    # The job finishes: its quota is free and the resync admits the second deployment.
    cluster.sim.images[job_image] = "ok"
    cluster.wait(
        lambda: any(
            c["type"] == "Complete"
            for c in (cluster.find("jobs", "scorer-j0123456789") or {"status": {}})["status"].get(
                "conditions", []
            )
        ),
        "the job to complete",
    )
    cluster.wait_phase("second", "Deployed")
    assert cluster.status("scorer")["phase"] == "Deployed"  # what was admitted stays admitted


def test_namespace_resource_quota(cluster, operator):
    cluster.sim.images[IMAGE] = "ok"
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "compute"},
            "spec": {"hard": {"requests.cpu": "500m"}},
        }
    )
    cluster.apply(phdeployment("quota", modelImage=IMAGE, replicas=2))
    status = cluster.wait_phase("quota", "Failed", contains="namespace resource quota exceeded")
    assert "exceeded quota: compute" in status["message"]
    cluster.delete("resourcequotas", "compute")
    cluster.wait_phase("quota", "Deployed")


def test_unschedulable_pods_then_a_node_fits(cluster, operator, groups_file):
    cluster.sim.images[IMAGE] = "ok"
    config = yaml.safe_load(groups_file.read_text())
    config["instanceTypes"].append(
        {
            "name": "gpu-1",
            "cpu": 1,
            "memory": "1Gi",
            "gpu": 1,
            "nodeSelector": {"gpu": "true"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        }
    )
    next(g for g in config["groups"] if g["name"] == "default")["instanceTypes"].append("gpu-1")
    groups_file.write_text(yaml.safe_dump(config))
    cluster.apply(phdeployment("gpu", modelImage=IMAGE, instanceType="gpu-1"))
    status = cluster.wait_phase("gpu", "Failed", contains="cluster resource not enough")
    assert "didn't match Pod's node affinity/selector" in status["message"]
    container = cluster.find("deployments", "gpu-predictor1")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"

    cluster.call(lambda: cluster.sim.node_labels.update(gpu="true"))
    cluster.wait_phase("gpu", "Deployed")


def test_not_ready_within_the_deploy_timeout(cluster, operator):
    cluster.sim.images["registry.example.com/slow:1"] = "never-ready"
    body = phdeployment("slow", modelImage="registry.example.com/slow:1")
    body["metadata"]["annotations"] = {"primehub.io/deploy-timeout": "1.5"}
    cluster.apply(body)
    status = cluster.wait_phase(
        "slow", "Failed", contains="not ready within the deploy timeout of 1.5 s"
    )
    assert "0 of 1 replicas ready; loading the model" in status["message"]


def test_stop_scales_to_zero_and_start_comes_back(cluster, operator):
    cluster.sim.images[IMAGE] = "ok"
    cluster.apply(phdeployment("stopme", modelImage=IMAGE, replicas=2))
    cluster.wait_phase("stopme", "Deployed")
    cluster.patch("phdeployments", "stopme", {"spec": {"stop": True}})
    cluster.wait_phase("stopme", "Stopped")
    assert cluster.find("deployments", "stopme-predictor1")["spec"]["replicas"] == 0
    assert cluster.objects("pods", "primehub.io/phdeployment=stopme") == []
    assert "admitted" not in cluster.status("stopme")  # its quota is released
    cluster.patch("phdeployments", "stopme", {"spec": {"stop": False}})
    status = cluster.wait_phase("stopme", "Deployed")
    assert status["availableReplicas"] == 2


def test_private_endpoint_gets_basic_auth_and_stale_hashes_are_pruned(cluster, operator):
    cluster.sim.images[IMAGE] = "ok"
    body = phdeployment(
        "private",
        modelImage=IMAGE,
        endpoint={"accessType": "private", "clients": [{"name": "app"}]},
    )
    cluster.apply(body)
    cluster.wait_phase("private", "Deployed")
    secret = cluster.wait(lambda: cluster.find("secrets", "private-clients"), "the clients Secret")
    annotations = cluster.find("ingresses", "private")["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io"
    assert annotations[f"{prefix}/auth-type"] == "basic"
    assert annotations[f"{prefix}/auth-secret"] == "private-clients"
    assert annotations[f"{prefix}/auth-secret-type"] == "auth-map"
    assert secret["metadata"]["ownerReferences"][0]["name"] == "private"

    # A hash of a client that is not in the spec (left by a crash) is removed.
    cluster.patch("secrets", "private-clients", {"data": {"app": "eA==", "gone": "eA=="}})
    cluster.wait(
        lambda: set(cluster.find("secrets", "private-clients")["data"]) == {"app"}, "the pruning"
    )

    # Public again: no basic auth left on the Ingress.
    cluster.patch("phdeployments", "private", {"spec": {"endpoint": {"accessType": "public"}}})
    cluster.wait(
        lambda: (
            "nginx.ingress.kubernetes.io/auth-type"
            not in cluster.find("ingresses", "private")["metadata"]["annotations"]
        ),
        "the auth annotations to go",
    )
    annotations = cluster.find("ingresses", "private")["metadata"]["annotations"]
    assert "nginx.ingress.kubernetes.io/rewrite-target" in annotations


def test_operator_restart_keeps_the_quota_it_granted(cluster, groups_file, tmp_path):
    cluster.sim.images[IMAGE] = "ok"
    first = OperatorThread(cluster, groups_file, operator_settings(), tmp_path).start()
    try:
        cluster.apply(phdeployment("holder", modelImage=IMAGE, replicas=2, groupName="small"))
        cluster.wait_phase("holder", "Deployed")
    finally:
        first.stop()
    second = OperatorThread(cluster, groups_file, operator_settings(), tmp_path).start()
    try:
        cluster.apply(phdeployment("latecomer", modelImage=IMAGE, groupName="small"))
        cluster.wait_phase("latecomer", "Failed", contains="group resource not enough")
    finally:
        second.stop()
    assert cluster.api.denied == []


def test_operator_stops_with_a_reason_when_the_crd_is_missing(cluster, groups_file, tmp_path):
    from primehub_jupyter.engines.kubernetes.operator import OperatorFailed

    cluster.call(lambda: cluster.store.types.pop("primehub.io/phdeployments"))
    thread = OperatorThread(cluster, groups_file, operator_settings(), tmp_path)
    with pytest.raises(OperatorFailed) as raised:
        thread.start()
    assert str(raised.value) == (
        "cannot list PhDeployments in 'primehub': the PhDeployment CRD is not installed "
        "(kubectl apply -k deploy/base)"
    )


def test_the_operator_command_runs_and_stops_on_sigterm(cluster, groups_file, tmp_path):
    import signal
    import subprocess
    import sys

    from .harness import OPERATOR

    cluster.sim.images[IMAGE] = "ok"
    settings = tmp_path / "operator.yaml"
    settings.write_text(
        yaml.safe_dump({"modelServerImage": MODEL_SERVER_IMAGE, "resyncSeconds": 1})
    )
    kubeconfig = cluster.kubeconfig(tmp_path / "cli.kubeconfig", OPERATOR)
    command = [
        sys.executable, "-m", "primehub_jupyter.cli", "operator", "--kubeconfig", str(kubeconfig),
        "--config", str(groups_file), "--settings", str(settings), "--liveness", "",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        cluster.apply(phdeployment("from-cli", modelImage=IMAGE))
        cluster.wait_phase("from-cli", "Deployed")
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "PrimeHub operator: namespace primehub" in output

    missing = subprocess.run(
        [*command[:6], "--config", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1
    assert "nope.yaml not found: mount the primehub-config ConfigMap there" in missing.stderr
