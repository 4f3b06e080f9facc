"""The gateway under attack and faults: unsafe paths, encodings, credential floods, start, drain."""

from __future__ import annotations

import gzip
import http.client
import json
import secrets
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import requests

from .gateway_backends import (
    Backend,
    Gateway,
    post_from,
    session_from,
    start_backend,
    start_gateway,
    stop,
)
from .serve_helpers import wait_for
from .serving_helpers import PREDICT, ModelServer, serve

ADMIN_TOKEN = "adm-" + secrets.token_urlsafe(24)
TOKEN = "tok-" + secrets.token_urlsafe(24)
# Cost 4 keeps the tests fast; the gateway treats every cost the same way.
HASH = bcrypt.hashpw(TOKEN.encode(), bcrypt.gensalt(rounds=4)).decode()
PAYLOAD = b'{"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}}'


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("gateway"), ADMIN_TOKEN)
    yield gw
    stop(gw.process)


@pytest.fixture(scope="module")
def echo() -> Iterator[Backend]:
    backend = start_backend("E")
    yield backend
    backend.kill()


def route(backend: Backend | str, access: str = "public", **extra: Any) -> dict[str, Any]:
    """A deployed routing entry with one replica."""
    url = backend.url if isinstance(backend, Backend) else backend
    entry = {"phase": "Deployed", "accessType": access, "replicas": [{"name": "r", "url": url}]}
    return {**entry, **extra}


def raw_request(gateway: Gateway, target: str) -> tuple[int, bytes]:
    """Send a request line exactly as written (no client normalises it); status and body."""
    port = int(gateway.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = f"GET {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
        sock.sendall(head.encode("latin-1"))
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read()


# --- item 1: a deployment's path cannot leave the deployment ------------------------------------


@pytest.mark.parametrize(
    "tail",
    [
        "../secret/api/v1.0/predictions",
        "..%2Fsecret/api/v1.0/predictions",
        "..%2fsecret/api/v1.0/predictions",
        "%2e%2e/secret/api/v1.0/predictions",
        "%2E%2e%2fsecret/x",
        ".%2e/secret/x",
        "api/../../secret/x",
        "api/./v1.0/predictions",
        "api/v1.0/predictions/..",
        ".",
        "..\\secret\\x",
        "..%5Csecret/x",
        "x%00y",
        "x%2Fy",
    ],
)
def test_unsafe_paths_are_refused_before_any_replica(
    gateway: Gateway, echo: Backend, tail: str
) -> None:
    gateway.route(pub=route(echo), secret=route(echo, "private", clients={"c": HASH}))
    status, body = raw_request(gateway, f"/deployment/pub/{tail}")
    assert status == 400
    message = json.loads(body)["message"]
    assert "'..' segments" in message and "%2F" in message


def test_safe_paths_with_dots_and_escapes_still_reach_the_model(
    gateway: Gateway, echo: Backend
) -> None:
    gateway.route(pub=route(echo))
    for tail in ("api/v1.0/predictions", "a..b/.hidden/x.", "v2/models/m%20x/infer?p=..%2F"):
        status, body = raw_request(gateway, f"/deployment/pub/{tail}")
        assert status == 200, tail
        assert json.loads(body)["path"] == "/" + tail.partition("?")[0]


# --- item 5: compressed bodies reach the replica as they were sent ------------------------------


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", gzip.compress(PAYLOAD)),
        ("deflate", PAYLOAD),  # not even valid deflate: the gateway must not care
        ("br", b"\x8b\x03\x80" + PAYLOAD + b"\x03"),
        ("gzip", gzip.compress(PAYLOAD)[:-9] + b"broken!!!"),
        ("x-unknown, gzip", b"\x00\x01\x02"),
    ],
)
def test_content_encoding_and_body_pass_through_untouched(
    gateway: Gateway, echo: Backend, encoding: str, body: bytes
) -> None:
    gateway.route(enc=route(echo))
    response = requests.post(
        gateway.endpoint("enc", PREDICT),
        data=body,
        headers={"Content-Encoding": encoding, "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    echoed = response.json()
    assert echoed["body"].encode("latin-1") == body
    sent = [v for k, v in echoed["headers"] if k.lower() == "content-encoding"]
    assert sent == [encoding]
    lengths = [v for k, v in echoed["headers"] if k.lower() == "content-length"]
    assert lengths == [str(len(body))]


@pytest.fixture(scope="module")
def model_server(
    tmp_path_factory: pytest.TempPathFactory, bundles: dict[str, Path]
) -> Iterator[ModelServer]:
    yield from serve(ModelServer.on_port, bundles["v1"], tmp_path_factory.mktemp("replica"))


def test_compressed_predictions_through_the_gateway_match_the_replica(
    gateway: Gateway, model_server: ModelServer
) -> None:
    gateway.route(iris=route(model_server.url))
    through = gateway.endpoint("iris", PREDICT)
    json_type = {"Content-Type": "application/json"}
    plain = requests.post(through, data=PAYLOAD, headers=json_type, timeout=30)
    assert plain.status_code == 200, plain.text

    gzipped = {**json_type, "Content-Encoding": "gzip"}
    answer = requests.post(through, data=gzip.compress(PAYLOAD), headers=gzipped, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == plain.json()["data"]

    # What the replica answers to a bad body, the caller gets through the gateway: a client
    # error from the model server, never a 5xx from either.
    broken = gzip.compress(PAYLOAD)[:-9] + b"broken!!!"
    cases = [(gzipped, broken), ({**json_type, "Content-Encoding": "br"}, b"\x8b\x03\x80{}\x03")]
    for headers, body in cases:
        direct = requests.post(model_server.url + PREDICT, data=body, headers=headers, timeout=30)
        via = requests.post(through, data=body, headers=headers, timeout=30)
        assert via.status_code == direct.status_code, (headers, via.text, direct.text)
        assert 400 <= via.status_code < 500, via.text
        assert via.json()["status"]["info"] == direct.json()["status"]["info"]
    assert via.status_code in (400, 415)  # br: 415 once the server reports unsupported codings


# --- item 7: floods of wrong credentials are limited per client address -------------------------


def test_wrong_credentials_from_one_address_get_429_and_others_are_served(
    gateway: Gateway, echo: Backend
) -> None:
    gateway.route(vault=route(echo, "private", clients={"app": HASH}), open=route(echo))
    url = gateway.endpoint("vault", PREDICT)
    # A client whose token was checked once is served from the cache, flood or not.
    known = session_from("127.0.0.4")
    assert known.post(url, auth=("app", TOKEN), timeout=10).status_code == 200

    statuses = []
    refused: requests.Response | None = None
    with session_from("127.0.0.4") as attacker:
        for attempt in range(40):
            response = attacker.post(url, auth=("app", f"guess-{attempt}"), timeout=10)
            statuses.append(response.status_code)
            if response.status_code == 429:
                refused = response
    assert set(statuses) == {401, 429}
    first_429 = statuses.index(429)
    assert first_429 >= 5, statuses  # a few typos are never punished
    assert set(statuses[first_429:]) == {429}, statuses
    assert refused is not None
    assert int(refused.headers["Retry-After"]) >= 1
    assert "too many failed authentication attempts" in refused.json()["message"]

    # The flooding address still gets public deployments and its verified credentials ...
    assert known.post(url, auth=("app", TOKEN), timeout=10).status_code == 200
    assert post_from("127.0.0.4", gateway.endpoint("open", "/x")).status_code == 200
    # ... but a credential not yet verified would need a hash: it waits too. (A new hash of the
    # same token is a changed client, so the gateway forgets what it verified.)
    rehashed = bcrypt.hashpw(TOKEN.encode(), bcrypt.gensalt(rounds=4)).decode()
    gateway.route(vault=route(echo, "private", clients={"app": rehashed}), open=route(echo))
    assert post_from("127.0.0.4", url, auth=("app", TOKEN)).status_code == 429
    # Another address is not held back by someone else's flood.
    assert post_from("127.0.0.5", url, auth=("app", TOKEN)).status_code == 200
    known.close()


# --- item 9: start and stop without dropping or misreporting requests ---------------------------


def test_a_fresh_gateway_answers_503_until_its_first_table(tmp_path: Path, echo: Backend) -> None:
    gw = start_gateway(tmp_path, ADMIN_TOKEN)
    try:
        early = requests.post(gw.endpoint("any", PREDICT), timeout=10)
        assert early.status_code == 503
        assert early.headers["Retry-After"].isdigit()
        assert "has not received its routing table yet" in early.json()["message"]
        gw.route(known=route(echo))
        assert requests.post(gw.endpoint("known", PREDICT), timeout=10).status_code == 200
        assert requests.post(gw.endpoint("any", PREDICT), timeout=10).status_code == 404
    finally:
        stop(gw.process)


def test_a_refused_table_does_not_count_as_the_first(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, ADMIN_TOKEN)
    try:
        assert gw.put_routes({"deployments": []}).status_code == 400
        assert requests.get(gw.endpoint("any", "/x"), timeout=10).status_code == 503
    finally:
        stop(gw.process)


def _refused(gateway: Gateway) -> bool:
    port = int(gateway.url.rsplit(":", 1)[1])
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_drains_in_flight_requests_and_never_answers_502(
    tmp_path: Path, echo: Backend
) -> None:
    gw = start_gateway(tmp_path, ADMIN_TOKEN)
    release = tmp_path / "release"
    port = int(gw.url.rsplit(":", 1)[1])
    try:
        gw.route(slow=route(echo))
        # A keep-alive connection opened (and used) before the signal.
        idle = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        idle.request("GET", "/deployment/slow/x")
        first = idle.getresponse()
        assert first.status == 200
        first.read()

        outcome: list[requests.Response | BaseException] = []

        def call() -> None:
            try:
                url = gw.endpoint("slow", f"/slow?release={release}")
                outcome.append(requests.get(url, timeout=60))
            except requests.RequestException as exc:
                outcome.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        echo.wait_for_slow_request()
        gw.process.send_signal(signal.SIGTERM)

        # New connections are refused once draining starts.
        wait_for(lambda: _refused(gw), "the listener to close")
        assert gw.process.poll() is None  # still draining: the slow request is in flight
        # A request on the open keep-alive connection is told to come back, not 502.
        idle.request("GET", "/deployment/slow/x")
        during = idle.getresponse()
        assert during.status == 503
        assert during.getheader("Retry-After", "").isdigit()
        assert during.getheader("Connection", "").lower() == "close"
        assert "shutting down" in json.loads(during.read())["message"]
        idle.close()

        release.touch()
        caller.join(60)
        assert len(outcome) == 1 and isinstance(outcome[0], requests.Response), outcome
        assert outcome[0].status_code == 200
        assert outcome[0].json()["name"] == "E"
        assert gw.process.wait(timeout=30) == 0
        log = gw.log_file.read_text()
        assert "gateway draining" in log and "gateway stopped" in log
        assert "still in flight" not in log
    finally:
        release.touch()
        stop(gw.process)


def test_sigterm_grace_is_bounded(tmp_path: Path, echo: Backend) -> None:
    gw = start_gateway(tmp_path, ADMIN_TOKEN, "--shutdown-grace", "0.5")
    release = tmp_path / "release"
    try:
        gw.route(stuck=route(echo))
        outcome: list[Any] = []

        def call() -> None:
            try:
                url = gw.endpoint("stuck", f"/slow?release={release}")
                outcome.append(requests.get(url, timeout=60).status_code)
            except requests.RequestException as exc:
                outcome.append(type(exc).__name__)

        caller = threading.Thread(target=call)
        caller.start()
        echo.wait_for_slow_request()
        gw.process.send_signal(signal.SIGTERM)
        # The request never finishes on its own; the gateway exits anyway.
        assert gw.process.wait(timeout=30) == 0
        assert "still in flight after 0.5 s" in gw.log_file.read_text()
        caller.join(60)
        assert outcome and outcome[0] != 200
    finally:
        release.touch()
        stop(gw.process)
