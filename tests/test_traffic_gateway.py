"""The gateway's traffic split: weights, sticky header, predictor header, shadow, feedback join."""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.gateway_backends import (
    Backend,
    Gateway,
    RawServer,
    closed_port,
    run_load,
    start_backend,
    start_gateway,
    stop,
)

ADMIN_TOKEN = "adm-" + secrets.token_urlsafe(24)
PREDICT = "/api/v1.0/predictions"
PREDICTOR = "X-PrimeHub-Predictor"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("gateway"), ADMIN_TOKEN)
    yield gw
    stop(gw.process)


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, Backend]]:
    started = {name: start_backend(name) for name in ("A", "B", "S")}
    yield started
    for backend in started.values():
        backend.kill()


def predictor(name: str, traffic: int | None, *urls: str, shadow: bool = False) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "shadow": shadow,
        "replicas": [{"name": f"{name}-{i}", "url": url} for i, url in enumerate(urls)],
    }
    if traffic is not None:
        entry["traffic"] = traffic
    return entry


def entry(*predictors: dict[str, Any], sticky: str | None = None) -> dict[str, Any]:
    return {
        "phase": "Deployed",
        "message": "",
        "accessType": "public",
        "stickyHeader": sticky,
        "predictors": list(predictors),
    }


def load(gateway: Gateway) -> dict[str, Any]:
    response = requests.get(f"{gateway.url}/_primehub/load", headers=gateway.admin(), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["deployments"]


def counters(gateway: Gateway, dep_id: str, name: str) -> dict[str, Any]:
    return load(gateway)[dep_id]["predictors"][name]["counters"]


def wait_for(predicate: Any, what: str, limit: float = 60) -> Any:
    """Poll until truthy; the limit only bounds a hang."""
    deadline = time.monotonic() + limit
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def test_a_90_10_split_lands_within_two_points_and_names_the_predictor(
    gateway: Gateway, backends: dict[str, Backend]
) -> None:
    gateway.route(
        split=entry(predictor("v1", 90, backends["A"].url), predictor("v2", 10, backends["B"].url))
    )
    seen: Counter[str] = Counter()
    with requests.Session() as session:
        for _ in range(1000):
            answer = session.post(gateway.endpoint("split", PREDICT), json={}, timeout=10)
            assert answer.status_code == 200
            # The header names the predictor whose replica answered.
            assert {"v1": "A", "v2": "B"}[answer.headers[PREDICTOR]] == answer.json()["name"]
            seen[answer.headers[PREDICTOR]] += 1
    assert abs(seen["v2"] / 1000 - 0.10) <= 0.02, seen
    counted = load(gateway)["split"]["predictors"]
    assert counted["v1"]["counters"]["requests"] == seen["v1"]
    assert counted["v2"]["counters"]["requests"] == seen["v2"]
    assert sum(counted["v2"]["counters"]["latencyBuckets"]) == seen["v2"]
    assert counted["v1"]["inFlight"] == 0 and counted["v1"]["lastRequestAt"] >= 0


def test_the_sticky_header_keeps_a_user_on_one_predictor(
    gateway: Gateway, backends: dict[str, Backend]
) -> None:
    gateway.route(
        sticky=entry(
            predictor("v1", 50, backends["A"].url),
            predictor("v2", 50, backends["B"].url),
            sticky="X-User",
        )
    )
    url = gateway.endpoint("sticky", PREDICT)
    chosen: dict[str, set[str]] = {}
    for _ in range(3):
        for user in range(40):
            answer = requests.post(url, json={}, headers={"X-User": f"user-{user}"}, timeout=10)
            chosen.setdefault(f"user-{user}", set()).add(answer.headers[PREDICTOR])
    assert all(len(names) == 1 for names in chosen.values()), chosen
    # The values spread over both predictors; requests without the header still split.
    assert {next(iter(n)) for n in chosen.values()} == {"v1", "v2"}
    anonymous = Counter(
        requests.post(url, json={}, timeout=10).headers[PREDICTOR] for _ in range(20)
    )
    assert anonymous == {"v1": 10, "v2": 10}


def test_a_weight_change_fails_no_request_and_keeps_the_counters(
    gateway: Gateway, backends: dict[str, Backend]
) -> None:
    a, b = backends["A"].url, backends["B"].url
    gateway.route(shift=entry(predictor("v1", 100, a), predictor("v2", 0, b)))
    before = counters(gateway, "shift", "v1")["requests"]

    def shift() -> None:
        gateway.route(shift=entry(predictor("v1", 50, a), predictor("v2", 50, b)))

    results = run_load(gateway.endpoint("shift", PREDICT), 400, 8, 100, shift)
    assert all(status == 200 for status, _ in results), [r for r in results if r[0] != 200][:3]
    names = Counter(name for _, name in results)
    assert names["B"] > 0 and names["A"] > 100
    v1 = counters(gateway, "shift", "v1")["requests"] - before
    assert v1 == names["A"]  # the counters survived the table update
    assert load(gateway)["shift"]["predictors"]["v1"]["inFlight"] == 0


def test_no_ready_replica_is_503_naming_the_predictor(gateway: Gateway) -> None:
    gateway.route(empty=entry(predictor("v1", None)))
    answer = requests.post(gateway.endpoint("empty", PREDICT), json={}, timeout=10)
    assert answer.status_code == 503 and answer.headers[PREDICTOR] == "v1"
    assert "no ready replica" in answer.json()["message"]


def test_a_predictor_without_replicas_leaves_its_share_to_the_others(
    gateway: Gateway, backends: dict[str, Backend]
) -> None:
    gateway.route(half=entry(predictor("v1", 50, backends["A"].url), predictor("v2", 50)))
    names = {
        requests.post(gateway.endpoint("half", PREDICT), json={}, timeout=10).headers[PREDICTOR]
        for _ in range(10)
    }
    assert names == {"v1"}


def test_feedback_goes_to_the_predictor_that_answered(
    gateway: Gateway, backends: dict[str, Backend]
) -> None:
    gateway.route(
        fb=entry(predictor("v1", 50, backends["A"].url), predictor("v2", 50, backends["B"].url))
    )
    answered: dict[str, str] = {}
    for index in range(20):
        request_id = f"req-{index}"
        answer = requests.post(
            gateway.endpoint("fb", PREDICT), json={}, headers={"Request-ID": request_id}, timeout=10
        )
        answered[request_id] = answer.headers[PREDICTOR]
    assert set(answered.values()) == {"v1", "v2"}
    rewards = {"v1": 0.0, "v2": 0.0}
    successes = {"v1": 0, "v2": 0}
    for index, (request_id, name) in enumerate(answered.items()):
        reward = float(index % 2)
        if index % 3:
            # Seldon feedback names the prediction in its response's meta.puid.
            body = {"response": {"meta": {"puid": request_id}}, "reward": reward}
            answer = requests.post(
                gateway.endpoint("fb", "/api/v1.0/feedback"), json=body, timeout=10
            )
        else:
            # ODAHU-style feedback names it in the Request-ID header.
            answer = requests.post(
                gateway.endpoint("fb", "/api/v1.0/feedback"),
                json={"reward": reward},
                headers={"Request-ID": request_id},
                timeout=10,
            )
        assert answer.status_code == 200
        assert answer.headers[PREDICTOR] == name
        assert answer.json()["name"] == {"v1": "A", "v2": "B"}[name]
        rewards[name] += reward
        successes[name] += reward > 0
    for name in ("v1", "v2"):
        counted = counters(gateway, "fb", name)
        assert counted["feedback"] == sum(1 for n in answered.values() if n == name)
        assert counted["rewardSum"] == rewards[name]
        assert counted["successes"] == successes[name]
    # Feedback about an unknown request goes by the weights and is not counted.
    stray = requests.post(
        gateway.endpoint("fb", "/api/v1.0/feedback"),
        json={"response": {"meta": {"puid": "unknown"}}, "reward": 1},
        timeout=10,
    )
    assert stray.status_code == 200
    assert sum(counters(gateway, "fb", n)["feedback"] for n in ("v1", "v2")) == len(answered)


def _fixed(body: dict[str, Any]) -> RawServer:
    text = json.dumps(body).encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
    return RawServer(head + b"Content-Length: %d\r\n\r\n" % len(text) + text)


def test_shadow_answers_are_compared_never_returned(gateway: Gateway) -> None:
    primary = _fixed({"data": {"ndarray": [[0.1, 0.9]]}, "meta": {"puid": "p"}})
    # Within the tolerance, and a different meta: the same answer.
    close = _fixed({"data": {"ndarray": [[0.1 + 1e-9, 0.9]]}, "meta": {"puid": "s"}})
    other = _fixed({"data": {"ndarray": [[0.8, 0.2]]}})
    try:
        for dep_id, shadow in (("same", close), ("differs", other)):
            gateway.route(
                **{
                    dep_id: entry(
                        predictor("main", None, primary.url),
                        predictor("shadow", None, shadow.url, shadow=True),
                    )
                }
            )
            for _ in range(10):
                answer = requests.post(gateway.endpoint(dep_id, PREDICT), json={}, timeout=10)
                assert answer.status_code == 200 and answer.headers[PREDICTOR] == "main"
                assert answer.json()["meta"]["puid"] == "p"  # never the shadow's answer
            shadowed = wait_for(
                lambda d=dep_id: (c := counters(gateway, d, "shadow"))["compared"] == 10 and c,
                "ten comparisons",
            )
            assert shadowed["shadow"] is True and shadowed["requests"] == 10
            assert shadowed["differed"] == (0 if dep_id == "same" else 10)
            assert counters(gateway, dep_id, "main")["requests"] == 10
    finally:
        for server in (primary, close, other):
            server.close()


def test_a_held_shadow_delays_no_primary_answer(gateway: Gateway, tmp_path: Path) -> None:
    primary, shadow = start_backend("P"), start_backend("H")
    release = tmp_path / "release"
    try:
        gateway.route(
            held=entry(
                predictor("main", None, primary.url),
                predictor("shadow", None, shadow.url, shadow=True),
            )
        )
        url = gateway.endpoint("held", f"{PREDICT}?hold=H&release={release}")
        first = requests.post(url, json={}, timeout=10)
        assert first.status_code == 200 and first.json()["name"] == "P"
        assert shadow.process.stdout is not None
        assert shadow.process.stdout.readline().decode().strip() == "HELD"
        # The shadow holds its copies (four workers, then a full queue): the primary answers all.
        with requests.Session() as session:
            for _ in range(300):
                answer = session.post(url, json={}, timeout=10)
                assert answer.status_code == 200 and answer.json()["name"] == "P"
        assert not release.exists()  # every answer above came while the shadow was held
        state = load(gateway)["held"]["predictors"]
        assert state["shadow"]["inFlight"] >= 1
        assert state["shadow"]["shadowDropped"] > 0  # bounded: copies beyond the queue dropped
        assert state["main"]["counters"]["requests"] == 301
        release.touch()
        wait_for(lambda: load(gateway)["held"]["predictors"]["shadow"]["inFlight"] == 0, "drain")
    finally:
        release.touch()
        primary.kill()
        shadow.kill()


def test_a_dead_shadow_fails_no_primary_answer(
    gateway: Gateway, backends: dict[str, Backend]
) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    gateway.route(
        dead=entry(
            predictor("main", None, backends["A"].url), predictor("s", None, dead, shadow=True)
        )
    )
    for _ in range(20):
        assert (
            requests.post(gateway.endpoint("dead", PREDICT), json={}, timeout=10).status_code == 200
        )
    shadowed = wait_for(
        lambda: (c := counters(gateway, "dead", "s"))["errors"] == 20 and c, "shadow errors"
    )
    assert shadowed["compared"] == 0


def _samples(gateway: Gateway) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{gateway.url}/_primehub/metrics", headers=gateway.admin(), timeout=10)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text.text)
        for sample in family.samples
    }


def test_metrics_carry_the_predictor(gateway: Gateway, backends: dict[str, Backend]) -> None:
    gateway.route(
        labelled=entry(
            predictor("v1", 50, backends["A"].url), predictor("v2", 50, backends["B"].url)
        )
    )
    for _ in range(4):
        requests.post(gateway.endpoint("labelled", PREDICT), json={}, timeout=10)
    samples = _samples(gateway)
    for name in ("v1", "v2"):
        labels = {"deployment": "labelled", "predictor": name}
        total = frozenset({**labels, "code": "200", "kind": "predict"}.items())
        assert samples[("primehub_gateway_requests_total", total)] == 2
        assert samples[("primehub_gateway_in_flight", frozenset(labels.items()))] == 0
    # Promoted away: the series of a predictor no longer in the table go.
    gateway.route(labelled=entry(predictor("v1", None, backends["A"].url)))
    left = [labels for _, labels in _samples(gateway) if ("deployment", "labelled") in labels]
    assert left and not any(("predictor", "v2") in labels for labels in left)


def test_load_needs_the_admin_token(gateway: Gateway) -> None:
    url = f"{gateway.url}/_primehub/load"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.post(url, headers=gateway.admin(), timeout=10).status_code == 405


@pytest.mark.parametrize(
    ("predictors", "fragment"),
    [
        ([{"name": "a", "traffic": 60}, {"name": "b", "traffic": 30}], "must sum to 100 (got 90)"),
        ([{"name": "a", "traffic": 100}, {"name": "a", "traffic": 0}], "names must be unique (a)"),
        ([{"name": "a"}, {"name": "b"}], "traffic is required"),
        ([{"name": "a"}, {"name": "s", "shadow": True, "traffic": 5}], "predictors[1]: a shadow"),
        (
            [{"name": "a"}, {"name": "s", "shadow": True}, {"name": "t", "shadow": True}],
            "at most one shadow (s, t)",
        ),
        ([{"name": "s", "shadow": True}], "a shadow needs a predictor that answers"),
        ([{"name": "-a"}], "predictors[0].name must be"),
        ([{"name": "a", "traffic": "100"}], "predictors[0].traffic must be an integer"),
        ([{"name": "a", "traffic": True}], "predictors[0].traffic must be an integer"),
        ([{"name": "a", "shadow": "yes"}], "predictors[0].shadow must be true or false"),
        ([{"name": "a", "replicas": [{"url": "ftp://h"}]}], "predictors[0].replicas[0].url"),
        ([{"name": n} for n in "abcde"], "at most 4 predictors"),
        ("a", "predictors must be a list"),
    ],
)
def test_bad_predictors_are_refused_with_the_field(
    gateway: Gateway, predictors: Any, fragment: str
) -> None:
    answer = gateway.put_routes({"deployments": {"bad": {"predictors": predictors}}})
    assert answer.status_code == 200
    reason = answer.json()["rejected"]["bad"]
    assert fragment in reason and reason.startswith("deployments.bad"), reason


def test_a_bad_sticky_header_or_both_replica_lists_are_refused(gateway: Gateway) -> None:
    for bad, fragment in (
        ({"stickyHeader": "X User", "predictors": []}, "stickyHeader must be"),
        ({"predictors": [], "replicas": []}, "not replicas too"),
    ):
        answer = gateway.put_routes({"deployments": {"bad": bad}})
        assert fragment in answer.json()["rejected"]["bad"]
