"""DeploymentService on the in-memory engine: groups, quota, changes, history, clients, errors."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from primehub_jupyter.core import service as service_module
from primehub_jupyter.core.config import ConfigStore
from primehub_jupyter.core.errors import (
    BadRequest,
    Conflict,
    FeatureDisabled,
    Forbidden,
    NotFound,
    Unchangeable,
    ValidationError,
)
from primehub_jupyter.core.models import MAX_HISTORY, DeploymentRecord
from primehub_jupyter.core.security import verify_token
from primehub_jupyter.core.service import DeploymentService

from .conftest import OWNER, wait_until
from .engines.memory import MemoryEngine

IMAGE = "registry.example.com/iris:1"


@pytest.fixture
def engine(groups_file: Path) -> MemoryEngine:
    return MemoryEngine(config_store=ConfigStore(groups_file))


@pytest.fixture
def service(engine: MemoryEngine, groups_file: Path) -> DeploymentService:
    return DeploymentService(engine, ConfigStore(groups_file), bcrypt_rounds=4)


def body(group: str = "default", instance: str = "cpu-0.5", **top: Any) -> dict[str, Any]:
    predictor = {"instanceType": instance, "replicas": top.pop("replicas", 1), "modelImage": IMAGE}
    spec = {"displayName": "Iris classifier", "groupName": group, **top}
    return {"spec": {**spec, "predictors": [predictor]}}


async def settled(service: DeploymentService, deployment_id: str, phase: str) -> DeploymentRecord:
    async def reached() -> DeploymentRecord | None:
        deployment = await service.get(OWNER, deployment_id)
        return deployment if deployment.status.phase.value == phase else None

    return await wait_until(reached, what=f"{deployment_id} to be {phase}")


# ---- who may do what --------------------------------------------------------------------


async def test_members_see_and_change_their_groups_deployments_only(service):
    created = await service.create(OWNER, body())
    assert created.spec.user_name == OWNER
    # bob is in 'default' too; carol and dave are not: they cannot even tell it exists.
    assert (await service.get("bob", created.id)).id == created.id
    await service.update("bob", created.id, {"spec": {"description": "by bob"}})
    for outsider in ("carol", "dave"):
        with pytest.raises(NotFound, match=created.id):
            await service.get(outsider, created.id)
        assert await service.list_deployments(outsider) == []
        with pytest.raises(NotFound):
            await service.update(outsider, created.id, {"spec": {"description": "x"}})
        with pytest.raises(NotFound):
            await service.set_stopped(outsider, created.id, True)
        with pytest.raises(NotFound):
            await service.delete(outsider, created.id)
        with pytest.raises(NotFound):
            await service.add_client(outsider, created.id, "spy")
    assert (await service.get(OWNER, created.id)).spec.description == "by bob"


async def test_creating_needs_membership_an_enabled_group_and_its_instance_types(service):
    with pytest.raises(Forbidden, match="not a member of group 'team-c'"):
        await service.create("bob", body(group="team-c"))
    with pytest.raises(FeatureDisabled, match="not enabled for this group"):
        await service.create(OWNER, body(group="research"))
    with pytest.raises(ValidationError, match="group 'nowhere' not found") as error:
        await service.create(OWNER, body(group="nowhere"))
    assert error.value.details == [{"field": "spec.groupName", "message": "not found"}]
    with pytest.raises(ValidationError, match="instance type 'cpu-2' not found in group 'small'"):
        await service.create(OWNER, body(group="small", instance="cpu-2"))
    # Admins may deploy into any group; 'everyone' instance types are every group's.
    carols = await service.create(OWNER, body(group="team-c", instance="cpu-1"))
    assert carols.spec.group_name == "team-c"
    assert [d.id for d in await service.list_deployments("carol")] == [carols.id]
    assert carols.id in [d.id for d in await service.list_deployments(OWNER)]


async def test_admins_enable_and_disable_groups(service):
    with pytest.raises(Forbidden, match="only administrators"):
        await service.set_group_enabled("bob", "research", True)
    group = await service.set_group_enabled(OWNER, "research", True)
    assert group["name"] == "research" and group["enabledDeployment"] is True
    created = await service.create(OWNER, body(group="research", instance="cpu-1"))
    await settled(service, created.id, "Deployed")
    with pytest.raises(NotFound):
        await service.set_group_enabled(OWNER, "no-such-group", True)


async def test_me_and_groups_report_quota_and_usage(service):
    me = await service.me("bob")
    assert me["name"] == "bob" and me["isAdmin"] is False and me["engine"] == "MemoryEngine"
    assert [g["name"] for g in me["groups"]] == ["default"]
    assert (await service.me(OWNER))["isAdmin"] is True

    first = await service.create(OWNER, body(group="small", replicas=2))  # 2 x 0.5 cpu
    await settled(service, first.id, "Deployed")
    small = next(g for g in await service.groups(OWNER) if g["name"] == "small")
    assert small["quota"]["cpu"] == 1
    assert small["usage"]["cpu"] == 1.0 and small["usage"]["deployments"] == 1
    assert {it["name"] for it in small["instanceTypes"]} == {"cpu-0.5", "cpu-1"}

    # The group's cpu is all used: one more is Failed with a reason a person can act on.
    second = await service.create(OWNER, body(group="small"))
    failed = await settled(service, second.id, "Failed")
    assert "group resource not enough" in failed.status.message
    assert "cpu 0.5 requested, 0 of 1 free" in failed.status.message

    # A stopped deployment holds nothing: the other one fits on its next change.
    await service.set_stopped(OWNER, first.id, True)
    await settled(service, first.id, "Stopped")
    small = next(g for g in await service.groups(OWNER) if g["name"] == "small")
    assert small["usage"]["cpu"] == 0 and small["usage"]["deployments"] == 0
    await service.update(OWNER, second.id, {"spec": {"description": "retry"}})
    await settled(service, second.id, "Deployed")


async def test_instance_types_per_group(service):
    names = {it["name"] for it in await service.instance_types(OWNER, "default")}
    assert names == {"cpu-0.5", "cpu-1", "cpu-2"}
    assert {it["name"] for it in await service.instance_types("carol")} == {"cpu-0.5", "cpu-1"}
    with pytest.raises(NotFound, match="group 'default' not found"):
        await service.instance_types("carol", "default")


# ---- create -------------------------------------------------------------------------------


async def test_create_generates_or_takes_an_id_and_records_revision_1(service, engine):
    created = await service.create(OWNER, body())
    assert created.id.startswith("iris-classifier-")
    assert len(created.id) == len("iris-classifier-") + 5
    assert created.status.phase.value == "Deploying"
    assert [(h.revision, h.user) for h in created.status.history] == [(1, OWNER)]
    await settled(service, created.id, "Deployed")

    named = await service.create(OWNER, {"id": "my-model", **body()})
    assert named.id == "my-model"
    with pytest.raises(Conflict, match="already taken"):
        await service.create(OWNER, {"id": "my-model", **body()})
    stopped = await service.create(OWNER, body(stop=True))
    assert stopped.status.phase.value == "Stopped"


async def test_a_generated_id_that_is_taken_is_drawn_again(service, monkeypatch):
    await service.create(OWNER, {"id": "iris-aaaaa", **body()})
    drawn = iter(["iris-aaaaa", "iris-bbbbb"])
    monkeypatch.setattr(service_module, "generate_id", lambda name: next(drawn))
    assert (await service.create(OWNER, body())).id == "iris-bbbbb"


@pytest.mark.parametrize(
    ("payload", "error", "text"),
    [
        ([], BadRequest, "JSON object"),
        ({"spec": {}, "extra": 1}, ValidationError, "unknown fields: extra"),
        ({"id": "x"}, ValidationError, "spec: required"),
        ({"id": "Bad_Id", **body()}, ValidationError, "id"),
        ({"spec": {**body()["spec"], "predictors": []}}, ValidationError, "predictors"),
        (
            {"spec": {**body()["spec"], "endpoint": {"clients": [{"name": "a"}]}}},
            ValidationError,
            "clients are added after creation",
        ),
    ],
)
async def test_create_refuses_bodies_it_cannot_use(service, payload, error, text):
    with pytest.raises(error, match=text):
        await service.create(OWNER, payload)
    assert await service.list_deployments(OWNER) == []


# ---- update, stop, start, rollback, delete -----------------------------------------------


async def test_update_merges_records_history_and_checks_the_version(service, engine):
    created = await service.create(OWNER, body(description="one"))
    updated = await service.update(
        OWNER,
        created.id,
        {
            "spec": {"predictors": [{"replicas": 2}], "updateMessage": "more"},
            "resourceVersion": created.resource_version,
        },
    )
    assert updated.spec.predictor.replicas == 2 and updated.spec.description == "one"
    assert updated.spec.predictor.model_image == IMAGE  # predictors merge item by item
    assert [(h.revision, h.update_message) for h in updated.status.history] == [
        (2, "more"),
        (1, ""),
    ]
    with pytest.raises(Conflict, match="stale"):
        await service.update(
            OWNER,
            created.id,
            {"spec": {"description": "lost"}, "resourceVersion": created.resource_version},
        )
    # The message belongs to one change: the next update without one has none.
    again = await service.update(OWNER, created.id, {"spec": {"description": "two"}})
    assert again.status.history[0].update_message == ""
    # Nothing changed: no write, no history entry.
    calls = engine.replace_calls
    same = await service.update(OWNER, created.id, {"spec": {"description": "two"}})
    assert engine.replace_calls == calls and len(same.status.history) == 3


@pytest.mark.parametrize(
    ("patch", "text"),
    [
        ({"spec": {"displayName": "renamed"}}, "displayName is immutable"),
        ({"spec": {"groupName": "small"}}, "groupName is immutable"),
        ({"id": "other-id", "spec": {}}, "id is immutable"),
        ({"spec": {"predictors": [{"replicas": "2"}]}}, "replicas"),
        ({"spec": {"predictors": [{"instanceType": "cpu-9"}]}}, "instance type 'cpu-9'"),
        ({"spec": {"endpoint": {"clients": [{"name": "x"}]}}}, "clients cannot be added"),
        ({"spec": {}, "resourceVersion": [7]}, "resourceVersion must be the string"),
        ({"spec": {}, "color": "red"}, "unknown fields: color"),
    ],
)
async def test_update_refuses_invalid_changes(service, patch, text):
    created = await service.create(OWNER, body())
    with pytest.raises(ValidationError, match=text):
        await service.update(OWNER, created.id, patch)
    assert await service.history(OWNER, created.id) == created.status.history


async def test_update_needs_a_spec_object(service):
    created = await service.create(OWNER, body())
    for payload in (None, [], {"spec": "x"}):
        with pytest.raises(BadRequest, match="'spec' object"):
            await service.update(OWNER, created.id, payload)


async def test_stop_start_rollback_and_delete(service):
    created = await service.create(OWNER, body(description="v1"))
    await service.update(OWNER, created.id, {"spec": {"description": "v2", "env": []}})
    stopped = await service.set_stopped(OWNER, created.id, True)
    assert stopped.spec.stop and stopped.status.history[0].update_message == "stopped"
    await settled(service, created.id, "Stopped")
    started = await service.set_stopped(OWNER, created.id, False, "back")
    assert started.status.history[0].update_message == "back"
    await settled(service, created.id, "Deployed")

    # Rollback re-applies revision 1's spec as a new revision; stop keeps its current value.
    await service.set_stopped(OWNER, created.id, True)
    rolled = await service.rollback(OWNER, created.id, 1)
    assert rolled.spec.description == "v1" and rolled.spec.stop is True
    history = await service.history(OWNER, created.id)
    assert [h.revision for h in history] == [6, 5, 4, 3, 2, 1]
    assert history[0].update_message == "rollback to revision 1"
    assert (await service.history_entry(OWNER, created.id, 2)).spec.description == "v2"
    with pytest.raises(NotFound, match="no history revision 9"):
        await service.rollback(OWNER, created.id, 9)
    with pytest.raises(NotFound, match="no history revision 9"):
        await service.history_entry(OWNER, created.id, 9)
    for revision in ("1", True, None):
        with pytest.raises(ValidationError, match="revision"):
            await service.rollback(OWNER, created.id, revision)

    await service.delete(OWNER, created.id)
    with pytest.raises(NotFound):
        await service.get(OWNER, created.id)
    with pytest.raises(NotFound):
        await service.delete(OWNER, created.id)


async def test_history_keeps_the_newest_32(service):
    created = await service.create(OWNER, body(stop=True))
    for n in range(MAX_HISTORY + 3):
        await service.update(OWNER, created.id, {"spec": {"description": f"d{n}"}})
    history = await service.history(OWNER, created.id)
    assert len(history) == MAX_HISTORY
    assert history[0].revision == MAX_HISTORY + 4 and history[-1].revision == 5


async def test_a_quarantined_deployment_is_unchangeable_and_never_retried(service, engine):
    created = await service.create(OWNER, body())
    engine.quarantine(created.id, "the stored spec cannot be read")
    calls = engine.replace_calls
    with pytest.raises(Unchangeable, match="cannot be read"):
        await service.update(OWNER, created.id, {"spec": {"description": "fix"}})
    with pytest.raises(Unchangeable):
        await service.set_stopped(OWNER, created.id, True)
    assert engine.replace_calls == calls + 2
    assert (await service.get(OWNER, created.id)).status.phase.value == "Failed"
    await service.delete(OWNER, created.id)  # it can still be deleted


# ---- blind changes retry ------------------------------------------------------------------


async def test_a_blind_update_is_reapplied_on_top_of_a_concurrent_change(service, engine):
    created = await service.create(OWNER, body())
    original = engine.replace
    raced = []

    async def racing_replace(deployment: DeploymentRecord, **kw: Any) -> DeploymentRecord:
        if not raced:  # someone else writes between our read and our write, once
            raced.append(True)
            theirs = await service.get("bob", deployment.id)
            spec = theirs.spec.model_copy(update={"description": "theirs"})
            await original(theirs.model_copy(update={"spec": spec}))
        return await original(deployment, **kw)

    engine.replace = racing_replace
    updated = await service.update(OWNER, created.id, {"spec": {"predictors": [{"replicas": 3}]}})
    assert raced and updated.spec.description == "theirs" and updated.spec.predictor.replicas == 3

    # With a resourceVersion the same race is the caller's to resolve: 409, no retry.
    raced.clear()
    current = await service.get(OWNER, created.id)
    with pytest.raises(Conflict, match="stale"):
        await service.update(
            OWNER,
            created.id,
            {"spec": {"description": "mine"}, "resourceVersion": current.resource_version},
        )


async def test_concurrent_blind_changes_all_land(service, engine):
    created = await service.create(OWNER, body(endpoint={"accessType": "private"}))
    names = [f"client-{n}" for n in range(8)]
    tokens = await asyncio.gather(*(service.add_client(OWNER, created.id, n) for n in names))
    assert engine.replace_calls > len(names), "the changes must have raced"
    listed = [c["name"] for c in await service.list_clients(OWNER, created.id)]
    assert sorted(listed) == names
    hashes = engine.client_hashes(created.id)
    assert all(verify_token(t["token"], hashes[t["name"]]) for t in tokens)
    assert len(await service.history(OWNER, created.id)) == len(names) + 1


async def test_a_change_that_never_lands_gives_up_with_a_conflict(service, engine, monkeypatch):
    created = await service.create(OWNER, body())
    monkeypatch.setattr(service_module, "MAX_CHANGE_ATTEMPTS", 3)

    async def always_stale(deployment: DeploymentRecord, **kw: Any) -> DeploymentRecord:
        raise Conflict("stale")

    engine.replace = always_stale
    with pytest.raises(Conflict, match=r"kept changing .* \(3 attempts\)"):
        await service.update(OWNER, created.id, {"spec": {"description": "x"}})


# ---- clients ------------------------------------------------------------------------------


async def test_clients_tokens_are_shown_once_and_replaced_by_name(service, engine):
    created = await service.create(OWNER, body(endpoint={"accessType": "private"}))
    first = await service.add_client(OWNER, created.id, "billing")
    assert first["name"] == "billing" and len(first["token"]) >= 40
    assert await service.list_clients(OWNER, created.id) == [{"name": "billing"}]
    assert verify_token(first["token"], engine.client_hashes(created.id)["billing"])

    second = await service.add_client(OWNER, created.id, "billing")
    hashed = engine.client_hashes(created.id)["billing"]
    assert verify_token(second["token"], hashed) and not verify_token(first["token"], hashed)
    history = await service.history(OWNER, created.id)
    assert [h.update_message for h in history[:2]] == [
        "client 'billing' replaced",
        "client 'billing' added",
    ]

    await service.delete_client(OWNER, created.id, "billing")
    assert await service.list_clients(OWNER, created.id) == []
    assert engine.client_hashes(created.id) == {}
    with pytest.raises(NotFound, match="no client 'billing'"):
        await service.delete_client(OWNER, created.id, "billing")
    for bad in (None, 3, "Bad Name", ""):
        with pytest.raises(ValidationError):
            await service.add_client(OWNER, created.id, bad)


async def test_rollback_keeps_the_current_clients(service, engine):
    created = await service.create(OWNER, body())
    await service.update(OWNER, created.id, {"spec": {"endpoint": {"accessType": "private"}}})
    token = await service.add_client(OWNER, created.id, "ops")
    rolled = await service.rollback(OWNER, created.id, 1)
    assert rolled.spec.endpoint.access_type == "public"
    assert [c.name for c in rolled.spec.endpoint.clients] == ["ops"]
    assert verify_token(token["token"], engine.client_hashes(created.id)["ops"])


# ---- logs, metrics, invoke ----------------------------------------------------------------


async def test_logs_by_replica_name_or_index(service):
    created = await service.create(OWNER, body(replicas=2))
    await settled(service, created.id, "Deployed")
    names = await service.replicas(OWNER, created.id)
    assert len(names) == 2
    by_index = await service.logs(OWNER, created.id, "1", tail=None)
    assert by_index == await service.logs(OWNER, created.id, names[1], tail=None)
    assert any("replica started" in line for line in by_index)
    assert len(await service.logs(OWNER, created.id, None, tail=1)) == 1
    for unknown in ("7", "nobody", "²"):
        with pytest.raises(NotFound, match="has no replica"):
            await service.logs(OWNER, created.id, unknown)
    with pytest.raises(NotFound):
        await service.logs("carol", created.id, None)


async def test_metrics_window_and_step_are_bounded(service):
    created = await service.create(OWNER, body())
    for window, step in ((5, 1), (90000, 60), (900, 0.5), (900, 7200), (86400, 1)):
        with pytest.raises(ValidationError):
            await service.metrics(OWNER, created.id, window, step)
    report = await service.metrics(OWNER, created.id, 60, 5)
    data = report.model_dump(by_alias=True) if hasattr(report, "model_dump") else report
    assert data["deploymentId"] == created.id and len(data["timestamps"]) == 12


async def test_invoke_confines_the_path_to_the_deployment(service):
    created = await service.create(OWNER, body())
    await settled(service, created.id, "Deployed")
    payload = b'{"data": {"ndarray": [[1, 2]]}}'
    answer = await service.invoke(OWNER, created.id, "api/v1.0/predictions", payload, {})
    assert answer.status == 200 and b'"user": "alice"' in answer.body
    for path in ("../other/api/v1.0/predictions", "api/%2e%2e/x", "http://evil/x"):
        with pytest.raises(BadRequest):
            await service.invoke(OWNER, created.id, path, payload, {})
    with pytest.raises(NotFound):
        await service.invoke("carol", created.id, "api/v1.0/predictions", payload, {})
