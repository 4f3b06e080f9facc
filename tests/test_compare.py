"""Compare and promote (core/compare.py): the statistics, the service and the REST routes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from primehub_jupyter.core.compare import (
    FISHER,
    MIN_FEEDBACK,
    Z_TEST,
    compare_report,
    fisher_exact_p,
    latency_quantile,
    z_test,
)
from primehub_jupyter.core.config import ConfigStore
from primehub_jupyter.core.errors import NotFound, ValidationError
from primehub_jupyter.core.models import DeploymentRecord, DeploymentSpec
from primehub_jupyter.core.service import DeploymentService
from primehub_jupyter.core.traffic import LATENCY_BUCKETS, PredictorCounters

from .conftest import OWNER, wait_until
from .engines.memory import MemoryEngine

IMAGE = "registry.example.com/iris:{}"


def predictor(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "instanceType": "cpu-0.5", "modelImage": IMAGE.format(name), **fields}


def split(*predictors: dict[str, Any]) -> dict[str, Any]:
    return {"displayName": "Iris canary", "groupName": "default", "predictors": list(predictors)}


CANARY = split(
    predictor("v1", traffic=90),
    predictor("v2", traffic=10),
    predictor("v3", shadow=True),
)


def counters(name: str, feedback: int = 0, successes: int = 0, **fields: Any) -> PredictorCounters:
    return PredictorCounters(
        name=name, feedback=feedback, successes=successes, reward_sum=float(successes), **fields
    )


def record(spec: dict[str, Any]) -> DeploymentRecord:
    return DeploymentRecord(id="canary", spec=DeploymentSpec.model_validate(spec))


# ---- the statistics, against worked examples ----------------------------------------------


def test_z_test_matches_the_worked_example_50_of_100_against_70_of_100():
    # By hand: pooled share (50 + 70) / 200 = 0.6; standard error
    # sqrt(0.6 * 0.4 * (1/100 + 1/100)) = sqrt(0.0048) = 0.069282; z = (0.7 - 0.5) / 0.069282
    # = 2.88675; two-sided p = 2 * (1 - Phi(2.88675)) = 2 * 0.0019462 = 0.0038924.
    z, p = z_test(50, 100, 70, 100)
    assert z == pytest.approx(2.88675, abs=1e-5)
    assert p == pytest.approx(0.0038924, abs=2e-7)
    # The sign says which side is better; the p-value does not depend on the order.
    z_back, p_back = z_test(70, 100, 50, 100)
    assert z_back == pytest.approx(-z) and p_back == pytest.approx(p)
    assert z_test(30, 30, 40, 40) == (0.0, 1.0)  # both always succeed: nothing to tell apart


def test_fisher_exact_test_matches_the_hypergeometric_sum_by_hand():
    # 1/20 against 7/20: 8 successes among 40. Tables as unlikely as the observed one are
    # x = 0, 1 and (the margins are symmetric) 7, 8 successes on the first side, so
    # p = 2 * (C(20,0) C(20,8) + C(20,1) C(20,7)) / C(40,8) = 2 * 1676370 / 76904685.
    by_hand = 2 * (math.comb(20, 8) + 20 * math.comb(20, 7)) / math.comb(40, 8)
    assert by_hand == pytest.approx(0.043596, abs=1e-6)
    assert fisher_exact_p(1, 20, 7, 20) == pytest.approx(by_hand, rel=1e-9)
    assert fisher_exact_p(7, 20, 1, 20) == pytest.approx(by_hand, rel=1e-9)
    assert fisher_exact_p(5, 20, 5, 20) == pytest.approx(1.0)


def test_latency_quantiles_interpolate_inside_the_bucket():
    buckets = [0] * len(LATENCY_BUCKETS)
    buckets[2] = 10  # (2.5 ms, 5 ms]
    buckets[4] = 10  # (10 ms, 25 ms]
    # p50: rank 10 ends the 2.5-5 ms bucket -> 5 ms. p99: rank 19.8 is 9.8 of the 10
    # requests into the 10-25 ms bucket -> 10 + 15 * 0.98 = 24.7 ms.
    assert latency_quantile(buckets, 0.5) == pytest.approx(0.005)
    assert latency_quantile(buckets, 0.99) == pytest.approx(0.0247)
    slow = [0] * len(LATENCY_BUCKETS)
    slow[-1] = 3  # above the last finite bound: that bound is all a histogram can say
    assert latency_quantile(slow, 0.5) == LATENCY_BUCKETS[-2]
    assert latency_quantile([0] * len(LATENCY_BUCKETS), 0.5) is None


def test_report_rows_roles_rates_and_the_shadow_diff_share():
    buckets = [0] * len(LATENCY_BUCKETS)
    buckets[3] = 100
    report = compare_report(
        record(CANARY),
        [
            counters("v1", 100, 50, requests=900, errors=9, latency_buckets=buckets),
            counters("v2", 100, 70, requests=100, errors=3),
            counters("v3", requests=1000, compared=200, differed=30),
            counters("gone", 10, 10),  # a predictor removed from the spec is left out
        ],
    )
    rows = {row.name: row for row in report.predictors}
    assert [row.name for row in report.predictors] == ["v1", "v2", "v3"]
    assert report.primary == "v1" and report.counted
    assert [rows[n].role for n in ("v1", "v2", "v3")] == ["primary", "challenger", "shadow"]
    assert [rows[n].traffic for n in ("v1", "v2", "v3")] == [90, 10, 0]
    assert rows["v1"].error_rate == pytest.approx(0.01) and rows["v2"].error_rate == 0.03
    assert rows["v1"].latency_p50 == pytest.approx(0.0075)  # the middle of (5 ms, 10 ms]
    assert rows["v2"].latency_p50 is None  # no latency counted
    assert rows["v1"].mean_reward == 0.5 and rows["v2"].success_rate == 0.7
    assert rows["v3"].differed_share == pytest.approx(0.15)
    assert rows["v1"].differed_share is None and rows["v1"].test is None
    test = rows["v2"].test
    assert test is not None and test.enough_data and test.method == Z_TEST
    assert test.p_value == pytest.approx(0.0038924, abs=2e-7) and test.significant
    assert test.difference == pytest.approx(0.2) and "better" in test.summary
    assert rows["v3"].test is None


def test_not_enough_data_below_the_minimum_and_fisher_for_small_expected_counts():
    few = compare_report(
        record(CANARY), [counters("v1", 500, 250), counters("v2", MIN_FEEDBACK - 1, 19)]
    )
    test = few.predictors[1].test
    assert test is not None and not test.enough_data and not test.significant
    assert test.p_value is None and "not enough data" in test.summary
    assert f"v2 has {MIN_FEEDBACK - 1}" in test.summary
    rare = compare_report(record(CANARY), [counters("v1", 20, 1), counters("v2", 20, 7)])
    test = rare.predictors[1].test
    assert test is not None and test.method == FISHER and test.statistic is None
    assert test.p_value == pytest.approx(fisher_exact_p(1, 20, 7, 20)) and test.significant
    nothing = compare_report(record(CANARY), [])
    assert not nothing.counted and all(r.requests == 0 for r in nothing.predictors)


# ---- the service on the memory engine -----------------------------------------------------


@pytest.fixture
def engine(groups_file: Path) -> MemoryEngine:
    return MemoryEngine(config_store=ConfigStore(groups_file))


@pytest.fixture
def service(engine: MemoryEngine, groups_file: Path) -> DeploymentService:
    return DeploymentService(engine, ConfigStore(groups_file), bcrypt_rounds=4)


async def test_compare_reads_the_engines_counters_for_members_only(service, engine):
    created = await service.create(OWNER, {"spec": CANARY})
    engine.set_counters(created.id, counters("v1", 100, 50), counters("v2", 100, 70))
    report = await service.compare(OWNER, created.id)
    assert report.predictors[1].test is not None and report.predictors[1].test.significant
    assert (await service.compare("bob", created.id)).deployment_id == created.id
    with pytest.raises(NotFound, match=created.id):
        await service.compare("carol", created.id)


async def test_promote_keeps_history_and_a_rollback_brings_the_split_back(service):
    created = await service.create(OWNER, {"spec": CANARY})
    promoted = await service.promote(OWNER, created.id, {"predictor": "v2"})
    assert [(p.name, p.traffic) for p in promoted.spec.predictors] == [("v2", 100)]
    assert promoted.spec.predictors[0].model_image == IMAGE.format("v2")
    history = await service.history(OWNER, created.id)
    assert [h.revision for h in history] == [2, 1]
    assert history[0].update_message == "promote v2"

    async def deployed() -> bool:
        return (await service.get(OWNER, created.id)).status.phase.value == "Deployed"

    await wait_until(deployed, what="the promoted deployment to settle")
    rolled = await service.rollback(OWNER, created.id, 1)
    assert rolled.spec.weights() == {"v1": 90, "v2": 10}
    assert rolled.spec.shadow is not None and rolled.spec.shadow.name == "v3"
    assert [h.revision for h in await service.history(OWNER, created.id)] == [3, 2, 1]
    shipped = await service.promote(OWNER, created.id, {"predictor": "v1", "updateMessage": "ship"})
    assert shipped.spec.weights() == {"v1": 100} and shipped.spec.shadow is None
    assert (await service.history(OWNER, created.id))[0].update_message == "ship"
    # Promoting the only predictor again changes nothing: no new history entry.
    await service.promote(OWNER, created.id, {"predictor": "v1"})
    assert len(await service.history(OWNER, created.id)) == 4


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"predictor": "v9"}, "predictor", "no predictor 'v9'"),
        ({"predictor": "v3"}, "predictor", "is a shadow"),
        ({"predictor": ""}, "predictor", "at least 1"),
        ({"predictor": 3}, "predictor", "string"),
        ({}, "predictor", "required"),
        ({"predictor": "v2", "weight": 1}, "", "unknown fields: weight"),
    ],
)
async def test_promote_refuses_what_it_cannot_promote_naming_the_field(service, body, field, words):
    created = await service.create(OWNER, {"spec": CANARY})
    with pytest.raises(ValidationError, match=words) as caught:
        await service.promote(OWNER, created.id, body)
    assert caught.value.status == 422
    assert caught.value.details[0]["field"] == field
    assert len(await service.history(OWNER, created.id)) == 1


# ---- REST -------------------------------------------------------------------------------


@pytest.fixture
def jp_server_config(jp_server_config: dict) -> dict:
    jp_server_config["PrimeHubApp"]["engine_class"] = "tests.engines.memory.MemoryEngine"
    return jp_server_config


async def test_rest_compare_and_promote(api, jp_serverapp):
    created = await api.ok("POST", "deployments", {"spec": CANARY})
    engine = jp_serverapp.web_app.settings["primehub_app"].engine
    engine.set_counters(
        created["id"],
        counters("v1", 100, 50, requests=120),
        counters("v2", 100, 70, requests=20),
        counters("v3", compared=40, differed=10),
    )
    report = await api.ok("GET", f"deployments/{created['id']}/compare")
    assert report["primary"] == "v1" and report["alpha"] == 0.05
    v1, v2, v3 = report["predictors"]
    assert (v1["requests"], v2["successRate"], v3["differedShare"]) == (120, 0.7, 0.25)
    assert v2["test"]["significant"] is True and v2["test"]["pValue"] < 0.005
    assert v2["test"]["method"] == Z_TEST

    promoted = await api.ok("POST", f"deployments/{created['id']}/promote", {"predictor": "v2"})
    assert [p["name"] for p in promoted["spec"]["predictors"]] == ["v2"]
    assert promoted["status"]["history"][0]["updateMessage"] == "promote v2"
    rolled = await api.ok("POST", f"deployments/{created['id']}/rollback", {"revision": 1})
    assert [p.get("traffic") for p in rolled["spec"]["predictors"]] == [90, 10, None]
    after = await api.ok("GET", f"deployments/{created['id']}/compare")
    assert [row["name"] for row in after["predictors"]] == ["v1", "v2", "v3"]


async def test_rest_bad_bodies_and_others_deployments_are_4xx_never_500(api):
    created = await api.ok("POST", "deployments", {"spec": CANARY})
    promote = f"deployments/{created['id']}/promote"
    for body, status, field in [
        ({"predictor": "v3"}, 422, "predictor"),
        ({"predictor": "nope"}, 422, "predictor"),
        ({"predictor": None}, 422, "predictor"),
        (["v2"], 400, None),
        ("v2", 400, None),
    ]:
        code, answer = await api.call("POST", promote, body)
        assert code == status, (body, answer)
        assert answer["message"]
        if field:
            assert answer["details"][0]["field"] == field
    code, answer = await api.call("POST", promote, raw=b"{not json")
    assert code == 400 and "not valid JSON" in answer["message"]
    code, answer = await api.call("POST", promote)
    assert code == 400
    carol = api.as_user("carol")
    for method, path, body in [
        ("GET", f"deployments/{created['id']}/compare", None),
        ("POST", promote, {"predictor": "v2"}),
        ("GET", "deployments/nope/compare", None),
    ]:
        code, answer = await carol.call(method, path, body)
        assert code == 404 and "not found" in answer["message"]
    history = await api.ok("GET", f"deployments/{created['id']}/history")
    assert len(history["history"]) == 1


# ---- the notebook and the CLI, against that server over real HTTP -------------------------


@pytest.fixture
def remote(jp_serverapp, jp_http_port: int, jp_base_url: str):
    """The server's URL for the synchronous clients (run in a thread: the server is on ours)."""
    return f"http://127.0.0.1:{jp_http_port}{jp_base_url}"


async def canary_with_counts(api, jp_serverapp) -> str:
    created = await api.ok("POST", "deployments", {"spec": CANARY})
    buckets = [0] * len(LATENCY_BUCKETS)
    buckets[4] = 100
    jp_serverapp.web_app.settings["primehub_app"].engine.set_counters(
        created["id"],
        counters("v1", 100, 50, requests=120, errors=6, latency_buckets=buckets),
        counters("v2", 10, 7, requests=20),
        counters("v3", compared=40, differed=10),
    )
    return created["id"]


async def test_magic_compare_table_chart_and_promote(api, jp_serverapp, remote):
    import asyncio

    from primehub_jupyter.core.charts import MIMETYPE
    from primehub_jupyter.kernel.client import Client
    from primehub_jupyter.kernel.deployment import Deployment
    from primehub_jupyter.kernel.magics import DeploymentMagics, MagicFailed

    deployment_id = await canary_with_counts(api, jp_serverapp)
    magics = DeploymentMagics(shell=None)
    magics._client = Client(remote, OWNER)
    view = await asyncio.to_thread(magics.phdeploy, f"compare {deployment_id}")
    text = repr(view)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["predictor", "role", "traffic"]
    assert lines[1].split()[:6] == ["v1", "primary", "90%", "120", "5.0%", "17.5"]
    assert "not enough data" in lines[2]  # v2 has 10 feedback, fewer than 20
    assert "differs in 25.0% of 40 answers" in lines[3]
    assert "two-proportion z-test" in text
    html = view._repr_html_()
    assert "<table" in html and "not enough data: 20 feedback needed" in html
    chart = view.chart_bundle()[MIMETYPE]
    latency, success = chart["hconcat"]
    assert {r["predictor"] for r in latency["data"]["values"]} == {"v1"}
    assert [r["value"] for r in success["data"]["values"]] == [0.5, 0.7]

    promoted = await asyncio.to_thread(
        magics.phdeploy, f"promote {deployment_id} v2 -m 'v2 wins' --no-wait"
    )
    assert isinstance(promoted, Deployment)
    assert [p["name"] for p in promoted.spec["predictors"]] == ["v2"]
    assert (await api.ok("GET", f"deployments/{deployment_id}/history"))["history"][0][
        "updateMessage"
    ] == "v2 wins"
    with pytest.raises(MagicFailed, match="no predictor 'v1'"):
        await asyncio.to_thread(magics.phdeploy, f"promote {deployment_id} v1")
    with pytest.raises(MagicFailed, match="the following arguments are required: predictor"):
        await asyncio.to_thread(magics.phdeploy, f"promote {deployment_id}")
    again = Deployment(promoted.data, magics.client)
    assert "v2" in repr(await asyncio.to_thread(again.compare))


async def test_cli_compare_table_json_and_promote(api, jp_serverapp, remote):
    import asyncio
    import json

    from click.testing import CliRunner

    from primehub_jupyter.cli import cli

    deployment_id = await canary_with_counts(api, jp_serverapp)
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(cli, ["--url", remote, "--token", OWNER, *args])

    table_run = await asyncio.to_thread(run, "compare", deployment_id)
    assert table_run.exit_code == 0, table_run.output
    assert "PREDICTOR" in table_run.output and "AGAINST THE PRIMARY" in table_run.output
    assert "differs in 25.0% of 40 answers" in table_run.output
    assert "v2: not enough data" in table_run.output
    as_json = await asyncio.to_thread(run, "compare", deployment_id, "--json")
    report = json.loads(as_json.output)
    assert [r["name"] for r in report["predictors"]] == ["v1", "v2", "v3"]

    refused = await asyncio.to_thread(run, "promote", deployment_id, "v3", "-y")
    assert refused.exit_code == 1 and "is a shadow" in refused.output
    unconfirmed = await asyncio.to_thread(run, "promote", deployment_id, "v2")
    assert unconfirmed.exit_code == 1 and "pass -y/--yes to promote" in unconfirmed.output
    done = await asyncio.to_thread(run, "promote", deployment_id, "v2", "-y")
    assert done.exit_code == 0, done.output
    assert "registry.example.com/iris:v2" in done.output
    history = (await api.ok("GET", f"deployments/{deployment_id}/history"))["history"]
    assert [h["updateMessage"] for h in history] == ["promote v2", ""]
    gone = await asyncio.to_thread(run, "compare", "nope")
    assert gone.exit_code == 1 and "not found" in gone.output


async def test_panel_compare_tab_shows_the_test_and_promotes_after_a_yes(api, jp_serverapp, remote):
    import asyncio

    from primehub_jupyter.kernel.client import Client
    from primehub_jupyter.kernel.panel_views import DeploymentDetail

    deployment_id = await canary_with_counts(api, jp_serverapp)

    def open_compare() -> DeploymentDetail:
        detail = DeploymentDetail(Client(remote, OWNER), deployment_id, print, print)
        detail.tabs.selected_index = detail.TABS.index("Compare")
        return detail

    detail = await asyncio.to_thread(open_compare)
    tab = detail.compare
    assert "not enough data" in tab.table.value and "differs in 25.0%" in tab.table.value
    assert len(tab.chart.outputs) == 1  # the Vega-Lite bars
    assert tab.predictor.options == ("v1", "v2") and tab.predictor.value == "v2"
    tab.promote_button.click()
    question, _yes, cancel = tab.confirm.children
    assert "remove v1, v3" in question.value
    cancel.click()
    assert tab.confirm.children == ()
    tab.promote_button.click()
    await asyncio.to_thread(tab.confirm.children[1].click)
    deployment = await api.ok("GET", f"deployments/{deployment_id}")
    assert [p["name"] for p in deployment["spec"]["predictors"]] == ["v2"]
    assert "now answers every request" in tab.message.value
    assert "nothing to compare" in tab.table.value and tab.promote_button.disabled
