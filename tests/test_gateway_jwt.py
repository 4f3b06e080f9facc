"""Bearer JWTs at the real gateway process: keys from a file and over HTTPS, policy, failures."""

from __future__ import annotations

import itertools
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .gateway_backends import (
    Backend,
    Gateway,
    closed_port,
    post_from,
    start_backend,
    start_gateway,
    stop,
)
from .jwt_helpers import AUDIENCE, Issuer, JwksServer, ec_key, rsa_key, settings_file

ADMIN_TOKEN = "adm-" + secrets.token_urlsafe(24)
CLIENT_TOKEN = "tok-" + secrets.token_urlsafe(24)
HASH = bcrypt.hashpw(CLIENT_TOKEN.encode(), bcrypt.gensalt(rounds=4)).decode()
# Each request from its own loopback address unless a test says otherwise: the gateway limits
# failures per address, and these tests fail on purpose many times.
_addresses = (f"127.1.{n // 250}.{n % 250 + 1}" for n in itertools.count())
# Short, so rotation tests need not wait; the rate-limit test measures against it.
REFRESH = 0.5


def fresh_address() -> str:
    return next(_addresses)


def call(
    gateway: Gateway, dep_id: str, token: str | None = None, **kwargs: Any
) -> requests.Response:
    """POST a prediction to `dep_id` with a bearer token, from a fresh address."""
    headers = kwargs.pop("headers", {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    address = kwargs.pop("address", None) or fresh_address()
    return post_from(
        address,
        gateway.endpoint(dep_id, "/api/v1.0/predictions"),
        headers=headers,
        data=b"{}",
        **kwargs,
    )


def private(backend: Backend, **extra: Any) -> dict[str, Any]:
    """A private routing entry of group `team-a` with one replica and one Basic client."""
    entry = {
        "phase": "Deployed",
        "accessType": "private",
        "group": "team-a",
        "clients": {"app": HASH},
        "replicas": [{"name": "r", "url": backend.url}],
    }
    return {**entry, **extra}


def echoed_headers(response: requests.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in response.json()["headers"]}


@pytest.fixture(scope="module")
def echo() -> Iterator[Backend]:
    backend = start_backend("E")
    yield backend
    backend.kill()


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    made = Issuer()
    made.add("rsa-1", rsa_key())
    made.add("ec-1", ec_key())
    return made


@pytest.fixture(scope="module")
def file_gateway(
    tmp_path_factory: pytest.TempPathFactory, issuer: Issuer, echo: Backend
) -> Iterator[tuple[Gateway, Path]]:
    """A gateway whose issuer keys come from a JWKS file."""
    directory = tmp_path_factory.mktemp("jwt-file")
    jwks = directory / "jwks.json"
    issuer.write(jwks)
    config = settings_file(directory / "jwt.json", str(jwks))
    gw = start_gateway(
        directory,
        ADMIN_TOKEN,
        "--jwt-config",
        str(config),
        "--jwks-refresh",
        str(REFRESH),
        "--access-log",
    )
    gw.route(
        team=private(echo),
        byuser=private(echo, policy={"users": ["bob"]}),
        bygroup=private(echo, policy={"groups": ["ml"]}),
        pub={"phase": "Deployed", "replicas": [{"name": "r", "url": echo.url}]},
    )
    yield gw, jwks
    stop(gw.process)
    # No token ever reaches the log (access lines, errors, key loading).
    log = gw.log_file.read_text()
    assert "POST /deployment/team/" in log  # the access log was on
    leaked = [t for t in issuer.minted if t in log or t.rsplit(".", 1)[0] in log]
    assert not leaked, "a bearer token appears in the gateway's log"


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1"])
def test_group_member_is_admitted_and_named_to_the_model(
    file_gateway: tuple[Gateway, Path], issuer: Issuer, kid: str
) -> None:
    gateway, _ = file_gateway
    token = issuer.token(kid)  # groups ["/team-a"]: Keycloak's path form
    response = call(gateway, "team", token)
    assert response.status_code == 200, response.text
    headers = echoed_headers(response)
    assert headers["x-forwarded-user"] == "alice"
    assert "authorization" not in headers  # the token never reaches the model
    assert token not in response.text
    # Again, now from the cache: same answer.
    again = call(gateway, "team", token)
    assert again.status_code == 200 and echoed_headers(again)["x-forwarded-user"] == "alice"


def test_user_claim_falls_back_to_sub(file_gateway: tuple[Gateway, Path], issuer: Issuer) -> None:
    gateway, _ = file_gateway
    response = call(gateway, "team", issuer.token(preferred_username=None, sub="svc-42"))
    assert response.status_code == 200, response.text
    assert echoed_headers(response)["x-forwarded-user"] == "svc-42"


def test_outside_the_group_is_forbidden(file_gateway: tuple[Gateway, Path], issuer: Issuer) -> None:
    gateway, _ = file_gateway
    response = call(gateway, "team", issuer.token(groups=["/other", "team-b"]))
    assert response.status_code == 403
    assert "team-a" in response.json()["message"]
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


def test_policy_by_user_and_by_group(file_gateway: tuple[Gateway, Path], issuer: Issuer) -> None:
    gateway, _ = file_gateway
    assert (
        call(gateway, "byuser", issuer.token(preferred_username="bob", groups=[])).status_code
        == 200
    )
    # The policy replaces the group rule: alice of team-a is not in it.
    denied = call(gateway, "byuser", issuer.token())
    assert denied.status_code == 403 and "access policy" in denied.json()["message"]
    assert call(gateway, "bygroup", issuer.token(groups=["/org/ml"])).status_code == 200
    assert call(gateway, "bygroup", issuer.token(groups=["/team-a"])).status_code == 403


def _bad_tokens(issuer: Issuer) -> dict[str, str]:
    now = int(time.time())
    return {
        "expired": issuer.token(exp=now - 300, iat=now - 900, nbf=now - 900),
        "not yet valid": issuer.token(nbf=now + 600, iat=now),
        "wrong audience": issuer.token(aud="someone-else"),
        "wrong issuer": issuer.token(iss="https://evil.test/realms/primehub"),
        "alg none": issuer.unsigned({"alg": "none", "typ": "JWT", "kid": "rsa-1"}),
        "HS256 with the public key": issuer.hs256_with_public_key(),
        "forged signature": issuer.token("rsa-1", key=rsa_key()),
        "unknown kid": issuer.token("nobody", key=rsa_key()),
        "no exp": issuer.token(exp=None),
        "not a JWT": "not-a-jwt",
        "empty": "",
    }


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("expired", "expired"),
        ("not yet valid", "not valid yet"),
        ("wrong audience", "audience"),
        ("wrong issuer", "issuer"),
        ("alg none", "algorithm"),
        ("HS256 with the public key", "algorithm"),
        ("forged signature", "signature"),
        ("unknown kid", "kid"),
        ("no exp", "'exp'"),
        ("not a JWT", "well-formed"),
        ("empty", "well-formed"),
    ],
)
def test_invalid_tokens_get_401_with_a_bearer_challenge(
    file_gateway: tuple[Gateway, Path], issuer: Issuer, case: str, reason: str
) -> None:
    gateway, _ = file_gateway
    response = call(gateway, "team", _bad_tokens(issuer)[case])
    assert response.status_code == 401, (case, response.text)
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge
    assert reason in response.json()["message"]


def test_missing_credentials_get_both_challenges_and_basic_still_works(
    file_gateway: tuple[Gateway, Path],
) -> None:
    gateway, _ = file_gateway
    response = call(gateway, "team")
    assert response.status_code == 401
    challenges = response.headers["WWW-Authenticate"]  # requests joins repeated headers
    assert 'Basic realm="primehub deployment team"' in challenges
    assert 'Bearer realm="primehub deployment team"' in challenges
    basic = call(gateway, "team", auth=("app", CLIENT_TOKEN))
    assert basic.status_code == 200, basic.text
    assert echoed_headers(basic)["x-forwarded-user"] == "app"
    assert "authorization" not in echoed_headers(basic)
    assert call(gateway, "team", auth=("app", "wrong")).status_code == 401


def test_public_routes_ignore_tokens(file_gateway: tuple[Gateway, Path]) -> None:
    gateway, _ = file_gateway
    response = call(gateway, "pub", "garbage")
    assert response.status_code == 200
    assert "authorization" not in echoed_headers(response)
    assert "x-forwarded-user" not in echoed_headers(response)


def test_failures_are_rate_limited_per_address(
    file_gateway: tuple[Gateway, Path], issuer: Issuer
) -> None:
    gateway, _ = file_gateway
    good = issuer.token()
    assert call(gateway, "team", good).status_code == 200  # cached from now on
    address = fresh_address()
    statuses = [
        call(gateway, "team", issuer.token(aud="x"), address=address).status_code for _ in range(12)
    ]
    assert statuses[0] == 401 and statuses[-1] == 429, statuses
    limited = call(gateway, "team", issuer.token(), address=address)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    # A token already verified still passes from the limited address.
    assert call(gateway, "team", good, address=address).status_code == 200
    # Other addresses are not affected.
    assert call(gateway, "team", issuer.token()).status_code == 200


def test_key_rotation_in_the_file_is_picked_up(
    file_gateway: tuple[Gateway, Path], issuer: Issuer
) -> None:
    gateway, jwks = file_gateway
    issuer.add("rsa-2", rsa_key())
    token = issuer.token("rsa-2")
    issuer.write(jwks)
    # The first try may fall within the refresh interval of the last fetch: then it is a 401
    # and a later try (each from a fresh address) fetches the new key set.
    deadline = time.monotonic() + 30
    while (status := call(gateway, "team", token).status_code) != 200:
        assert status == 401 and time.monotonic() < deadline, status
        time.sleep(0.1)


hypothesis_settings = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
junk = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=120
) | st.builds(
    lambda a, b, c: f"{a}.{b}.{c}",
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/", max_size=60
    ),
    st.sampled_from(["", "e30", "eyJhbGciOiJSUzI1NiJ9", "eyJhbGciOiJub25lIn0", "eyJraWQiOjF9"]),
    st.text(alphabet="ABCDEFabcdef0123456789-_", max_size=40),
)


@given(token=junk)
@hypothesis_settings
def test_junk_bearer_headers_never_crash(file_gateway: tuple[Gateway, Path], token: str) -> None:
    gateway, _ = file_gateway
    response = call(gateway, "team", token)
    assert response.status_code == 401, response.text
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


# --- keys over HTTPS ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def https_jwks(tmp_path_factory: pytest.TempPathFactory, issuer: Issuer) -> Iterator[JwksServer]:
    server = JwksServer(issuer, tmp_path_factory.mktemp("jwks-https"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def https_gateway(
    tmp_path_factory: pytest.TempPathFactory, https_jwks: JwksServer, echo: Backend
) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("jwt-https")
    config = settings_file(directory / "jwt.json", https_jwks.url, str(https_jwks.cert_file))
    gw = start_gateway(
        directory, ADMIN_TOKEN, "--jwt-config", str(config), "--jwks-refresh", str(REFRESH)
    )
    gw.route(team=private(echo))
    yield gw
    stop(gw.process)


def test_keys_over_https_with_rotation(
    https_gateway: Gateway, https_jwks: JwksServer, issuer: Issuer
) -> None:
    response = call(https_gateway, "team", issuer.token("ec-1"))
    assert response.status_code == 200, response.text
    assert echoed_headers(response)["x-forwarded-user"] == "alice"
    issuer.add("ec-2", ec_key())
    token = issuer.token("ec-2")
    deadline = time.monotonic() + 30
    while (status := call(https_gateway, "team", token).status_code) != 200:
        assert status == 401 and time.monotonic() < deadline, status
        time.sleep(0.1)


def test_unknown_kid_flood_fetches_keys_at_most_once_per_interval(
    https_gateway: Gateway, https_jwks: JwksServer, issuer: Issuer
) -> None:
    before = https_jwks.fetches
    started = time.monotonic()
    for _ in range(40):
        assert call(https_gateway, "team", issuer.token("ghost", key=rsa_key())).status_code == 401
    elapsed = time.monotonic() - started
    fetched = https_jwks.fetches - before
    # One fetch may start right away, then at most one per interval.
    assert fetched <= 1 + elapsed / REFRESH, (fetched, elapsed)
    assert fetched < 40


# --- keys that cannot be had at start ------------------------------------------------------------


def test_unreachable_keys_answer_503_for_bearer_while_basic_works(
    tmp_path: Path, issuer: Issuer, echo: Backend
) -> None:
    config = settings_file(tmp_path / "jwt.json", f"https://127.0.0.1:{closed_port()}/jwks")
    gateway = start_gateway(
        tmp_path, ADMIN_TOKEN, "--jwt-config", str(config), "--jwks-refresh", str(REFRESH)
    )
    try:
        gateway.route(team=private(echo))
        response = call(gateway, "team", issuer.token())
        assert response.status_code == 503, response.text
        assert "cannot load the issuer's keys" in response.json()["message"]
        assert response.headers["Retry-After"]
        assert call(gateway, "team", auth=("app", CLIENT_TOKEN)).status_code == 200
    finally:
        stop(gateway.process)


def test_malformed_then_fixed_key_file_is_retried(
    tmp_path: Path, issuer: Issuer, echo: Backend
) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": "nope"}))
    config = settings_file(tmp_path / "jwt.json", str(jwks))
    gateway = start_gateway(
        tmp_path, ADMIN_TOKEN, "--jwt-config", str(config), "--jwks-refresh", str(REFRESH)
    )
    try:
        gateway.route(team=private(echo))
        token = issuer.token()
        response = call(gateway, "team", token)
        assert response.status_code == 503
        assert "not a JSON Web Key Set" in response.json()["message"]
        assert call(gateway, "team", auth=("app", CLIENT_TOKEN)).status_code == 200
        issuer.write(jwks)
        deadline = time.monotonic() + 30
        while (status := call(gateway, "team", token).status_code) != 200:
            assert status == 503 and time.monotonic() < deadline, status
            time.sleep(0.1)
    finally:
        stop(gateway.process)


def test_routes_with_bad_group_or_policy_are_refused(
    file_gateway: tuple[Gateway, Path], echo: Backend
) -> None:
    gateway, _ = file_gateway
    bad = {
        "g": private(echo, group="no spaces allowed"),
        "p": private(echo, policy={"groups": ["ok", "not ok"]}),
        "u": private(echo, policy={"users": ["line\nbreak"]}),
        "k": private(echo, policy={"roles": ["x"]}),
    }
    good = private(echo)
    response = gateway.put_routes(
        {"deployments": {**bad, "team": good, "byuser": good, "bygroup": good, "pub": good}}
    )
    assert response.status_code == 200
    assert sorted(response.json()["rejected"]) == ["g", "k", "p", "u"]
    gateway.route(
        team=private(echo),
        byuser=private(echo, policy={"users": ["bob"]}),
        bygroup=private(echo, policy={"groups": ["ml"]}),
        pub={"phase": "Deployed", "replicas": [{"name": "r", "url": echo.url}]},
    )


# --- in-process properties: parsers never raise anything but their own refusal -----------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
names = st.sampled_from(["team-a", "ml", "a b", "", "x" * 70, "line\nbreak", "é"]) | st.text(
    max_size=10
)
policies = (
    st.none()
    | json_values
    | st.fixed_dictionaries(
        {},
        optional={
            "users": st.lists(names | json_values, max_size=3),
            "groups": st.lists(names | json_values, max_size=3),
        },
    )
)


@given(group=names | json_values, policy=policies)
@settings(max_examples=400, derandomize=True, database=None, deadline=None)
def test_route_group_and_policy_parse_or_are_refused(group: Any, policy: Any) -> None:
    from primehub_jupyter.gateway.routes import parse_routes

    entry = {"accessType": "private", "replicas": [], "group": group, "policy": policy}
    routes, rejected = parse_routes({"deployments": {"d": entry}})
    if "d" in routes:
        route = routes["d"]
        if route.policy is None:  # the group rule: members of a named group only
            assert route.admits("x", frozenset({"team-a"})) == (route.group == "team-a")
        else:
            assert route.admits("x", frozenset()) == ("x" in route.policy.users)
    else:
        assert rejected["d"].startswith("deployments.d.")


@given(token=junk | st.text(max_size=200))
@settings(max_examples=600, derandomize=True, database=None, deadline=None)
def test_validation_refuses_junk_with_invalid_token_only(token: str) -> None:
    import asyncio

    from primehub_jupyter.core.access import JwtSettings
    from primehub_jupyter.gateway.auth import BearerUnavailable, FailureLimiter, InvalidToken
    from primehub_jupyter.gateway.jwt_auth import BearerAuthenticator

    async def check() -> None:
        settings_ = JwtSettings(issuer="i", audience="a", jwks="/nonexistent/jwks.json")
        bearer = BearerAuthenticator(settings_, FailureLimiter(burst=10**6))
        try:
            await bearer.authenticate(token, "127.0.0.1")
        except InvalidToken as exc:
            assert token not in str(exc) or len(token) < 4
        except BearerUnavailable:
            pass  # a well-formed RS256/ES256 token needs the keys, which this issuer lacks
        else:
            raise AssertionError("junk accepted")
        finally:
            bearer.close()

    asyncio.run(check())


def test_key_set_keeps_only_signing_keys_and_serves_a_lone_key_without_kid(tmp_path: Path) -> None:
    import asyncio

    import jwt as pyjwt

    from primehub_jupyter.core.access import JwtSettings
    from primehub_jupyter.gateway.auth import FailureLimiter
    from primehub_jupyter.gateway.jwt_auth import BearerAuthenticator, parse_jwks

    lone = Issuer()
    lone.add("only", rsa_key())
    document = lone.jwks()
    other = Issuer()
    other.add("enc", rsa_key())
    secret = {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"}
    encryption = {**other.jwks()["keys"][0], "use": "enc"}
    document["keys"] += [secret, encryption, {"kty": "nonsense"}, "junk"]
    assert list(parse_jwks(document)) == ["only"]
    with pytest.raises(ValueError, match="no RS256 or ES256 signing key"):
        parse_jwks({"keys": [secret]})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(document))

    async def check() -> str:
        settings_ = JwtSettings(issuer=lone.claims()["iss"], audience=AUDIENCE, jwks=str(path))
        bearer = BearerAuthenticator(settings_, FailureLimiter())
        token = pyjwt.encode(lone.claims(), lone.keys["only"], algorithm="RS256")  # no kid
        try:
            return (await bearer.authenticate(token, "127.0.0.1")).user
        finally:
            bearer.close()

    assert asyncio.run(check()) == "alice"
