"""Metrics: the series maths on synthetic scrapes, then real traffic through the REST API."""

from __future__ import annotations

import asyncio

import pytest
import requests

from primehub_jupyter.engines.local.metrics import parse_gateway
from primehub_jupyter.engines.series import MetricsStore, ReplicaSample, Snapshot, quantile

from .conftest import spec, wait_until


def snap(t: float, ok: float, bad: float = 0, buckets: dict | None = None, **replicas) -> Snapshot:
    gateway = {"200|predict": ok, "400|predict": bad}
    for le, count in (buckets or {}).items():
        gateway[f"bucket:{le}"] = count
    return Snapshot(t, gateway, {n: ReplicaSample(dict(c)) for n, c in replicas.items()})


def test_rates_success_and_nulls_before_data():
    store = MetricsStore(retention=600, interval=5)
    store.add("d", snap(100, ok=0))
    store.add("d", snap(105, ok=50, bad=0))
    store.add("d", snap(110, ok=90, bad=10))
    result = store.series("d", window=20, step=5, now=112).to_json()
    assert result["timestamps"] == [95, 100, 105, 110]  # bucket starts; 110 holds `now`
    series = result["series"]
    assert series["requestsPerSecond"] == [None, 10.0, 10.0, None]
    assert series["clientErrorsPerSecond"] == [None, 0.0, 2.0, None]
    assert series["successRate"] == [None, 1.0, 0.8, None]
    assert result["totals"]["requests"] == 100 and result["totals"]["clientErrors"] == 10


def test_a_counter_reset_counts_from_zero():
    store = MetricsStore(retention=600, interval=5)
    store.add("d", snap(100, ok=1000))
    store.add("d", snap(105, ok=20))  # the gateway restarted
    result = store.series("d", window=5, step=5, now=104).to_json()
    assert result["series"]["requestsPerSecond"] == [4.0]


def test_reward_is_the_share_of_feedback_reward_across_replicas():
    store = MetricsStore(retention=600, interval=5)
    store.add("d", snap(100, 0, a={"feedback": 0, "reward": 0}, b={"feedback": 10, "reward": 5}))
    store.add("d", snap(105, 0, a={"feedback": 4, "reward": 3}, b={"feedback": 14, "reward": 6}))
    result = store.series("d", window=5, step=5, now=104).to_json()
    assert result["series"]["reward"] == [0.5]  # (3 + 1) / (4 + 4)
    assert result["totals"]["feedback"] == 8 and result["totals"]["reward"] == 0.5


def test_quantiles_interpolate_within_buckets():
    deltas = {"bucket:0.01": 50.0, "bucket:0.1": 100.0, "bucket:+Inf": 100.0}
    assert quantile(0.5, deltas) == pytest.approx(0.01)
    assert quantile(0.75, deltas) == pytest.approx(0.055)
    assert quantile(0.99, {"bucket:0.01": 0.0, "bucket:+Inf": 0.0}) is None


def test_parse_gateway_groups_by_deployment():
    text = (
        'primehub_gateway_requests_total{deployment="a",code="200",kind="predict"} 3\n'
        'primehub_gateway_requests_total{deployment="b",code="401",kind="predict"} 1\n'
        'primehub_gateway_request_duration_seconds_bucket{deployment="a",le="0.005"} 2\n'
    )
    parsed = parse_gateway(text)
    assert parsed["a"] == {"200|predict": 3.0, "bucket:0.005": 2.0}
    assert parsed["b"] == {"401|predict": 1.0}


@pytest.fixture
def engine_config():
    return {"drain_seconds": 0.2, "stop_grace_seconds": 5.0, "metrics_interval": 0.5}


async def test_metrics_api_reports_real_traffic(api, bundles):
    created = await api.ok(
        "POST", "deployments", {"spec": spec(bundles["v1"], endpoint={"accessType": "private"})}
    )
    deployment_id = created["id"]
    endpoint = (await api.wait_phase(deployment_id, "Deployed"))["status"]["endpoint"]
    client = await api.ok("POST", f"deployments/{deployment_id}/clients", {"name": "c"})
    auth = ("c", client["token"])

    def traffic() -> None:
        session = requests.Session()
        good = {"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}}
        for _ in range(30):
            assert session.post(endpoint, json=good, auth=auth, timeout=30).status_code == 200
        for _ in range(5):  # wrong feature count: the model server answers 400
            bad = {"data": {"ndarray": [[1, 2]]}}
            assert session.post(endpoint, json=bad, auth=auth, timeout=30).status_code == 400
        for _ in range(3):
            assert session.post(endpoint, json=good, timeout=30).status_code == 401

    await asyncio.to_thread(traffic)

    async def counted() -> dict | None:
        found = await api.ok("GET", f"deployments/{deployment_id}/metrics", window="60", step="1")
        # A CPU rate needs two scrapes of the replica, a request count one of the gateway.
        cpu = [c for r in found["replicas"].values() for c in r["cpu"] if c is not None]
        return found if found["totals"]["requests"] >= 38 and cpu else None

    metrics = await wait_until(counted, what="the scraped traffic")
    totals = metrics["totals"]
    assert totals["predictRequests"] == 38
    assert totals["clientErrors"] == 8
    assert totals["serverErrors"] == 0
    assert metrics["step"] == 1 and len(metrics["timestamps"]) == 60
    peak = max(v for v in metrics["series"]["requestsPerSecond"] if v is not None)
    assert peak > 0
    rates = [v for v in metrics["series"]["successRate"] if v is not None]
    assert rates and min(rates) < 1.0
    latencies = [v for v in metrics["series"]["latencyP99"] if v is not None]
    assert latencies and all(0 < v < 10 for v in latencies)
    (replica,) = metrics["replicas"].values()
    assert any(m for m in replica["memory"] if m), replica
    assert any(c is not None for c in replica["cpu"]), replica

    code, body = await api.call("GET", f"deployments/{deployment_id}/metrics", window="5")
    assert code == 422 and "window" in body["message"]
    code, body = await api.call("GET", f"deployments/{deployment_id}/metrics", step="x")
    assert code == 400
    code, _ = await api.as_user("carol").call("GET", f"deployments/{deployment_id}/metrics")
    assert code == 404


async def test_rollback_reapplies_an_earlier_spec(api, bundles, models, iris):
    X, _ = iris
    deployment_id = (await api.ok("POST", "deployments", {"spec": spec(bundles["v1"])}))["id"]
    await api.wait_phase(deployment_id, "Deployed")
    await api.ok(
        "PATCH",
        f"deployments/{deployment_id}",
        {"spec": {"predictors": [{"modelURI": str(bundles["v2"])}], "description": "v2"}},
    )
    await api.wait_phase(deployment_id, "Deployed")
    rolled = await api.ok("POST", f"deployments/{deployment_id}/rollback", {"revision": 1})
    assert rolled["spec"]["predictors"][0]["modelURI"] == str(bundles["v1"])
    assert rolled["spec"]["description"] == ""
    deployed = await api.wait_phase(deployment_id, "Deployed")
    history = deployed["status"]["history"]
    assert [h["revision"] for h in history] == [3, 2, 1]
    assert history[0]["updateMessage"] == "rollback to revision 1"
    response = await asyncio.to_thread(
        requests.post, deployed["status"]["endpoint"], json={"data": {"ndarray": X[:2].tolist()}}
    )
    import numpy as np

    np.testing.assert_allclose(
        response.json()["data"]["ndarray"], models["v1"].predict_proba(X[:2])
    )
    code, body = await api.call("POST", f"deployments/{deployment_id}/rollback", {"revision": 9})
    assert code == 404 and "no history revision 9" in body["message"]
    code, body = await api.call("POST", f"deployments/{deployment_id}/rollback", {"revision": "1"})
    assert code == 422


def test_traffic_in_the_step_where_history_begins_is_counted():
    store = MetricsStore(retention=600, interval=1)
    store.add("d", Snapshot(101.2))  # created: the zero baseline
    store.add("d", snap(102.0, ok=30))
    store.add("d", snap(103.0, ok=50, bad=5))
    # The bucket [100, 105) is complete.
    result = store.series("d", window=10, step=5, now=106).to_json()
    assert result["totals"]["requests"] == 55 and result["totals"]["clientErrors"] == 5
    assert result["series"]["requestsPerSecond"][0] == pytest.approx(55 / 1.8)


def test_coarse_steps_count_the_current_bucket_and_keep_requests_in_it():
    """31 requests a few seconds ago show up at once, and stay in their minute's row."""
    store = MetricsStore(retention=3600, interval=5)
    store.add("d", Snapshot(1000.0))  # created: the zero baseline
    store.add("d", snap(1003.0, ok=31))
    soon = store.series("d", window=900, step=60, now=1005).to_json()
    assert soon["timestamps"][-1] == 960 and all(t % 60 == 0 for t in soon["timestamps"])
    assert soon["totals"]["requests"] == 31
    assert soon["series"]["requestsPerSecond"][-1] == pytest.approx(31 / 3)
    store.add("d", snap(1060.0, ok=31))  # a minute later, no new traffic
    later = store.series("d", window=900, step=60, now=1065).to_json()
    assert later["timestamps"][-2:] == [960, 1020]
    assert later["totals"]["requests"] == 31
    assert later["series"]["requestsPerSecond"][-2] == pytest.approx(31 / 3)
    assert later["series"]["requestsPerSecond"][-1] == 0.0


def test_the_documented_metrics_document_is_a_metrics_report_word_for_word():
    # docs/internals.md "Metrics" shows the wire shape: the model reads it and writes it back.
    import json
    import re
    from pathlib import Path

    from primehub_jupyter.core.metrics import (
        DEPLOYMENT_SERIES,
        REPLICA_SERIES,
        MetricsReport,
    )

    text = (Path(__file__).parent.parent / "docs" / "internals.md").read_text()
    section = text[text.index("## Metrics") :]
    example = json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))
    report = MetricsReport.model_validate(example)
    assert report.to_json() == example  # (900 == 900.0: floats where the model has them)
    assert tuple(example["series"]) == DEPLOYMENT_SERIES
    assert all(tuple(columns) == REPLICA_SERIES for columns in example["replicas"].values())
