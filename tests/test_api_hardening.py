"""Issue 9 through the real REST API: confined invoke paths, strict bodies, blind updates."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from .conftest import OWNER, spec, wait_until
from .serve_helpers import CLI
from .serve_helpers import Serve as Server

PAYLOAD = {"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}}
PREDICTIONS = "POST /api/v1.0/predictions 200"


def stopped(bundle: Any, **overrides: Any) -> dict[str, Any]:
    """A spec created stopped: validated like any other, without starting a replica."""
    return {**spec(bundle, **overrides), "stop": True}


@pytest.fixture
def raw(jp_http_port: int, jp_base_url: str):
    """Requests with a URL sent exactly as written (jp_fetch would escape the '%')."""

    def call(method: str, path: str, user: str = OWNER, **kwargs: Any) -> requests.Response:
        url = f"http://127.0.0.1:{jp_http_port}{jp_base_url}primehub/api/{path}"
        headers = {"Authorization": f"token {user}", **kwargs.pop("headers", {})}
        return requests.request(method, url, headers=headers, timeout=60, **kwargs)

    return call


async def test_invoke_path_cannot_leave_its_deployment(api, bundles, raw):
    # bob is in 'default' (the public deployment) but not in 'team-c' (the private one).
    bob, carol = api.as_user("bob"), api.as_user("carol")
    await bob.ok("POST", "deployments", {"id": "pub", "spec": spec(bundles["v1"])})
    private = spec(bundles["v1"], groupName="team-c", endpoint={"accessType": "private"})
    await carol.ok("POST", "deployments", {"id": "secret-b", "spec": private})
    endpoint = (await bob.wait_phase("pub", "Deployed"))["status"]["endpoint"]
    await carol.wait_phase("secret-b", "Deployed")
    gateway = endpoint.split("/deployment/")[0]
    target = "secret-b/api/v1.0/predictions"

    attacks = [
        (f"../{target}", "'.' or '..'"),
        (f"..%2F{target}", "percent-encodings"),
        (f"{gateway}/deployment/{target}", "not a URL"),
        (f"/deployment/{target}", "relative"),
        ("api/v1.0/../../secret-b/api/v1.0/predictions", "'..'"),
        ("api\\..\\..\\secret-b", "backslash"),
        ("api/v1.0/predictions\x00", "invalid"),
        ("api//v1.0/predictions", "empty segment"),
        ("a/" * 600, "at most"),
    ]
    for query, reason in attacks:
        response = await asyncio.to_thread(
            raw, "POST", "deployments/pub/invoke", "bob", params={"path": query}, json=PAYLOAD
        )
        assert response.status_code == 400, (query, response.text)
        assert reason in response.json()["message"], (reason, response.text)
    # The path form, sent raw: tornado decodes '%2F' and '%2E' before routing sees them.
    for path in (
        f"..%2F{target.replace('/', '%2F')}",
        f"..%2f{target}",
        f"%2E%2E/{target}",
        f"%2e%2e%2f{target}",
        f"..%5C{target}",
    ):
        response = await asyncio.to_thread(
            raw, "POST", f"deployments/pub/invoke/{path}", "bob", json=PAYLOAD
        )
        assert response.status_code == 400, (path, response.text)
        assert "message" in response.json()

    # The legitimate forms still answer, both of them.
    answer = await bob.ok("POST", "deployments/pub/invoke", PAYLOAD)
    assert len(answer["data"]["ndarray"][0]) == 3
    answer = await bob.ok("POST", "deployments/pub/invoke/api/v1.0/predictions", PAYLOAD)
    assert len(answer["data"]["ndarray"][0]) == 3
    code, answer = await bob.call("POST", "deployments/secret-b/invoke", PAYLOAD)
    assert code == 404

    # The private model answered its own member once, and nobody else ever.
    await carol.ok("POST", "deployments/secret-b/invoke", PAYLOAD)

    async def carol_logged() -> bool:
        return PREDICTIONS in await carol.ok("GET", "deployments/secret-b/logs")

    await wait_until(carol_logged, what="the private model's access line")
    lines = (await carol.ok("GET", "deployments/secret-b/logs", tail="all")).splitlines()
    calls = [line for line in lines if "/api/v1.0/predictions" in line]
    assert len(calls) == 1 and "user=carol" in calls[0], calls


async def test_names_with_a_trailing_newline_or_spaces_are_refused(api, bundles):
    created = await api.ok("POST", "deployments", {"id": "names", "spec": stopped(bundles["v1"])})
    path = f"deployments/{created['id']}"
    for name in ("ok\n", "ok\r\n", " ok", "ok ", "ok\x00", "", "-ok", "o k", 5, None):
        code, answer = await api.call("POST", f"{path}/clients", {"name": name})
        assert code == 422, (name, answer)
    assert (await api.ok("GET", f"{path}/clients"))["clients"] == []
    assert (await api.ok("POST", f"{path}/clients", {"name": "ok"}))["name"] == "ok"

    bad_specs = [
        {"groupName": "default\n"},
        {"env": [{"name": "MODE\n", "value": "x"}]},
        {"instanceType": "cpu-0.5\n"},
        {"name": "predictor1\n"},
        {"metadata": {"team\n": "a"}},
        {"imagePullSecret": "pull-secret\n"},
    ]
    for overrides in bad_specs:
        code, answer = await api.call(
            "POST", "deployments", {"spec": stopped(bundles["v1"], **overrides)}
        )
        assert code == 422, (overrides, answer)
    code, answer = await api.call(
        "POST", "deployments", {"id": "iris\n", "spec": stopped(bundles["v1"])}
    )
    assert code == 422 and "not a valid id" in answer["message"]
    code, answer = await api.call("PATCH", path, {"spec": {"env": [{"name": "A\n"}]}})
    assert code == 422 and "spec.env.0.name" in answer["message"]


async def test_every_spec_the_service_builds_is_validated(api, bundles):
    created = await api.ok("POST", "deployments", {"id": "built", "spec": spec(bundles["v1"])})
    path = f"deployments/{created['id']}"
    await api.wait_phase(created["id"], "Deployed")
    long = "x" * 1500
    for message in (long, 5, [1], {"a": 1}, True):
        code, answer = await api.call("POST", f"{path}/stop", {"updateMessage": message})
        assert code == 422, (message, answer)
        assert "updateMessage" in answer["message"], answer
        code, answer = await api.call(
            "POST", f"{path}/rollback", {"revision": 1, "updateMessage": message}
        )
        assert code == 422, (message, answer)
        assert "updateMessage" in answer["message"], answer
    code, answer = await api.call("POST", f"{path}/stop", [1])
    assert code == 400
    # Nothing was stored: one history entry, still serving.
    current = await api.ok("GET", path)
    assert current["status"]["phase"] == "Deployed" and len(current["status"]["history"]) == 1

    await api.ok("POST", f"{path}/stop", {"updateMessage": "pause"})
    await api.wait_phase(created["id"], "Stopped")
    for message in (long, 7):
        code, answer = await api.call("POST", f"{path}/start", {"updateMessage": message})
        assert code == 422 and "updateMessage" in answer["message"], answer
    # A stop of what is already stopped validates its message too.
    code, answer = await api.call("POST", f"{path}/stop", {"updateMessage": long})
    assert code == 422

    # Client changes go through the same checks; a good one stores a readable spec.
    await api.ok("POST", f"{path}/clients", {"name": "svc"})
    code, _ = await api.call("DELETE", f"{path}/clients/svc")
    assert code == 204
    history = (await api.ok("GET", f"{path}/history"))["history"]
    assert [h["updateMessage"] for h in history] == [
        "client 'svc' deleted",
        "client 'svc' added",
        "pause",
        "",
    ]
    rolled = await api.ok("POST", f"{path}/rollback", {"revision": 1})
    assert rolled["spec"]["updateMessage"] == "rollback to revision 1"
    assert rolled["spec"]["stop"] is True


async def test_malformed_bodies_and_parameters_get_a_4xx_with_a_message(api, bundles, raw):
    created = await api.ok("POST", "deployments", {"id": "target", "spec": stopped(bundles["v1"])})
    path = f"deployments/{created['id']}"
    good = stopped(bundles["v1"])
    predictor = good["predictors"][0]
    cases: list[tuple[Any, int]] = [
        ({"metadata": "x", "spec": good}, 422),
        ({"metadata": [1], "spec": good}, 422),
        ({"metadata": {"name": 5}, "spec": good}, 422),
        ({"metadata": {"name": "Bad_Name"}, "spec": good}, 422),
        ({"id": "one", "metadata": {"name": "two"}, "spec": good}, 422),
        ({"spec": {**good, "metadata": {"name": "x"}}}, 422),
        ({"spec": {**good, "predictors": [{**predictor, "metadata": "x"}]}}, 422),
        ({"spec": {**good, "predictors": [{**predictor, "metadata": [1]}]}}, 422),
        ({"spec": {**good, "predictors": [{**predictor, "metadata": {"k": 5}}]}}, 422),
        ({"spec": {**good, "predictors": [{**predictor, "modelURI": "/tmp/m\x00"}]}}, 422),
        ({"spec": {**good, "displayName": "Iris\x00"}}, 422),
        ({"spec": {**good, "env": [{"name": "A", "value": "v\x00"}]}}, 422),
        ({"spec": {**good, "description": "a\x00b"}}, 422),
        ({"spec": {**good, "predictors": [{**predictor, "replicas": "2"}]}}, 422),
        ({"spec": {**good, "predictors": [{**predictor, "replicas": True}]}}, 422),
        ({"spec": {**good, "predictors": [{**predictor, "replicas": 2.5}]}}, 422),
        ({"spec": {**good, "predictors": [{**predictor, "replicas": 2.0}]}}, 422),
        ({"spec": {**good, "stop": "yes"}}, 422),
        ({"spec": {**good, "stop": 1}}, 422),
        ({"id": [], "spec": good}, 422),
        ({"id": 5, "spec": good}, 422),
        ({"id": "", "spec": good}, 422),
        ({"id": {}, "spec": good}, 422),
        ([1, 2], 400),
        ("spec", 400),
    ]
    for body, status in cases:
        code, answer = await api.call("POST", "deployments", body)
        assert code == status, (body, answer)
        assert answer["message"], answer
    assert [d["id"] for d in (await api.ok("GET", "deployments"))["deployments"]] == ["target"]

    patches: list[tuple[Any, int]] = [
        ({"spec": {"predictors": [{"replicas": "2"}]}}, 422),
        ({"spec": {"predictors": [{"replicas": True}]}}, 422),
        ({"spec": {"stop": "yes"}}, 422),
        ({"spec": {"predictors": [{"modelURI": "/tmp/m\x00"}]}}, 422),
        ({"spec": {"predictors": "x"}}, 422),
        ({"spec": {"endpoint": 5}}, 422),
        ({"spec": {"description": 5}}, 422),
        ({"id": [], "spec": {}}, 422),
        ({"metadata": "x", "spec": {}}, 422),
        ({"spec": {}, "resourceVersion": []}, 422),
        ({"spec": {}, "resourceVersion": True}, 422),
        ({"spec": "x"}, 400),
    ]
    for body, status in patches:
        code, answer = await api.call("PATCH", path, body)
        assert code == status, (body, answer)
        assert answer["message"], answer

    # Bodies nested far deeper than any API body: refused before or while parsing.
    for depth in (100, 5000, 100_000):
        for method, route in (("POST", "deployments"), ("PATCH", path)):
            code, answer = await api.call(method, route, raw=b"[" * depth + b"]" * depth)
            assert code == 400 and "deeper" in answer["message"], (depth, answer)
        nested = b'{"a":' * depth + b"1" + b"}" * depth
        code, answer = await api.call("POST", f"{path}/rollback", raw=nested)
        assert code == 400, answer
    code, answer = await api.call("POST", f"{path}/clients", raw=b'{"name": ' + b"9" * 5000 + b"}")
    assert code == 400, answer

    # Query and path parameters: Unicode digits, huge numbers, non-finite floats.
    for params in ({"tail": "²"}, {"tail": "١٢"}, {"tail": "9" * 5000}, {"tail": "-5"}):
        code, answer = await api.call("GET", f"{path}/logs", **params)
        assert code == 400, (params, answer)
    for replica in ("²", "٣", "9" * 5000):
        code, answer = await api.call("GET", f"{path}/logs", replica=replica)
        assert code == 404, answer
    for revision in ("9" * 5000, "99999999999999999999", "0"):
        code, answer = await api.call("GET", f"{path}/history/{revision}")
        assert code == 404, answer
    code, answer = await api.call("POST", f"{path}/rollback", {"revision": 10**30})
    assert code == 404, answer
    for params in (
        {"window": "nan"},
        {"window": "inf"},
        {"window": "-inf"},
        {"step": "nan"},
        {"window": "1e999"},
        {"window": "²"},
    ):
        code, answer = await api.call("GET", f"{path}/metrics", **params)
        assert 400 <= code < 500, (params, answer)
        assert answer["message"], answer
    response = await asyncio.to_thread(raw, "GET", f"{path}/logs?tail=%C2%B2")
    assert response.status_code == 400

    # None of it changed the deployment.
    current = await api.ok("GET", path)
    assert len(current["status"]["history"]) == 1


async def test_blind_updates_are_retried_and_stale_versions_conflict(api, bundles, raw):
    created = await api.ok("POST", "deployments", {"id": "blind", "spec": stopped(bundles["v1"])})
    path = f"deployments/{created['id']}"
    read_before = created["resourceVersion"]
    count = 20

    def patch(i: int) -> requests.Response:
        body = {"spec": {"description": f"writer {i}"}}
        return raw("PATCH", path, data=json.dumps(body))

    with ThreadPoolExecutor(max_workers=count) as pool:
        responses = await asyncio.gather(
            *(asyncio.wrap_future(pool.submit(patch, i)) for i in range(count))
        )
    assert [r.status_code for r in responses] == [200] * count, [
        r.text for r in responses if r.status_code != 200
    ]
    history = (await api.ok("GET", f"{path}/history"))["history"]
    assert len(history) == 1 + count  # below the cap of 32, so every entry is counted
    assert sorted(h["revision"] for h in history) == list(range(1, count + 2))
    written = {h["spec"]["description"] for h in history[:count]}
    assert written == {f"writer {i}" for i in range(count)}

    code, answer = await api.call(
        "PATCH", path, {"spec": {"description": "late"}, "resourceVersion": read_before}
    )
    assert code == 409 and "changed by someone else" in answer["message"]
    current = await api.ok("GET", path)
    fresh = {"spec": {"description": "on time"}, "resourceVersion": current["resourceVersion"]}
    assert (await api.ok("PATCH", path, fresh))["spec"]["description"] == "on time"


class _FileTokenServer(Server):
    """`serve --token-file FILE` with no token in its environment."""

    @property
    def env(self) -> dict[str, str]:
        env = dict(super().env)
        env.pop("PRIMEHUB_API_TOKEN")
        return env


def _cmdlines(root: psutil.Process) -> list[str]:
    found = []
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            found.append(" ".join(proc.cmdline()))
    return found


def _status(server: Server, path: str, token: str | None) -> int:
    headers = {"Authorization": f"token {token}"} if token else {}
    return requests.get(server.url + path, headers=headers, timeout=30).status_code


def test_serve_takes_its_token_from_env_or_file_and_serves_the_api_only(tmp_path: Path):
    server = Server(tmp_path / "data", tmp_path / "serve.log")
    server.start()
    try:
        assert server.proc is not None
        assert _status(server, "primehub/api/me", server.token) == 200
        assert _status(server, "primehub/api/me", None) in (401, 403)
        assert _status(server, "primehub/api/me", "wrong") in (401, 403)
        # Its token opens no shell and no file: none of Jupyter's own services are there.
        for path in (
            "api/kernels",
            "api/contents",
            "api/terminals",
            "api/sessions",
            "api/kernelspecs",
            "api/nbconvert",
            "api/config/notebook",
            "api/shutdown",
            "files/serve.log",
            "view/serve.log",
            "lab",
            "tree",
        ):
            assert _status(server, path, server.token) == 404, path
        response = requests.post(
            server.url + "api/kernels",
            headers={"Authorization": f"token {server.token}"},
            json={"name": "python3"},
            timeout=30,
        )
        assert response.status_code == 404
        # No process of the server shows the token in its command line (ps).
        lines = _cmdlines(psutil.Process(server.proc.pid))
        assert lines and all(server.token not in line for line in lines), lines
    finally:
        server.stop()

    token_file = tmp_path / "token"
    token_file.write_text("from-a-file-" + os.urandom(4).hex() + "\n")
    by_file = _FileTokenServer(
        tmp_path / "data", tmp_path / "serve2.log", "--token-file", str(token_file)
    )
    by_file.token = token_file.read_text().strip()
    by_file.start()
    try:
        assert by_file.proc is not None
        assert _status(by_file, "primehub/api/me", by_file.token) == 200
        lines = _cmdlines(psutil.Process(by_file.proc.pid))
        assert all(by_file.token not in line for line in lines), lines
    finally:
        by_file.stop()


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--token", "s3cret"],
        ["serve", "--token=s3cret"],
        ["--token", "s3cret", "serve"],
        ["serve", "--IdentityProvider.token=s3cret"],
        ["serve", "--ServerApp.token=s3cret"],
    ],
)
def test_serve_refuses_a_token_on_the_command_line(args: list[str], tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "PRIMEHUB_API_TOKEN"}
    result = subprocess.run(
        [*CLI, *args, "--data-dir", str(tmp_path / "data")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "PRIMEHUB_API_TOKEN" in result.stderr and "--token-file" in result.stderr
    assert not (tmp_path / "data").exists()
