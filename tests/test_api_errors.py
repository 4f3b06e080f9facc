"""Bad input gets a clear message and the right status, and disturbs nothing else."""

from __future__ import annotations

import asyncio

import requests

from primehub_jupyter.core.errors import FEATURE_DISABLED_MESSAGE

from .conftest import spec


async def test_bad_input_is_refused_clearly_and_nothing_is_disturbed(api, bundles, tmp_path):
    # A healthy deployment first: every refusal below must leave it serving.
    good = await api.ok("POST", "deployments", {"id": "good-one", "spec": spec(bundles["v1"])})
    endpoint = (await api.wait_phase(good["id"], "Deployed"))["status"]["endpoint"]

    cases = [
        ({"id": "Bad_ID", "spec": spec(bundles["v1"])}, 422, "not a valid id"),
        ({"id": "x" * 64, "spec": spec(bundles["v1"])}, 422, "at most 63"),
        ({"id": "good-one", "spec": spec(bundles["v1"])}, 409, "already exists"),
        (
            {"spec": spec(bundles["v1"], instanceType="gpu-8")},
            422,
            "instance type 'gpu-8' not found",
        ),
        ({"spec": spec(tmp_path / "nowhere")}, 422, "model URI cannot be used"),
        ({"spec": spec(bundles["v1"], replicas=0)}, 422, "spec.predictors.0.replicas"),
        ({"spec": spec(bundles["v1"], replicas="many")}, 422, "spec.predictors.0.replicas"),
        ({"spec": {**spec(bundles["v1"]), "colour": "red"}}, 422, "spec.colour: unknown field"),
        ({"spec": spec(bundles["v1"], modelURI=None)}, 422, "modelURI"),
        ({"spec": spec(bundles["v1"], modelURI="s3://bucket/model")}, 422, "s3://"),
        ({"spec": spec(bundles["v1"], groupName="nope")}, 422, "group 'nope' not found"),
        ({"spec": spec(bundles["v1"], groupName="research")}, 403, FEATURE_DISABLED_MESSAGE),
        ({"nospec": True}, 422, "unknown fields"),
    ]
    for body, status, text in cases:
        code, answer = await api.call("POST", "deployments", body)
        assert code == status, (body, answer)
        assert text in answer["message"], (text, answer)

    code, answer = await api.as_user("bob").call(
        "POST", "deployments", {"spec": spec(bundles["v1"], groupName="team-c")}
    )
    assert code == 403 and "user 'bob' is not a member of group 'team-c'" in answer["message"]

    code, answer = await api.call("POST", "deployments", raw=b"{not json")
    assert code == 400 and "not valid JSON" in answer["message"]
    code, answer = await api.call("POST", "deployments", raw=b"")
    assert code == 400

    # Updates: immutable fields, stale versions, unknown deployments, bad patches.
    path = f"deployments/{good['id']}"
    code, answer = await api.call("PATCH", path, {"spec": {"groupName": "small"}})
    assert code == 422 and "groupName is immutable" in answer["message"]
    code, answer = await api.call("PATCH", path, {"spec": {"displayName": "renamed"}})
    assert code == 422 and "displayName is immutable" in answer["message"]
    code, answer = await api.call(
        "PATCH", path, {"spec": {"description": "x"}, "resourceVersion": "0"}
    )
    assert code == 409 and "changed by someone else" in answer["message"]
    code, answer = await api.call(
        "PATCH", path, {"spec": {"predictors": [{"instanceType": "cpu-9"}]}}
    )
    assert code == 422 and "cpu-9" in answer["message"]
    code, answer = await api.call(
        "PATCH", "deployments/missing-one", {"spec": {"description": "x"}}
    )
    assert code == 404
    code, answer = await api.call("GET", "deployments/Not_Valid")
    assert code == 404
    code, answer = await api.call("GET", f"{path}/history/99")
    assert code == 404 and "no history revision 99" in answer["message"]
    code, answer = await api.call("GET", f"{path}/logs", replica="nope")
    assert code == 404 and "no replica 'nope'" in answer["message"]
    code, answer = await api.call("GET", f"{path}/logs", tail="lots")
    assert code == 400

    # The healthy deployment never noticed.
    current = await api.ok("GET", path)
    assert current["status"]["phase"] == "Deployed"
    assert len(current["status"]["history"]) == 1
    response = await asyncio.to_thread(
        requests.post, endpoint, json={"data": {"ndarray": [[1, 2, 3, 4]]}}
    )
    assert response.status_code == 200
    assert [d["id"] for d in (await api.ok("GET", "deployments"))["deployments"]] == ["good-one"]


async def test_quota_overrun_fails_with_group_resource_message_and_recovers(api, bundles):
    # Group 'small' has 1 CPU: two cpu-0.5 replicas fit, a third does not.
    first = await api.ok(
        "POST", "deployments", {"spec": spec(bundles["v1"], groupName="small", replicas=2)}
    )
    await api.wait_phase(first["id"], "Deployed")
    second = await api.ok("POST", "deployments", {"spec": spec(bundles["v1"], groupName="small")})
    failed = await api.wait_phase(second["id"], "Failed")
    assert failed["status"]["message"].startswith(
        "group resource not enough: cpu 0.5 requested, 0 of 1 free"
    )
    assert failed["status"]["replicas"] == 0
    groups = {g["name"]: g for g in (await api.ok("GET", "groups"))["groups"]}
    assert groups["small"]["usage"]["cpu"] == 1.0
    # Freeing the quota lets the waiting deployment run, without any user action on it.
    await api.ok("POST", f"deployments/{first['id']}/stop")
    await api.wait_phase(second["id"], "Deployed")
    # Scaling beyond the quota keeps the running version and says why.
    await api.ok(
        "PATCH", f"deployments/{second['id']}", {"spec": {"predictors": [{"replicas": 3}]}}
    )
    failed = await api.wait_phase(second["id"], "Failed")
    assert "group resource not enough" in failed["status"]["message"]
    assert "keeps serving" in failed["status"]["message"]
    assert failed["status"]["availableReplicas"] == 1


async def test_disabling_a_group_fails_its_deployments_with_primehub_message(api, bundles):
    created = await api.ok("POST", "deployments", {"spec": spec(bundles["v1"], groupName="small")})
    await api.wait_phase(created["id"], "Deployed")
    code, answer = await api.call("PATCH", "groups/small", {"enabledDeployment": False})
    assert code == 200 and answer["enabledDeployment"] is False
    failed = await api.wait_phase(created["id"], "Failed")
    assert failed["status"]["message"] == FEATURE_DISABLED_MESSAGE
    assert failed["status"]["availableReplicas"] == 0
    code, answer = await api.call("POST", f"deployments/{created['id']}/stop")
    assert code == 403 and answer["message"] == FEATURE_DISABLED_MESSAGE
    await api.ok("PATCH", "groups/small", {"enabledDeployment": True})
    await api.wait_phase(created["id"], "Deployed")
    # Only admins may do that.
    code, answer = await api.as_user("bob").call(
        "PATCH", "groups/default", {"enabledDeployment": False}
    )
    assert code == 403 and "administrators" in answer["message"]


async def test_users_see_only_their_groups(api, bundles):
    mine = await api.ok(
        "POST", "deployments", {"spec": spec(bundles["v1"], displayName="Alice model")}
    )
    bob = api.as_user("bob")
    bobs = await bob.ok(
        "POST", "deployments", {"spec": spec(bundles["v1"], displayName="Bob model")}
    )
    carol = api.as_user("carol")
    carols = await carol.ok(
        "POST",
        "deployments",
        {"spec": spec(bundles["v1"], displayName="Carol", groupName="team-c")},
    )

    # Alice and Bob share 'default'; Carol is alone in 'team-c'.
    alice_sees = {d["id"] for d in (await api.ok("GET", "deployments"))["deployments"]}
    assert {mine["id"], bobs["id"]} <= alice_sees
    assert carols["id"] in alice_sees  # Alice is an admin: admins see every group
    bob_sees = {d["id"] for d in (await bob.ok("GET", "deployments"))["deployments"]}
    assert bob_sees == {mine["id"], bobs["id"]}
    carol_sees = {d["id"] for d in (await carol.ok("GET", "deployments"))["deployments"]}
    assert carol_sees == {carols["id"]}

    code, answer = await carol.call("GET", f"deployments/{mine['id']}")
    assert code == 404
    code, answer = await carol.call("DELETE", f"deployments/{mine['id']}")
    assert code == 404
    code, answer = await carol.call("GET", f"deployments/{mine['id']}/logs")
    assert code == 404

    mine_only = (await bob.ok("GET", "deployments", mine="1"))["deployments"]
    assert [d["id"] for d in mine_only] == [bobs["id"]]
    by_name = (await bob.ok("GET", "deployments", name="alice"))["deployments"]
    assert [d["id"] for d in by_name] == [mine["id"]]

    me = await carol.ok("GET", "me")
    assert me["name"] == "carol" and not me["isAdmin"]
    assert [g["name"] for g in me["groups"]] == ["team-c"]

    # A user of no group (dave) sees nothing and can create nothing.
    dave = api.as_user("dave")
    assert (await dave.ok("GET", "deployments"))["deployments"] == []
    code, answer = await dave.call("POST", "deployments", {"spec": spec(bundles["v1"])})
    assert code == 403 and "user 'dave' is not a member of group 'default'" in answer["message"]


async def test_every_handler_requires_authentication(jp_fetch):
    paths = [
        ("GET", "me"),
        ("GET", "groups"),
        ("GET", "instance-types"),
        ("GET", "deployments"),
        ("POST", "deployments"),
        ("GET", "deployments/x"),
        ("PATCH", "deployments/x"),
        ("DELETE", "deployments/x"),
        ("POST", "deployments/x/stop"),
        ("POST", "deployments/x/start"),
        ("GET", "deployments/x/history"),
        ("GET", "deployments/x/history/1"),
        ("GET", "deployments/x/logs"),
        ("GET", "deployments/x/clients"),
        ("POST", "deployments/x/clients"),
        ("DELETE", "deployments/x/clients/y"),
        ("GET", "deployments/x/replicas"),
        ("POST", "deployments/x/invoke"),
        ("PATCH", "groups/default"),
        ("GET", "openapi.json"),
    ]
    for method, path in paths:
        kwargs = {
            "method": method,
            "raise_error": False,
            "headers": {"Authorization": "token intruder"},
        }
        if method in ("POST", "PATCH"):
            kwargs["body"] = "{}"
        response = await jp_fetch("primehub", "api", *path.split("/"), **kwargs)
        assert response.code in (401, 403), (method, path, response.code)
