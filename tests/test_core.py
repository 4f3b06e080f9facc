"""The domain core on its own: ids, the deployment object, merge patches, config and quota."""

from __future__ import annotations

import pytest
import yaml

from primehub_jupyter.core.config import ConfigStore, parse_cpu, parse_memory
from primehub_jupyter.core.errors import FeatureDisabled, Forbidden, NotFound, ValidationError
from primehub_jupyter.core.ids import generate_id, id_problem, normalize_name
from primehub_jupyter.core.models import Deployment, DeploymentSpec, merge_patch
from primehub_jupyter.core.quota import Usage, quota_problem_for_usage
from primehub_jupyter.core.security import hash_token, new_token, verify_token
from primehub_jupyter.core.service import parse_spec

from .conftest import GROUPS


@pytest.mark.parametrize(
    "value, ok",
    [
        ("iris", True),
        ("iris-2-ab3de", True),
        ("a", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("2iris", False),
        ("iris-", False),
        ("Iris", False),
        ("iris_model", False),
        ("", False),
    ],
)
def test_id_rules(value: str, ok: bool):
    assert (id_problem(value) is None) is ok


@pytest.mark.parametrize(
    "name", ["Iris Classifier!", "123 numbers first", "ÜBER model", "x" * 200, "---"]
)
def test_generated_ids_are_always_valid(name: str):
    generated = generate_id(name)
    assert id_problem(generated) is None, generated
    assert len(generated) <= 63
    assert generated[-6] == "-"
    assert generate_id(name) != generated  # random suffix


def test_normalize_name():
    assert normalize_name("Iris Classifier v2") == "iris-classifier-v2"
    assert normalize_name("42 answers") == "answers"
    assert normalize_name("!!!") == "deployment"


def test_spec_validation_reports_every_field():
    with pytest.raises(ValidationError) as error:
        parse_spec(
            {
                "displayName": "",
                "groupName": "g",
                "predictors": [{"replicas": 0, "instanceType": "x"}],
            }
        )
    message = error.value.message
    assert "spec.displayName" in message and "spec.predictors.0.replicas" in message
    with pytest.raises(ValidationError, match="modelImage or a modelURI"):
        parse_spec({"displayName": "x", "groupName": "g", "predictors": [{"instanceType": "x"}]})
    with pytest.raises(ValidationError, match="not a valid environment variable"):
        parse_spec(
            {
                "displayName": "x",
                "groupName": "g",
                "env": [{"name": "1BAD"}],
                "predictors": [{"instanceType": "x", "modelURI": "/m"}],
            }
        )


def test_deployment_json_round_trip_uses_primehub_names():
    spec = DeploymentSpec.model_validate(
        {
            "displayName": "x",
            "groupName": "g",
            "predictors": [{"instanceType": "cpu-1", "modelURI": "/m", "metadata": {"k": "v"}}],
        }
    )
    data = Deployment(id="x-abcde", spec=spec).to_json()
    predictor = data["spec"]["predictors"][0]
    assert predictor["modelURI"] == "/m" and predictor["instanceType"] == "cpu-1"
    assert data["status"]["phase"] == "Deploying"
    assert Deployment.model_validate(data).spec == spec
    resource = Deployment(id="x-abcde", spec=spec).to_custom_resource()
    assert resource["apiVersion"] == "primehub.io/v1alpha1" and resource["kind"] == "PhDeployment"


def test_merge_patch_merges_predictors_by_index():
    target = {"a": 1, "predictors": [{"replicas": 1, "modelURI": "/m"}], "env": [{"name": "A"}]}
    patched = merge_patch(target, {"predictors": [{"replicas": 3}], "a": None, "b": {"c": 1}})
    assert patched == {
        "predictors": [{"replicas": 3, "modelURI": "/m"}],
        "env": [{"name": "A"}],
        "b": {"c": 1},
    }
    assert merge_patch(target, {"env": []})["env"] == []  # an empty list replaces
    # Other lists of objects are replaced whole, never merged by position.
    with_value = {"env": [{"name": "A", "value": "1"}]}
    assert merge_patch(with_value, {"env": [{"name": "B"}]})["env"] == [{"name": "B"}]
    assert target["predictors"][0]["replicas"] == 1  # the original is untouched


def test_quantities():
    assert parse_cpu("500m") == 0.5 and parse_cpu(2) == 2.0
    assert parse_memory("1Gi") == 1024**3 and parse_memory("512Mi") == 512 * 1024**2
    assert parse_memory("1G") == 10**9 and parse_memory(1024) == 1024
    with pytest.raises(ValueError):
        parse_memory("lots")


def test_config_store_writes_a_default_and_reloads_changes(tmp_path):
    path = tmp_path / "config.yaml"
    store = ConfigStore(path, user="zoe")
    config = store.get()
    group = config.check_member("zoe", "default")
    assert [it.name for it in config.group_instance_types(group)] == ["cpu-0.5", "cpu-1", "cpu-2"]
    assert config.is_admin("zoe")
    document = yaml.safe_load(path.read_text())
    document["groups"][1]["enabledDeployment"] = False
    path.write_text(yaml.safe_dump(document))
    import os

    os.utime(path, (1, 1))  # a different mtime, whatever the clock's resolution
    with pytest.raises(FeatureDisabled):
        store.get().check_member("zoe", "default")


def test_config_membership_and_errors(tmp_path):
    path = tmp_path / "groups.yaml"
    path.write_text(yaml.safe_dump(GROUPS))
    config = ConfigStore(path).get()
    with pytest.raises(Forbidden, match="not a member"):
        config.check_member("carol", "default")
    with pytest.raises(NotFound):
        config.check_member("alice", "nope")
    with pytest.raises(FeatureDisabled):
        config.check_member("alice", "research")
    # 'everyone' shares its instance types with every group.
    group = config.group("default")
    assert {it.name for it in config.group_instance_types(group)} == {"cpu-2", "cpu-0.5", "cpu-1"}
    assert config.problem_with("default", "cpu-9") == "instance type 'cpu-9' not found"


def test_bad_config_is_refused_with_a_reason(tmp_path):
    path = tmp_path / "groups.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "instanceTypes": ["ghost"]}]}))
    with pytest.raises(ValidationError, match="unknown instance types ghost"):
        ConfigStore(path).get()
    path.write_text("groups: [")
    with pytest.raises(ValidationError, match="invalid configuration"):
        ConfigStore(path).get()


def test_quota_message(tmp_path):
    path = tmp_path / "groups.yaml"
    path.write_text(yaml.safe_dump(GROUPS))
    config = ConfigStore(path).get()
    used = Usage(cpu=0.5, memory=512 * 1024**2, deployments=1)
    assert quota_problem_for_usage(config, "small", Usage(0.5, 1024, 0, 1), used) is None
    problem = quota_problem_for_usage(config, "small", Usage(1.0, 1024, 0, 1), used)
    assert problem == "group resource not enough: cpu 1 requested, 0.5 of 1 free (group 'small')"


def test_tokens_are_random_and_hashed_slowly():
    token = new_token()
    assert token != new_token() and len(token) >= 40
    hashed = hash_token(token, rounds=4)
    assert hashed.startswith("$2") and token not in hashed
    assert verify_token(token, hashed)
    assert not verify_token(token + "x", hashed)
    assert not verify_token(token, "not a hash")
