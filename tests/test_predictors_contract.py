"""The multi-predictor contract: weights, shadow, autoscaling bounds, sticky routing, merges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError as PydanticError

from primehub_jupyter.core.config import ConfigStore
from primehub_jupyter.core.errors import ValidationError
from primehub_jupyter.core.models import (
    DeploymentSpec,
    describe_problems,
    merge_patch,
    pydantic_problems,
)
from primehub_jupyter.core.service import DeploymentService

from .conftest import OWNER
from .engines.memory import MemoryEngine

IMAGE = "registry.example.com/iris:1"


def predictor(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "instanceType": "cpu-0.5", "modelImage": IMAGE, **fields}


def spec(*predictors: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"displayName": "Iris", "groupName": "default", "predictors": list(predictors), **top}


def problem(data: dict[str, Any]) -> str:
    with pytest.raises(PydanticError) as caught:
        DeploymentSpec.model_validate(data)
    return describe_problems(pydantic_problems(caught.value))


@pytest.mark.parametrize(
    ("predictors", "field", "words"),
    [
        (
            [predictor("a", traffic=60), predictor("b", traffic=30)],
            "predictors",
            "sum to 100 (got 90)",
        ),
        (
            [predictor("a"), predictor("b", shadow=True), predictor("c", shadow=True)],
            "predictors",
            "at most one shadow",
        ),
        (
            [predictor("a"), predictor("b", shadow=True, traffic=10)],
            "predictors",
            "shadow predictor b",
        ),
        ([predictor("a", minReplicas=3, maxReplicas=2)], "predictors.0", "minReplicas (3)"),
        ([predictor(f"p{i}", traffic=20) for i in range(5)], "predictors", "at most 4"),
        ([predictor("a", traffic=50), predictor("a", traffic=50)], "predictors", "a repeated"),
        (
            [predictor("a", minReplicas=1, maxReplicas=2, scaleToZeroAfterSeconds=60)],
            "predictors.0",
            "scaleToZeroAfterSeconds: only with minReplicas: 0",
        ),
        ([predictor("a", replicas=2, maxReplicas=3)], "predictors.0", "either replicas or"),
        ([predictor("a", traffic=100), predictor("b")], "predictors", "traffic: required"),
        ([predictor("a", shadow=True)], "predictors", "a shadow needs a predictor"),
        ([predictor("a", minReplicas=0)], "predictors.0", "maxReplicas: required"),
    ],
)
def test_bad_predictor_sets_name_the_field(predictors, field, words):
    message = problem(spec(*predictors))
    assert message.startswith(f"{field}: ") or f"; {field}: " in message, message
    assert words in message


def test_good_sets_and_their_defaults():
    one = DeploymentSpec.model_validate(spec(predictor("a")))
    assert one.predictor.replicas == 1 and not one.predictor.autoscaled
    assert one.weights() == {"a": 100} and one.shadow is None

    split = DeploymentSpec.model_validate(
        spec(
            predictor("v1", traffic=90, replicas=2),
            predictor("v2", traffic=10, minReplicas=0, maxReplicas=3),
            predictor("v3", shadow=True, minReplicas=1, maxReplicas=2, targetConcurrency=4),
            routing={"stickyHeader": "X-User-Id"},
        )
    )
    assert split.weights() == {"v1": 90, "v2": 10}
    assert split.predictor.name == "v1" and split.shadow and split.shadow.name == "v3"
    v2 = split.predictors[1]
    assert (v2.replicas, v2.lowest, v2.highest, v2.concurrency_target) == (None, 0, 3, 8)
    assert v2.idle_seconds == 300
    assert split.predictors[2].idle_seconds is None and split.predictors[2].concurrency_target == 4
    assert split.routing.sticky_header == "X-User-Id"
    # The JSON form validates back to the same spec: what the service stores passed a create.
    assert DeploymentSpec.model_validate(split.to_json()) == split


@pytest.mark.parametrize("header", ["", "X User", "x:y", "-lead", "a" * 64, 7])
def test_sticky_header_must_be_a_header_name(header):
    message = problem(spec(predictor("a"), routing={"stickyHeader": header}))
    assert message.startswith("routing.stickyHeader: ")


def test_merging_switches_between_fixed_and_autoscaled():
    old = spec(predictor("a", replicas=2))
    auto = merge_patch(old, {"predictors": [{"minReplicas": 0, "maxReplicas": 3}]})
    assert DeploymentSpec.model_validate(auto).predictors[0].autoscaled
    back = merge_patch(auto, {"predictors": [{"replicas": 1}]})
    fixed = DeploymentSpec.model_validate(back).predictors[0]
    assert (fixed.replicas, fixed.max_replicas, fixed.min_replicas) == (1, None, None)


def test_named_predictor_patches_list_membership_and_keep_unsent_fields():
    old = spec(predictor("v1", replicas=2, metadata={"team": "a"}))
    canary = merge_patch(
        old,
        {"predictors": [{"name": "v1", "traffic": 90}, predictor("v2", traffic=10)]},
    )
    parsed = DeploymentSpec.model_validate(canary)
    assert [p.name for p in parsed.predictors] == ["v1", "v2"]
    assert parsed.predictors[0].replicas == 2 and parsed.predictors[0].metadata == {"team": "a"}
    promoted = merge_patch(canary, {"predictors": [{"name": "v2", "traffic": None}]})
    assert [p.name for p in DeploymentSpec.model_validate(promoted).predictors] == ["v2"]


async def test_service_refuses_a_bad_split_with_422_details(groups_file: Path):
    engine = MemoryEngine(config_store=ConfigStore(groups_file))
    service = DeploymentService(engine, ConfigStore(groups_file), bcrypt_rounds=4)
    body = {"spec": spec(predictor("a", traffic=70), predictor("b", traffic=20))}
    with pytest.raises(ValidationError) as caught:
        await service.create(OWNER, body)
    assert caught.value.status == 422
    assert "sum to 100" in str(caught.value)
    created = await service.create(
        OWNER, {"spec": spec(predictor("a", traffic=70), predictor("b", traffic=30))}
    )
    assert [p.name for p in created.spec.predictors] == ["a", "b"]


async def test_quota_counts_every_predictor_at_its_most(groups_file: Path):
    from primehub_jupyter.core.quota import requested

    store = ConfigStore(groups_file)
    config = store.get()
    record_spec = DeploymentSpec.model_validate(
        spec(
            predictor("a", traffic=50, replicas=1),
            predictor("b", traffic=50, minReplicas=0, maxReplicas=3),
        )
    )
    from primehub_jupyter.core.models import DeploymentRecord

    usage = requested(config, DeploymentRecord(id="d1", spec=record_spec))
    one = requested(
        config, DeploymentRecord(id="d2", spec=DeploymentSpec.model_validate(spec(predictor("a"))))
    )
    assert usage.cpu == pytest.approx(one.cpu * 4) and usage.deployments == 1
