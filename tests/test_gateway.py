"""The local gateway as a real process: admin API, routing, auth, retries, logs, shutdown."""

from __future__ import annotations

import base64
import itertools
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import requests

from primehub_jupyter.gateway.auth import internal_token

from .gateway_backends import (
    REPO,
    Backend,
    Gateway,
    RawServer,
    closed_port,
    post_from,
    run_load,
    start_backend,
    start_gateway,
    stop,
)

ADMIN_TOKEN = "adm-" + secrets.token_urlsafe(24)
ALICE_TOKEN = "tok-" + secrets.token_urlsafe(24)
# Cost 4 keeps the tests fast; the gateway treats every cost the same way.
ALICE_HASH = bcrypt.hashpw(ALICE_TOKEN.encode(), bcrypt.gensalt(rounds=4)).decode()
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("gateway"), ADMIN_TOKEN, "--access-log")
    yield gw
    stop(gw.process)


@pytest.fixture(scope="module")
def backend_a() -> Iterator[Backend]:
    backend = start_backend("A")
    yield backend
    backend.kill()


@pytest.fixture(scope="module")
def backend_b() -> Iterator[Backend]:
    backend = start_backend("B")
    yield backend
    backend.kill()


@pytest.fixture
def spare_backends() -> Iterator[list[Backend]]:
    """Two fresh backends a test may kill."""
    backends = [start_backend("K1"), start_backend("K2")]
    yield backends
    for backend in backends:
        backend.kill()


def replicas(*backends: Backend | str) -> list[dict[str, str]]:
    """Routing-table replicas for backends (or raw URLs)."""
    out = []
    for index, item in enumerate(backends):
        if isinstance(item, Backend):
            out.append({"name": f"r-{item.name}", "url": item.url})
        else:
            out.append({"name": f"r-url{index}", "url": item})
    return out


def public(*backends: Backend | str) -> dict[str, Any]:
    """A public, deployed route over `backends`."""
    return {
        "phase": "Deployed",
        "message": "",
        "accessType": "public",
        "replicas": replicas(*backends),
    }


def private(*backends: Backend, clients: dict[str, str] | None = None) -> dict[str, Any]:
    """A private route whose only client is alice (unless `clients` says otherwise)."""
    route = public(*backends)
    route["accessType"] = "private"
    route["clients"] = {"alice": ALICE_HASH} if clients is None else clients
    return route


def header(echo: dict[str, Any], name: str) -> list[str]:
    """All values of a header the backend received."""
    return [v for k, v in echo["headers"] if k.lower() == name.lower()]


# --- admin API ------------------------------------------------------------------------------------


def test_admin_endpoints_need_the_admin_token(gateway: Gateway) -> None:
    assert gateway.put_routes({"deployments": {}}, token="wrong").status_code == 401
    no_auth = requests.put(f"{gateway.url}/_primehub/routes", json={"deployments": {}}, timeout=10)
    assert no_auth.status_code == 401
    assert "Bearer" in no_auth.json()["message"]
    health = requests.get(f"{gateway.url}/_primehub/health", headers=gateway.admin("x"), timeout=10)
    assert health.status_code == 401


def test_health_counts_deployments(gateway: Gateway, backend_a: Backend) -> None:
    gateway.route(one=public(backend_a), two=public(), three=private(backend_a))
    health = requests.get(f"{gateway.url}/_primehub/health", headers=gateway.admin(), timeout=10)
    assert health.json() == {"ok": True, "deployments": 3}
    wrong_method = requests.get(
        f"{gateway.url}/_primehub/routes", headers=gateway.admin(), timeout=10
    )
    assert wrong_method.status_code == 405


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        ([], "JSON object"),
        ({"deployments": []}, "'deployments' must be an object"),
    ],
)
def test_malformed_tables_are_refused_and_the_old_table_stays(
    gateway: Gateway, backend_a: Backend, body: Any, fragment: str
) -> None:
    gateway.route(keep=public(backend_a))
    response = gateway.put_routes(body)
    assert response.status_code == 400
    assert fragment in response.json()["message"]
    assert requests.get(gateway.endpoint("keep", "/x"), timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("dep_id", "entry", "fragment"),
    [
        ("Bad_Id", {}, "DNS-1035"),
        ("-x", {}, "DNS-1035"),
        ("a" * 64, {}, "DNS-1035"),
        ("bad", [], "must be an object"),
        ("bad", {"replicas": [{"name": "r", "url": "ftp://h:1"}]}, "url"),
        ("bad", {"replicas": [{"name": "r", "url": "http://h:99999"}]}, "port"),
        ("bad", {"replicas": [{"name": "r", "url": "http://h:1/p"}]}, "path"),
        ("bad", {"replicas": [{"name": "r", "url": "http://[::1"}]}, "url"),
        ("bad", {"replicas": [{"name": "r\n", "url": "http://h:1"}]}, "name"),
        ("bad", {"replicas": {"name": "r"}}, "must be a list"),
        ("bad", {"accessType": "secret"}, "accessType"),
        ("bad", {"clients": {"alice": "plain"}}, "bcrypt"),
        ("bad", {"clients": {"alice": "$2b$04$" + "\u00e9" * 53}}, "bcrypt"),
        ("bad", {"clients": {"a:b": ALICE_HASH}}, "client name"),
        ("bad", {"clients": {"ok\n": ALICE_HASH}}, "client name"),
        ("bad", {"phase": 3}, "phase"),
    ],
)
def test_a_bad_entry_is_skipped_and_the_others_are_routed(
    gateway: Gateway, backend_a: Backend, dep_id: str, entry: Any, fragment: str
) -> None:
    gateway.route(old=public(backend_a))
    new = public(backend_a)
    response = gateway.put_routes({"deployments": {"new": new, dep_id: entry, "old": new}})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["ok"] is True and answer["deployments"] == 2
    assert list(answer["rejected"]) == [dep_id]
    assert fragment in answer["rejected"][dep_id]
    for routed in ("new", "old"):
        assert requests.get(gateway.endpoint(routed, "/x"), timeout=10).status_code == 200
    if dep_id == "bad":  # a refused deployment is unavailable, never served without its rules
        refused = requests.get(gateway.endpoint("bad", "/x"), timeout=10)
        assert refused.status_code == 503
        assert "refused its routing entry" in refused.json()["message"]
        assert refused.headers["Retry-After"].isdigit()
    gateway.route(new=new)
    assert requests.get(gateway.endpoint("bad", "/x"), timeout=10).status_code == 404


# --- routing --------------------------------------------------------------------------------------


def test_unknown_deployment_is_404(gateway: Gateway) -> None:
    gateway.route()
    response = requests.get(gateway.endpoint("nope", "/api/v1.0/predictions"), timeout=10)
    assert response.status_code == 404
    assert response.json() == {"message": "deployment 'nope' not found"}
    assert requests.get(f"{gateway.url}/elsewhere", timeout=10).status_code == 404


def test_no_replica_is_503_with_phase_and_message(gateway: Gateway) -> None:
    gateway.route(starting={"phase": "Deploying", "message": "loading the model", "replicas": []})
    response = requests.post(gateway.endpoint("starting", "/api/v1.0/predictions"), timeout=10)
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    assert response.json()["message"] == (
        "deployment 'starting' has no ready replica (phase: Deploying: loading the model)"
    )


def test_round_robin_spreads_over_replicas(
    gateway: Gateway, backend_a: Backend, backend_b: Backend
) -> None:
    gateway.route(rr=public(backend_a, backend_b))
    with requests.Session() as session:
        names = [
            session.get(gateway.endpoint("rr", "/x"), timeout=10).json()["name"] for _ in range(10)
        ]
    assert Counter(names) == {"A": 5, "B": 5}
    assert all(a != b for a, b in itertools.pairwise(names))


def test_method_path_query_body_and_headers_are_forwarded(
    gateway: Gateway, backend_a: Backend
) -> None:
    gateway.route(fwd=public(backend_a))
    body = bytes(range(256)) * 3
    response = requests.post(
        gateway.endpoint("fwd", "/api/v1.0/predictions?a=1&b=%2F%20x&a=2"),
        data=body,
        headers={
            "Content-Type": "application/octet-stream",
            "Request-ID": "req-123",
            "X-Request-ID": "xreq-456",
            "X-Custom": "kept",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "dropped",
            "X-Forwarded-For": "10.1.2.3",
            "X-Echo-Status": "201",
        },
        timeout=10,
    )
    assert response.status_code == 201
    assert response.headers["X-Backend"] == "A"
    echo = response.json()
    assert echo["method"] == "POST"
    assert echo["path"] == "/api/v1.0/predictions"
    assert echo["query"] == "a=1&b=%2F%20x&a=2"
    assert echo["body"].encode("latin-1") == body
    assert header(echo, "Request-ID") == ["req-123"]
    assert header(echo, "X-Request-ID") == ["xreq-456"]
    assert header(echo, "X-Custom") == ["kept"]
    assert header(echo, "Content-Type") == ["application/octet-stream"]
    assert header(echo, "X-Hop") == []
    assert header(echo, "X-Forwarded-Prefix") == ["/deployment/fwd"]
    assert header(echo, "X-Forwarded-Proto") == ["http"]
    assert header(echo, "X-Forwarded-For") == ["10.1.2.3, 127.0.0.1"]
    assert header(echo, "Host") == [f"127.0.0.1:{backend_a.port}"]

    for method in ("GET", "PUT", "PATCH", "DELETE", "OPTIONS"):
        echo = requests.request(method, gateway.endpoint("fwd", "/v2/models/m"), timeout=10).json()
        assert (echo["method"], echo["path"]) == (method, "/v2/models/m")
    head = requests.head(gateway.endpoint("fwd", "/v2/health/ready"), timeout=10)
    assert (head.status_code, head.content) == (200, b"")


def raw_exchange(gateway: Gateway, head: str, body: bytes = b"") -> bytes:
    """Send a hand-written request head, wait for the first answer, then send `body`."""
    port = int(gateway.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        first = sock.recv(65536)
        if body:
            sock.sendall(body)
            first += sock.recv(65536)
        return first


def test_large_body_and_expect_continue(gateway: Gateway, backend_a: Backend) -> None:
    gateway.route(up=public(backend_a))
    body = os.urandom(3 * 1024 * 1024)
    response = requests.put(gateway.endpoint("up", "/v2/models/m/infer"), data=body, timeout=30)
    assert response.status_code == 200
    assert response.json()["body"].encode("latin-1") == body

    head = (
        "POST /deployment/up/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n"
        "Expect: 100-continue\r\n\r\n"
    )
    answer = raw_exchange(gateway, head, b"{}")
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")

    too_big = f"POST /deployment/up/x HTTP/1.1\r\nHost: gw\r\nContent-Length: {65 << 20}\r\n\r\n"
    assert raw_exchange(gateway, too_big).startswith(b"HTTP/1.1 413 ")


def test_deployment_root_is_proxied(gateway: Gateway, backend_a: Backend) -> None:
    gateway.route(root=public(backend_a))
    for suffix in ("", "/", "?q=1"):
        response = requests.get(gateway.endpoint("root", suffix), timeout=10)
        assert response.status_code == 200, suffix
        assert response.json()["path"] == "/"


def test_large_streamed_response_arrives_intact(gateway: Gateway, backend_a: Backend) -> None:
    gateway.route(big=public(backend_a))
    size = 3 * 1024 * 1024 + 17
    response = requests.get(gateway.endpoint("big", f"/stream?size={size}"), timeout=30)
    assert response.status_code == 200
    expected = (bytes(range(256)) * 256 * (size // 65536 + 1))[:size]
    assert response.content == expected


def test_public_drops_client_identity_headers(gateway: Gateway, backend_a: Backend) -> None:
    gateway.route(pub=public(backend_a))
    echo = requests.get(
        gateway.endpoint("pub", "/x"),
        headers={"X-Forwarded-User": "mallory", "Authorization": "Basic bWFsbG9yeTp4"},
        timeout=10,
    ).json()
    assert header(echo, "X-Forwarded-User") == []
    assert header(echo, "Authorization") == []


# --- private deployments --------------------------------------------------------------------------


def test_private_requires_client_credentials(gateway: Gateway, backend_a: Backend) -> None:
    gateway.route(priv=private(backend_a))
    url = gateway.endpoint("priv", "/api/v1.0/predictions")

    missing = requests.post(url, timeout=10)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Basic realm="primehub deployment priv"'
    assert "private" in missing.json()["message"]
    assert requests.post(url, auth=("alice", "wrong"), timeout=10).status_code == 401
    assert requests.post(url, auth=("bob", ALICE_TOKEN), timeout=10).status_code == 401
    garbage = requests.post(url, headers={"Authorization": "Basic !!!"}, timeout=10)
    assert garbage.status_code == 401

    for _ in range(3):  # the first checks the hash, the others hit the cache
        response = requests.post(
            url, auth=("alice", ALICE_TOKEN), headers={"X-Forwarded-User": "mallory"}, timeout=10
        )
        assert response.status_code == 200, response.text
        echo = response.json()
        assert header(echo, "X-Forwarded-User") == ["alice"]
        assert header(echo, "Authorization") == []


def test_password_flood_is_throttled_and_public_traffic_flows(
    gateway: Gateway, backend_a: Backend
) -> None:
    slow_hash = bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=10)).decode()
    gateway.route(vault=private(backend_a, clients={"alice": slow_hash}), open=public(backend_a))
    url = gateway.endpoint("vault", "/api/v1.0/predictions")
    with ThreadPoolExecutor(100) as pool:
        flood = [
            pool.submit(post_from, "127.0.0.3", url, auth=("alice", f"guess-{i}"))
            for i in range(100)
        ]
        during = requests.get(gateway.endpoint("open", "/x"), timeout=30)
        statuses = Counter(f.result().status_code for f in flood)
    assert during.status_code == 200
    assert set(statuses) <= {401, 429}
    assert statuses[429] > 0, "more wrong passwords were hashed than the limits allow"
    # The flood came from 127.0.0.3; the right client from another address is not held back.
    assert requests.post(url, auth=("alice", "right"), timeout=30).status_code == 200


def test_changed_client_token_takes_effect_with_the_routes_update(
    gateway: Gateway, backend_a: Backend
) -> None:
    gateway.route(rot=private(backend_a))
    url = gateway.endpoint("rot", "/x")
    assert requests.get(url, auth=("alice", ALICE_TOKEN), timeout=10).status_code == 200
    new_token = secrets.token_urlsafe(16)
    new_hash = bcrypt.hashpw(new_token.encode(), bcrypt.gensalt(rounds=4)).decode()
    gateway.route(rot=private(backend_a, clients={"alice": new_hash}))
    assert requests.get(url, auth=("alice", ALICE_TOKEN), timeout=10).status_code == 401
    assert requests.get(url, auth=("alice", new_token), timeout=10).status_code == 200
    gateway.route(rot=private(backend_a, clients={}))
    assert requests.get(url, auth=("alice", new_token), timeout=10).status_code == 401


def test_control_plane_invokes_private_with_a_per_deployment_token(
    gateway: Gateway, backend_a: Backend
) -> None:
    gateway.route(priv=private(backend_a), other=private(backend_a))
    url = gateway.endpoint("priv", "/api/v1.0/predictions")
    vouched = {
        "X-PrimeHub-Internal-Token": internal_token(ADMIN_TOKEN, "priv"),
        "X-PrimeHub-User": "bob",
    }
    response = requests.post(url, headers=vouched, timeout=10)
    assert response.status_code == 200
    echo = response.json()
    assert header(echo, "X-Forwarded-User") == ["bob"]
    assert header(echo, "X-PrimeHub-Internal-Token") == []
    assert header(echo, "X-PrimeHub-User") == []
    # priv's token is no use for another deployment, and the admin token itself is no token.
    other = gateway.endpoint("other", "/api/v1.0/predictions")
    assert requests.post(other, headers=vouched, timeout=10).status_code == 401
    for token in ("guess", ADMIN_TOKEN, internal_token(ADMIN_TOKEN, "priv").upper()):
        forged = {"X-PrimeHub-Internal-Token": token, "X-PrimeHub-User": "bob"}
        assert requests.post(url, headers=forged, timeout=10).status_code == 401, token


# --- failures and retries -------------------------------------------------------------------------


def test_closed_replica_is_skipped(gateway: Gateway, backend_a: Backend) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    gateway.route(retry=public(dead, backend_a))
    with requests.Session() as session:
        for path in ("/api/v1.0/predictions", "/api/v1.0/feedback"):
            for _ in range(10):
                response = session.post(gateway.endpoint("retry", path), data=b"{}", timeout=10)
                assert response.status_code == 200
                assert response.json()["name"] == "A"


def test_unusual_replica_replies(gateway: Gateway, backend_a: Backend) -> None:
    until_close = RawServer(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nX-Raw: 1\r\n\r\nbody-until-eof"
    )
    hang_up = RawServer(b"")
    garbage = RawServer(b"SMTP ready\r\n\r\n")
    try:
        gateway.route(
            eof=public(until_close.url),
            hup=public(hang_up.url, backend_a),
            junk=public(garbage.url),
        )
        eof = requests.get(gateway.endpoint("eof", "/x"), timeout=10)
        assert (eof.status_code, eof.content, eof.headers["X-Raw"]) == (200, b"body-until-eof", "1")
        for _ in range(4):  # a replica that hangs up without answering is retried elsewhere
            hup = requests.post(gateway.endpoint("hup", "/api/v1.0/predictions"), timeout=10)
            assert hup.status_code == 200 and hup.json()["name"] == "A"
        # ... except for feedback, which must not be counted twice.
        gateway.route(hup=public(hang_up.url), junk=public(garbage.url))
        feedback = requests.post(gateway.endpoint("hup", "/api/v1.0/feedback"), timeout=10)
        assert feedback.status_code == 502
        assert "server disconnected" in feedback.json()["message"]
        junk = requests.get(gateway.endpoint("junk", "/x"), timeout=10)
        assert junk.status_code == 502
        assert "invalid HTTP response" in junk.json()["message"]
    finally:
        for server in (until_close, hang_up, garbage):
            server.close()


def test_all_replicas_down_is_502_with_the_reason(gateway: Gateway) -> None:
    dead = [f"http://127.0.0.1:{closed_port()}" for _ in range(2)]
    gateway.route(down=public(*dead))
    response = requests.post(gateway.endpoint("down", "/api/v1.0/predictions"), timeout=10)
    assert response.status_code == 502
    message = response.json()["message"]
    assert message.startswith("deployment 'down': no replica could answer")
    assert message.count("cannot connect") == 2


def test_killed_replica_under_load_fails_no_request(
    gateway: Gateway, spare_backends: list[Backend]
) -> None:
    first, second = spare_backends
    gateway.route(crash=public(first, second))
    url = gateway.endpoint("crash", "/api/v1.0/predictions?delay=0.02")
    results = run_load(url, 300, 8, at=60, action=first.kill)
    assert len(results) == 300
    assert [r for r in results if r[0] != 200] == []
    assert {name for _, name in results[:60]} == {"K1", "K2"}
    assert {name for _, name in results[-100:]} == {"K2"}


def test_switching_replicas_under_load_fails_no_request(
    gateway: Gateway, spare_backends: list[Backend]
) -> None:
    old, new = spare_backends
    gateway.route(roll=public(old))

    def roll_over() -> None:
        gateway.route(roll=public(new))
        old.kill()  # the engine stops the old replica once the gateway has the new table

    url = gateway.endpoint("roll", "/api/v1.0/predictions?delay=0.02")
    results = run_load(url, 300, 8, at=100, action=roll_over)
    assert [r for r in results if r[0] != 200] == []
    assert {name for _, name in results[:100]} == {"K1"}
    assert {name for _, name in results[-100:]} == {"K2"}


# --- process behaviour ----------------------------------------------------------------------------


def test_sigterm_finishes_in_flight_requests(tmp_path: Path, spare_backends: list[Backend]) -> None:
    gw = start_gateway(tmp_path, ADMIN_TOKEN)
    try:
        slow = spare_backends[0]
        gw.route(slow=public(slow))
        outcome: list[requests.Response] = []
        caller = threading.Thread(
            target=lambda: outcome.append(
                requests.get(gw.endpoint("slow", "/slow?seconds=1"), timeout=30)
            )
        )
        caller.start()
        slow.wait_for_slow_request()
        gw.process.send_signal(signal.SIGTERM)
        caller.join(30)
        assert outcome and outcome[0].status_code == 200
        assert outcome[0].json()["name"] == "K1"
        assert gw.process.wait(timeout=15) == 0
        assert not gw.port_file.exists()
        log = gw.log_file.read_text()
        assert "gateway stopped" in log
        assert "listening on http://127.0.0.1:" in log
    finally:
        stop(gw.process)


def test_bad_admin_token_file_exits_with_a_message(tmp_path: Path) -> None:
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "primehub_jupyter.gateway",
            "--port",
            "0",
            "--admin-token-file",
            f"{empty}",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "admin token" in result.stderr


def test_log_file_has_timestamps_and_never_a_secret(gateway: Gateway, backend_a: Backend) -> None:
    gateway.route(logged=private(backend_a))
    url = gateway.endpoint("logged", "/api/v1.0/predictions")
    requests.post(
        f"{url}?token={ALICE_TOKEN}", auth=("alice", ALICE_TOKEN), data=ALICE_TOKEN, timeout=10
    )
    requests.post(url, auth=("alice", ALICE_TOKEN + "x"), timeout=10)
    gateway.put_routes({"deployments": {}}, token=ADMIN_TOKEN + "x")
    vouched = internal_token(ADMIN_TOKEN, "logged")
    requests.post(
        url, headers={"X-PrimeHub-Internal-Token": vouched, "X-PrimeHub-User": "bob"}, timeout=10
    )
    # The access log is written after the response; the health call below is logged after it.
    requests.get(f"{gateway.url}/_primehub/health", headers=gateway.admin(), timeout=10)
    deadline = time.monotonic() + 10
    while "GET /_primehub/health" not in gateway.log_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    text = gateway.log_file.read_text()
    lines = text.splitlines()
    assert lines and all(STAMP.match(line) for line in lines)
    assert "POST /deployment/logged/api/v1.0/predictions 200" in text
    assert "user=alice" in text
    basic = base64.b64encode(f"alice:{ALICE_TOKEN}".encode()).decode()
    for secret in (ADMIN_TOKEN, ALICE_TOKEN, basic, ALICE_HASH, vouched, "Authorization"):
        assert secret not in text


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_count_answers_per_deployment_code_and_kind(
    gateway: Gateway, backend_a: Backend
) -> None:
    gateway.route(
        counted=public(backend_a),
        locked=private(backend_a),
        down={"phase": "Failed", "message": "x", "replicas": []},
    )
    url = f"{gateway.url}/_primehub/metrics"
    assert requests.get(url, timeout=10).status_code == 401  # admin only
    before = _samples(requests.get(url, headers=gateway.admin(), timeout=10).text)
    for _ in range(3):
        requests.post(gateway.endpoint("counted", "/api/v1.0/predictions"), json={}, timeout=10)
    requests.post(gateway.endpoint("counted", "/api/v1.0/feedback"), json={}, timeout=10)
    requests.get(gateway.endpoint("counted", "/health/ping"), timeout=10)
    requests.post(gateway.endpoint("locked", "/api/v1.0/predictions"), json={}, timeout=10)
    requests.post(gateway.endpoint("down", "/api/v1.0/predictions"), json={}, timeout=10)
    requests.post(gateway.endpoint("unknown", "/api/v1.0/predictions"), json={}, timeout=10)
    after = _samples(requests.get(url, headers=gateway.admin(), timeout=10).text)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    total = "primehub_gateway_requests_total"
    # A table without predictors has one, "predictor1"; answers before a choice have none.
    one = "predictor1"
    assert delta(total, deployment="counted", predictor=one, code="200", kind="predict") == 3
    assert delta(total, deployment="counted", predictor=one, code="200", kind="feedback") == 1
    assert delta(total, deployment="counted", predictor=one, code="200", kind="other") == 1
    assert delta(total, deployment="locked", predictor="", code="401", kind="predict") == 1
    assert delta(total, deployment="down", predictor=one, code="503", kind="predict") == 1
    assert not any(labels and ("deployment", "unknown") in labels for _, labels in after)
    count = "primehub_gateway_request_duration_seconds_count"
    assert delta(count, deployment="counted", predictor=one) == 5
    # A deployment removed from the routes disappears from the metrics.
    gateway.route(counted=public(backend_a))
    text = requests.get(url, headers=gateway.admin(), timeout=10).text
    assert 'deployment="locked"' not in text and 'deployment="counted"' in text


def test_a_replica_dying_mid_answer_is_retried_elsewhere(
    gateway: Gateway, backend_a: Backend
) -> None:
    # Headers and part of the body, then the connection closes (a replica killed mid-answer).
    truncated = RawServer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
    try:
        gateway.route(cut=public(truncated.url, backend_a))
        for _ in range(6):  # round-robin reaches the broken replica; the client never notices
            answer = requests.post(gateway.endpoint("cut", "/api/v1.0/predictions"), timeout=10)
            assert answer.status_code == 200 and answer.json()["name"] == "A"
        # Feedback could be counted twice, so it is not repeated: the caller is told instead.
        gateway.route(cut=public(truncated.url))
        feedback = requests.post(gateway.endpoint("cut", "/api/v1.0/feedback"), timeout=10)
        assert feedback.status_code == 502
        assert "broke off its response" in feedback.json()["message"]
    finally:
        truncated.close()
