"""Properties of the gateway's parsers: any routing table, any request path, never a crash."""

from __future__ import annotations

import posixpath
from typing import Any
from urllib.parse import unquote

import bcrypt
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from primehub_jupyter.gateway.routes import Route, RouteError, parse_routes
from primehub_jupyter.gateway.server import unsafe_path

HASH = bcrypt.hashpw(b"token", bcrypt.gensalt(rounds=4)).decode()
# Deterministic and bounded: a fixed example budget, no example database between runs.
BOUNDED = settings(
    max_examples=400,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
# Values near the real shape, so the search reaches every field check, not only the first.
ids = st.sampled_from(["iris", "a-1", "Bad_Id", "-x", "a" * 64, "", "x\n", "é"]) | st.text(
    max_size=70
)
urls = st.sampled_from(
    [
        "http://127.0.0.1:8080",
        "https://h",
        "http://[::1]:80",
        "http://[::1",
        "http://h:99999",
        "http://h:1/p",
        "ftp://h:1",
        "http://u:p@h:1",
        "http://\uff48:1",  # fullwidth h: urlsplit raises on NFKC forms
        "http://h:1?q",
        "http://h:-1",
    ]
) | st.text(max_size=30)
names = st.sampled_from(["alice", "ok\n", "a:b", "", "x" * 300, "é"]) | st.text(max_size=12)
hashes = st.sampled_from([HASH, "plain", "$2b$04$" + "é" * 53, HASH[:-1]]) | json_values
replicas = (
    st.fixed_dictionaries({}, optional={"name": names | json_values, "url": urls | json_values})
    | json_values
)
predictor_entries = (
    st.fixed_dictionaries(
        {},
        optional={
            "name": st.sampled_from(["v1", "v2", "a.b_c", "-x", "", "x" * 64]) | json_values,
            "traffic": st.sampled_from([0, 10, 50, 90, 100, 101, -1, True, "50"]) | json_values,
            "shadow": st.booleans() | json_values,
            "phase": st.sampled_from(["Deployed", "Deploying"]) | json_values,
            "replicas": st.lists(replicas, max_size=2) | json_values,
        },
    )
    | json_values
)
entries = (
    st.fixed_dictionaries(
        {},
        optional={
            "phase": st.sampled_from(["Deployed", "Failed"]) | json_values,
            "message": st.text(max_size=20) | json_values,
            "accessType": st.sampled_from(["public", "private", "secret"]) | json_values,
            "clients": st.dictionaries(names, hashes, max_size=3) | json_values,
            "replicas": st.lists(replicas, max_size=3) | json_values,
            "predictors": st.lists(predictor_entries, max_size=5) | json_values,
            "stickyHeader": st.sampled_from(["X-User", "X User", ""]) | json_values,
        },
    )
    | json_values
)
tables = st.fixed_dictionaries({"deployments": st.dictionaries(ids, entries, max_size=4)})
documents = tables | json_values | st.fixed_dictionaries({"deployments": json_values})


@BOUNDED
@given(documents)
@example({"deployments": {"ok": {"clients": {"ok\n": HASH}}, "fine": {}}})
@example({"deployments": {"ok": {"replicas": [{"name": "r", "url": "http://[::1"}]}}})
def test_any_document_gives_a_table_and_rejections_or_a_route_error(document: Any) -> None:
    try:
        routes, rejected = parse_routes(document)
    except RouteError as exc:
        assert str(exc)
        return
    submitted = document["deployments"]
    assert set(routes).isdisjoint(rejected)
    # Every entry is either routed or reported (under its id, cut to 80 characters).
    for key in submitted:
        assert key in routes or key[:80] in rejected, key
    assert set(routes) <= set(submitted)
    for dep_id, route in routes.items():
        assert route.id == dep_id
        assert all(r.host_header.decode("ascii") for r in route.replicas)
        assert all(name.isascii() and name.isprintable() for name in route.clients)
        # What the gateway routes by is always consistent: unique names, one shadow at most,
        # the answering predictors' weights summing to 100.
        names = [p.name for p in route.predictors]
        assert len(names) == len(set(names)) and len(names) <= 4
        assert sum(p.shadow for p in route.predictors) <= 1
        answering = [p for p in route.predictors if not p.shadow]
        assert not answering or sum(p.traffic for p in answering) == 100
        assert all(p.traffic == 0 for p in route.predictors if p.shadow)
    for reason in rejected.values():
        assert isinstance(reason, str) and reason


def _split_route(weights: list[int]) -> Route:
    document = {
        "deployments": {
            "d": {
                "predictors": [
                    {"name": f"p{i}", "traffic": w, "replicas": [{"url": "http://h:1"}]}
                    for i, w in enumerate(weights)
                ]
            }
        }
    }
    routes, rejected = parse_routes(document)
    assert not rejected, rejected
    return routes["d"]


weight_lists = (
    st.lists(st.integers(0, 100), min_size=1, max_size=3)
    .map(lambda ws: [*ws, 100 - sum(ws)] if sum(ws) <= 100 else None)
    .filter(lambda ws: ws is not None and len(ws) <= 4)
)


@BOUNDED
@given(weight_lists, st.lists(st.text(max_size=12), max_size=20))
def test_the_split_is_exact_per_hundred_and_sticky_values_stay(
    weights: list[int], values: list[str]
) -> None:
    route = _split_route(weights)
    for _ in range(2):
        chosen = [route.choose() for _ in range(100)]
        assert [sum(1 for c in chosen if c is p) for p in route.predictors] == weights
    sticky = {value: route.choose(value) for value in values}
    again = _split_route(weights)  # another gateway (or after a restart): the same choice
    for value, predictor in sticky.items():
        assert predictor is not None and predictor.traffic > 0
        assert again.choose(value).name == predictor.name  # type: ignore[union-attr]


path_pieces = st.sampled_from(
    ["..", ".", "%2e", "%2E", "%2f", "%2F", "%5c", "\\", "/", "secret", "api", "%00", "%25", "x"]
)
tails = st.lists(path_pieces, max_size=8).map("".join) | st.text(max_size=20)


@BOUNDED
@given(tails)
@example("..%2Fsecret")
@example("%2e%2e/secret")
def test_a_path_the_gateway_accepts_never_leaves_its_deployment(tail: str) -> None:
    path = f"/deployment/pub/{tail}"
    if unsafe_path(path):
        return
    # However a server behind the gateway decodes (once) and normalises it, it stays under pub.
    for view in (path, unquote(path)):
        for candidate in (view, view.replace("\\", "/")):
            resolved = posixpath.normpath(candidate)
            assert resolved == "/deployment/pub" or resolved.startswith("/deployment/pub/"), (
                tail,
                resolved,
            )
