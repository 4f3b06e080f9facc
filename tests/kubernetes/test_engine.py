"""KubernetesEngine through the DeploymentService, against the emulated API and the operator."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml
from aiohttp import web

from primehub_jupyter.core.config import ConfigStore
from primehub_jupyter.core.errors import Conflict, NotFound
from primehub_jupyter.core.service import DeploymentService
from primehub_jupyter.engines.kubernetes.engine import KubernetesEngine

from ..conftest import wait_until
from .conftest import phdeployment
from .fakeapi import serve
from .harness import ADMIN, JUPYTER, NAMESPACE, FakeCluster

IMAGE = "registry.example.com/iris:1"


def make_engine(
    cluster: FakeCluster, groups_file: Path, tmp_path: Path, token: str = JUPYTER, **traits: Any
) -> KubernetesEngine:
    return KubernetesEngine(
        config_store=ConfigStore(groups_file),
        kubeconfig=str(cluster.kubeconfig(tmp_path / f"{token}.kubeconfig", token)),
        service_url_template=f"{cluster.network}/svc/{{name}}",
        pod_url_template=f"{cluster.network}/pod/{{pod}}",
        deploy_timeout=60,
        delete_wait_seconds=20,
        metrics_interval=0.2,
        follow_poll_seconds=0.2,
        **traits,
    )


# Async tests run on pytest-jupyter's loop (jp_asyncio_loop): fixtures use the same loop.


@pytest.fixture
def service(
    cluster, operator, groups_file, tmp_path, jp_asyncio_loop
) -> Iterator[DeploymentService]:
    cluster.sim.images[IMAGE] = "ok"
    engine = make_engine(cluster, groups_file, tmp_path)
    jp_asyncio_loop.run_until_complete(engine.start())
    try:
        yield DeploymentService(engine, ConfigStore(groups_file), bcrypt_rounds=4)
    finally:
        jp_asyncio_loop.run_until_complete(engine.shutdown())


def body(**predictor: Any) -> dict[str, Any]:
    spec = {
        "displayName": "Iris",
        "groupName": "default",
        "predictors": [
            {"instanceType": "cpu-0.5", "replicas": 1, "modelImage": IMAGE, **predictor}
        ],
    }
    return {"spec": spec}


async def wait_phase(
    service: DeploymentService, deployment_id: str, phase: str, limit: float = 30
) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        deployment = await service.get("alice", deployment_id)
        if deployment.status.phase.value == phase:
            return deployment
        if loop.time() > deadline:
            raise AssertionError(f"{deployment_id} never reached {phase}: {deployment.status}")
        await asyncio.sleep(0.1)


async def test_create_update_history_and_optimistic_concurrency(service, cluster):
    created = await service.create("alice", body(replicas=2))
    assert created.resource_version == "1"
    assert created.status.phase.value == "Deploying"
    assert [h.revision for h in created.status.history] == [1]
    deployed = await wait_phase(service, created.id, "Deployed")
    assert deployed.status.available_replicas == 2
    assert (
        deployed.status.endpoint
        == f"https://models.example.com/deployment/{created.id}/api/v1.0/predictions"
    )
    assert deployed.resource_version == "1"  # status changes are not changes of the deployment

    updated = await service.update(
        "alice",
        created.id,
        {
            "spec": {"predictors": [{"replicas": 3}], "updateMessage": "more"},
            "resourceVersion": "1",
        },
    )
    assert updated.resource_version == "2"
    assert [(h.revision, h.update_message) for h in updated.status.history] == [
        (2, "more"),
        (1, ""),
    ]
    with pytest.raises(Conflict, match="resourceVersion 1 is stale, current is 2"):
        await service.update(
            "alice", created.id, {"spec": {"description": "lost?"}, "resourceVersion": "1"}
        )
    await wait_phase(service, created.id, "Deployed")
    stored = cluster.find("phdeployments", created.id)
    assert [h["revision"] for h in stored["status"]["history"]] == [2, 1]
    assert stored["spec"]["predictors"][0]["replicas"] == 3
    assert "modelURI" not in stored["spec"]["predictors"][0]  # no nulls written

    # The operator writes status all the time; updates without a version never get a 409.
    for i in range(5):
        await service.update("alice", created.id, {"spec": {"description": f"v{i}"}})
    history = await service.history("alice", created.id)
    assert [h.revision for h in history][:3] == [7, 6, 5]
    listed = await service.list_deployments("alice")
    assert [d.id for d in listed] == [created.id]


async def test_a_lost_status_write_keeps_the_history_entry(service, cluster):
    created = await service.create("alice", body())
    await wait_phase(service, created.id, "Deployed")
    # A server that died between the spec write and the status write: the entry survives in
    # the annotation; readers and the operator merge it back into status.history.
    entry = {
        "revision": 2,
        "time": "2026-11-22T13:53:00.000Z",
        "user": "bob",
        "updateMessage": "crash",
        "spec": {**body()["spec"], "description": "after"},
    }
    cluster.patch(
        "phdeployments",
        created.id,
        {
            "metadata": {"annotations": {"primehub.io/last-history-entry": json.dumps(entry)}},
            "spec": {"description": "after"},
        },
    )
    history = await service.history("alice", created.id)
    assert [(h.revision, h.user) for h in history] == [(2, "bob"), (1, "alice")]
    cluster.wait(
        lambda: [h["revision"] for h in cluster.status(created.id).get("history", [])] == [2, 1],
        "the operator to record the entry",
    )


async def test_clients_are_stored_as_nginx_hashes_in_a_secret(service, cluster):
    created = await service.create("alice", body())
    await service.update("alice", created.id, {"spec": {"endpoint": {"accessType": "private"}}})
    first = await service.add_client("alice", created.id, "billing")
    second = await service.add_client("alice", created.id, "reports")
    secret = cluster.find("secrets", f"{created.id}-clients")
    hashes = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(hashes) == {"billing", "reports"}
    assert all(h.startswith("$2y$") for h in hashes.values())
    assert bcrypt.checkpw(first["token"].encode(), hashes["billing"].encode())
    assert bcrypt.checkpw(second["token"].encode(), hashes["reports"].encode())
    assert first["token"] not in json.dumps(cluster.find("phdeployments", created.id))
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "PhDeployment"

    await service.delete_client("alice", created.id, "billing")
    secret = cluster.find("secrets", f"{created.id}-clients")
    assert set(secret["data"]) == {"reports"}  # at once, not at the next reconcile
    await wait_phase(service, created.id, "Deployed")
    annotations = cluster.find("ingresses", created.id)["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/auth-secret"] == f"{created.id}-clients"


async def test_invoke_logs_replicas_and_metrics_from_pods(service, cluster):
    created = await service.create("alice", body(replicas=2))
    await wait_phase(service, created.id, "Deployed")
    payload = json.dumps({"data": {"ndarray": [[1, 2], [3, 4]]}}).encode()
    for _ in range(4):
        result = await service.invoke(
            "alice",
            created.id,
            "api/v1.0/predictions",
            payload,
            {
                "Content-Type": "application/json",
                "X-Forwarded-User": "mallory",
                "Authorization": "Basic eA==",
            },
        )
        answer = json.loads(result.body)
        assert result.status == 200 and answer["data"]["ndarray"] == [[3.0], [7.0]]
        assert answer["meta"]["user"] == "alice"  # the signed-in user, never a forged header

    replicas = await service.replicas("alice", created.id)
    assert len(replicas) == 2 and all(r.startswith(f"{created.id}-") for r in replicas)
    lines = await service.logs("alice", created.id, None, 100)
    assert all(line[:4].isdigit() and line[23] == "Z" for line in lines), lines[:3]
    assert sum("POST /api/v1.0/predictions 200 user=alice" in line for line in lines) == 4
    assert {line.split(" ")[1] for line in lines} == {f"[{r}]" for r in replicas}  # merged, tagged
    one = await service.logs("alice", created.id, "0", 1)
    assert len(one) == 1 and "[" not in one[0].split(" ")[1]

    chunks = [c async for c in await service.download_logs("alice", created.id, None)]
    text = b"".join(chunks).decode()
    assert text.count("===== replica ") == 2

    follower = await service.follow_logs("alice", created.id, replicas[0])
    got: list[str] = []

    async def read_one() -> None:
        async for line in follower:
            got.append(line)
            if "feedback" in line:
                return

    reader = asyncio.create_task(read_one())
    url = f"{cluster.network}/pod/{replicas[0]}/api/v1.0/feedback"

    async def followed() -> bool:
        # The follower may subscribe after a first feedback: send until it shows one.
        if not reader.done():
            await asyncio.to_thread(
                lambda: __import__("requests").post(url, json={"reward": 1}, timeout=10)
            )
        return reader.done()

    await wait_until(followed, what="the followed log to show the feedback")
    await reader
    await follower.aclose()
    assert "POST /api/v1.0/feedback 200" in got[-1]

    first = (await service.metrics("alice", created.id, 60, 1)).to_json()  # starts the scraping
    assert first["deploymentId"] == created.id

    # Without Prometheus, history starts with the first look: requests from then on count.
    async def counted() -> dict | None:
        await service.invoke("alice", created.id, "api/v1.0/predictions", payload, {})
        metrics = (await service.metrics("alice", created.id, 60, 1)).to_json()
        enough = metrics["totals"]["predictRequests"] >= 3 and metrics["replicas"]
        return metrics if enough else None

    metrics = await wait_until(counted, limit=15, what="three requests in the totals")
    assert set(metrics["series"]) == {
        "requestsPerSecond",
        "predictRequestsPerSecond",
        "successRate",
        "clientErrorsPerSecond",
        "serverErrorsPerSecond",
        "latencyP50",
        "latencyP90",
        "latencyP99",
        "reward",
    }
    assert set(metrics["replicas"]) == set(replicas)
    assert metrics["totals"]["predictRequests"] >= 3 and metrics["totals"]["serverErrors"] == 0
    assert len(metrics["timestamps"]) == len(metrics["series"]["requestsPerSecond"]) == 60


async def test_invoke_of_an_unreachable_service_says_so(cluster, operator, groups_file, tmp_path):
    engine = make_engine(cluster, groups_file, tmp_path)
    engine.service_url_template = "http://127.0.0.1:9/{name}"
    await engine.start()
    try:
        service = DeploymentService(engine, ConfigStore(groups_file), bcrypt_rounds=4)
        created = await service.create("alice", body())
        result = await service.invoke("alice", created.id, "api/v1.0/predictions", b"{}", {})
        assert result.status == 503
        assert f"deployment '{created.id}' cannot be reached" in json.loads(result.body)["message"]
    finally:
        await engine.shutdown()


@pytest.fixture
def prometheus(jp_asyncio_loop) -> Iterator[tuple[str, list[str]]]:
    queries: list[str] = []

    async def query_range(request: web.Request) -> web.Response:
        query = request.query["query"]
        queries.append(query)
        start, step = float(request.query["start"]), float(request.query["step"])
        if "by (pod" in query:
            result = [{"metric": {"pod": "p-abc-12345"}, "values": [[start, "2.5"]]}]
        elif query.startswith("histogram_quantile(0.99"):
            result = [{"metric": {}, "values": [[start, "0.012"], [start + step, "NaN"]]}]
        else:
            result = [{"metric": {}, "values": [[start, "4"], [start + step, "6"]]}]
        return web.json_response(
            {"status": "success", "data": {"resultType": "matrix", "result": result}}
        )

    async def instant(request: web.Request) -> web.Response:
        queries.append(request.query["query"])
        return web.json_response(
            {
                "status": "success",
                "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "10"]}]},
            }
        )

    app = web.Application()
    app.router.add_get("/api/v1/query_range", query_range)
    app.router.add_get("/api/v1/query", instant)
    runner, port = jp_asyncio_loop.run_until_complete(serve(app))
    try:
        yield f"http://127.0.0.1:{port}", queries
    finally:
        jp_asyncio_loop.run_until_complete(runner.cleanup())


async def test_metrics_from_prometheus(cluster, operator, groups_file, tmp_path, prometheus):
    url, queries = prometheus
    engine = make_engine(cluster, groups_file, tmp_path, prometheus_url=url)
    await engine.start()
    try:
        service = DeploymentService(engine, ConfigStore(groups_file), bcrypt_rounds=4)
        created = await service.create("alice", body())
        metrics = (await service.metrics("alice", created.id, 300, 30)).to_json()
    finally:
        await engine.shutdown()
    assert len(metrics["timestamps"]) == 10
    assert metrics["series"]["requestsPerSecond"][:2] == [4.0, 6.0]
    assert metrics["series"]["latencyP99"][:2] == [0.012, None]  # NaN: nothing to measure
    assert metrics["replicas"]["p-abc-12345"]["cpu"][0] == 2.5
    assert metrics["totals"]["requests"] == 10 and metrics["totals"]["reward"] == 1.0
    pods = f'namespace="{NAMESPACE}",pod=~"{created.id}-[a-z0-9]+-[a-z0-9]{{5}}"'
    assert len(queries) == 19 and all(pods in q for q in queries), queries


async def test_delete_removes_every_child(service, cluster):
    created = await service.create("alice", body())
    await service.update("alice", created.id, {"spec": {"endpoint": {"accessType": "private"}}})
    await service.add_client("alice", created.id, "app")
    await wait_phase(service, created.id, "Deployed")
    assert cluster.objects("pods", f"primehub.io/phdeployment={created.id}")
    await service.delete("alice", created.id)
    for plural in ("phdeployments", "deployments", "services", "ingresses"):
        assert cluster.find(plural, created.id) is None, plural
    assert cluster.find("secrets", f"{created.id}-clients") is None
    assert cluster.objects("replicasets") == [] and cluster.objects("pods") == []
    with pytest.raises(NotFound):
        await service.get("alice", created.id)


async def test_start_says_what_is_missing(cluster, groups_file, tmp_path):
    cluster.call(lambda: cluster.store.types.pop("primehub.io/phdeployments"))
    engine = make_engine(cluster, groups_file, tmp_path)
    with pytest.raises(RuntimeError, match=r"custom resource is not installed .* deploy/base"):
        await engine.start()
    await engine.shutdown()


async def test_start_names_a_missing_permission(cluster, groups_file, tmp_path):
    cluster.api.tokens["nobody-token"] = f"system:serviceaccount:{NAMESPACE}:nobody"
    engine = make_engine(cluster, groups_file, tmp_path, token="nobody-token")
    with pytest.raises(
        RuntimeError, match=r'cannot list PhDeployments .* cannot list resource "phdeployments"'
    ):
        await engine.start()
    await engine.shutdown()
    assert ADMIN in cluster.api.tokens


async def test_without_the_operator_a_change_says_so(cluster, groups_file, tmp_path):
    engine = make_engine(cluster, groups_file, tmp_path, operator_grace_seconds=0)
    await engine.start()
    try:
        service = DeploymentService(engine, ConfigStore(groups_file), bcrypt_rounds=4)
        created = await service.create("alice", body())

        async def noticed() -> Any:
            current = await service.get("alice", created.id)
            return current if "primehub-operator running" in current.status.message else None

        # operator_grace_seconds=0: as soon as any time has passed the change is overdue.
        current = await wait_until(noticed, what="the message that asks for the operator")
    finally:
        await engine.shutdown()
    assert current.status.phase.value == "Deploying"
    assert "is primehub-operator running in namespace 'primehub'?" in current.status.message


async def test_an_unreadable_phdeployment_is_failed_and_the_others_are_served(service, cluster):
    good = await service.create("alice", body())
    # Edited by hand: the CRD accepts it, our validation does not (a metadata key that cannot
    # be a label, the same client twice).
    bad = phdeployment("by-hand", modelImage=IMAGE, metadata={"-team-": "ds"})
    bad["spec"]["endpoint"] = {"accessType": "private", "clients": [{"name": "a"}, {"name": "a"}]}
    bad["spec"]["description"] = "kept"
    await asyncio.to_thread(cluster.apply, bad)

    listed = {d.id: d for d in await service.list_deployments("alice")}
    assert set(listed) == {good.id, "by-hand"}
    failed = listed["by-hand"]
    assert failed.status.phase.value == "Failed"
    assert "the spec is invalid" in failed.status.message
    assert "metadata" in failed.status.message and "client names must be unique" in (
        failed.status.message
    )
    # What validates is kept (the model, the description); the rest is left out.
    assert failed.spec.predictor.model_image == IMAGE
    assert failed.spec.predictor.metadata == {}
    assert failed.spec.description == "kept"
    assert failed.spec.group_name == "default"
    assert (await service.get("alice", "by-hand")).status.phase.value == "Failed"
    assert (await wait_phase(service, good.id, "Deployed")).status.available_replicas == 1

    # An update writes the whole (valid) spec back: the deployment recovers.
    fixed = await service.update("alice", "by-hand", {"spec": {"description": "repaired"}})
    assert fixed.spec.predictor.model_image == IMAGE
    stored = await asyncio.to_thread(cluster.find, "phdeployments", "by-hand")
    assert stored["spec"]["endpoint"].get("clients", []) == []
    assert stored["spec"]["predictors"][0].get("metadata", {}) == {}
    await wait_phase(service, "by-hand", "Deployed")


async def test_a_table_bundles_sample_request_is_in_the_status(service, cluster, tmp_path):
    """The bundle lives in the cluster: its model server's catalog tells the sample request
    ("Run an example"), rows with their column names, once the deployment is Deployed."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("sklearn")
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from primehub_jupyter.serving.packaging import package

    frame = pd.DataFrame(
        {"age": [20, 30, 40, 50], "city": ["Paris", "Rome", "Paris", "Oslo"], "vip": [1, 0, 1, 0]}
    )
    prep = ColumnTransformer([("num", "passthrough", ["age"]), ("c", OneHotEncoder(), ["city"])])
    pipe = Pipeline([("prep", prep), ("clf", LogisticRegression())])
    pipe.fit(frame[["age", "city"]], frame["vip"])
    store = tmp_path / "store"
    bundle = Path(package(pipe, store / "credit", sample_input=frame[["age", "city"]].head(2)))
    cluster.sim.pvcs["project-data"] = store
    spec = body(modelURI="pvc://project-data/credit")
    del spec["spec"]["predictors"][0]["modelImage"]
    created = await service.create("alice", spec)
    assert created.status.sample_request is None  # nothing serves it yet

    deployed = await wait_phase(service, created.id, "Deployed")
    sample = yaml.safe_load((bundle / "bundle.yaml").read_text())["sample"]["request"]
    assert sample["data"]["names"] == ["age", "city"]
    assert deployed.status.sample_request == sample
    (listed,) = [d for d in await service.list_deployments("alice") if d.id == created.id]
    assert listed.status.to_json()["sampleRequest"] == sample


async def test_two_predictors_invoke_by_weight_and_count_per_predictor(service, cluster):
    spec = body()["spec"]
    spec["predictors"] = [
        {"name": "v1", "instanceType": "cpu-0.5", "modelImage": IMAGE, "traffic": 50},
        {"name": "v2", "instanceType": "cpu-0.5", "modelImage": IMAGE, "traffic": 50},
    ]
    created = await service.create("alice", {"spec": spec})
    deployed = await wait_phase(service, created.id, "Deployed")
    assert [(p.name, p.traffic, p.phase.value) for p in deployed.status.predictors] == [
        ("v1", 50, "Deployed"),
        ("v2", 50, "Deployed"),
    ]
    assert sorted(r.predictor for r in deployed.status.replica_statuses) == ["v1", "v2"]
    payload = json.dumps({"data": {"ndarray": [[1, 2]]}}).encode()
    answered = []
    for _ in range(40):
        result = await service.invoke("alice", created.id, "api/v1.0/predictions", payload, {})
        assert result.status == 200
        answered.append(result.headers["X-PrimeHub-Predictor"])
    assert set(answered) == {"v1", "v2"}  # 50/50: all 40 on one side has odds of 2^-39
    counters = {c.name: c for c in await service.engine.predictor_counters(created.id)}
    assert {n: c.requests for n, c in counters.items()} == {
        n: answered.count(n) for n in ("v1", "v2")
    }
    assert all(sum(c.latency_buckets) == c.requests and c.errors == 0 for c in counters.values())
