"""The domain core on its own: ids, the deployment object, merge patches, config and quota."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError as PydanticError

from primehub_jupyter.core.config import ConfigStore, parse_cpu, parse_memory
from primehub_jupyter.core.errors import FeatureDisabled, Forbidden, NotFound, ValidationError
from primehub_jupyter.core.ids import generate_id, id_problem, invoke_path_problem, normalize_name
from primehub_jupyter.core.models import DeploymentRecord, DeploymentSpec, merge_patch
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
    data = DeploymentRecord(id="x-abcde", spec=spec).to_json()
    predictor = data["spec"]["predictors"][0]
    assert predictor["modelURI"] == "/m" and predictor["instanceType"] == "cpu-1"
    assert data["status"]["phase"] == "Deploying"
    assert DeploymentRecord.model_validate(data).spec == spec
    resource = DeploymentRecord(id="x-abcde", spec=spec).to_custom_resource()
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


_BASE_SPEC = {"displayName": "x", "groupName": "g", "predictors": [{"instanceType": "cpu-1"}]}


def _with(path: str, value: object) -> dict:
    """The base spec (with a modelURI) and one field set, by a dotted path."""
    data = {**_BASE_SPEC, "predictors": [{"instanceType": "cpu-1", "modelURI": "/m"}]}
    node: dict = data
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]  # type: ignore[index]
    node[last] = value
    return data


@pytest.mark.parametrize("suffix", ["\n", "\r\n", " ", "\x00", "\t"])
@pytest.mark.parametrize(
    "path, name",
    [
        ("groupName", "default"),
        ("predictors.0.instanceType", "cpu-1"),
        ("predictors.0.name", "predictor1"),
        ("predictors.0.imagePullSecret", "pull-secret"),
    ],
)
def test_spec_names_are_full_matched_and_never_stripped(path: str, name: str, suffix: str):
    assert parse_spec(_with(path, name))  # the name itself is fine
    with pytest.raises(ValidationError, match=path.replace(".", r"\.")):
        parse_spec(_with(path, name + suffix))
    with pytest.raises(ValidationError):
        parse_spec(_with(path, suffix + name))


@pytest.mark.parametrize("suffix", ["\n", "\r\n", " ", "\x00"])
def test_every_name_pattern_refuses_a_trailing_newline(suffix: str):
    from primehub_jupyter.core.models import ClientRef, EnvVar, Predictor

    assert id_problem("iris" + suffix) is not None
    with pytest.raises(PydanticError, match="not a valid client name"):
        ClientRef.model_validate({"name": "ok" + suffix})
    with pytest.raises(PydanticError):
        EnvVar.model_validate({"name": "MODE" + suffix})
    with pytest.raises(PydanticError):
        Predictor.model_validate(
            {"instanceType": "cpu-1", "modelURI": "/m", "metadata": {"team" + suffix: "a"}}
        )
    assert EnvVar.model_validate({"name": "MODE"}).name == "MODE"
    assert ClientRef.model_validate({"name": "ok"}).name == "ok"


@pytest.mark.parametrize("suffix", ["\n", " "])
def test_config_names_are_full_matched(tmp_path, suffix: str):
    for document in (
        {"groups": [{"name": "team" + suffix}]},
        {"instanceTypes": [{"name": "cpu-1" + suffix}]},
        {
            "instanceTypes": [{"name": "cpu-1"}],
            "groups": [{"name": "g", "instanceTypes": ["cpu-1" + suffix]}],
        },
    ):
        with pytest.raises(ValidationError, match="not a valid name"):
            ConfigStore.parse(document)
    assert ConfigStore.parse({"instanceTypes": [{"name": "cpu-1"}], "groups": [{"name": "team"}]})


@pytest.mark.parametrize(
    "field, value",
    [
        ("predictors.0.replicas", "2"),
        ("predictors.0.replicas", True),
        ("predictors.0.replicas", 2.5),
        ("predictors.0.replicas", 2.0),
        ("stop", "yes"),
        ("stop", 1),
        ("predictors.0.modelURI", "/m\x00"),
        ("predictors.0.modelURI", "/m\nx"),
        ("displayName", "a\x00b"),
        ("description", "a\x00b"),
        ("updateMessage", "x" * 1001),
        ("updateMessage", 5),
        ("env", [{"name": "A", "value": "v\x00"}]),
        ("predictors.0.metadata", {"k": "v\x00"}),
        ("predictors.0.metadata", "x"),
    ],
)
def test_loose_types_and_nul_bytes_are_refused(field: str, value: object):
    with pytest.raises(ValidationError, match=field.split(".")[-1]):
        parse_spec(_with(field, value))


def test_multi_line_text_is_kept_where_it_belongs():
    spec = parse_spec(
        {
            **_with("description", "line one\nline two"),
            "env": [{"name": "PEM", "value": "-----BEGIN-----\nabc\n-----END-----"}],
        }
    )
    assert spec.description == "line one\nline two"
    assert spec.env[0].value.count("\n") == 2


@pytest.mark.parametrize(
    "path, ok",
    [
        ("api/v1.0/predictions", True),
        ("v2/models/iris_model-1/infer", True),
        ("api/model/invoke", True),
        ("health/ping", True),
        ("../other/api/v1.0/predictions", False),
        ("api/../../other", False),
        ("api/./predictions", False),
        ("./api", False),
        ("..", False),
        ("..%2Fother", False),
        ("%2e%2e/other", False),
        ("api%2Fv1.0", False),
        ("/api/v1.0/predictions", False),
        ("http://127.0.0.1:9/deployment/other/api", False),
        ("HTTP://x", False),
        ("file:/etc/passwd", False),
        ("//evil.example/x", False),
        ("api//predictions", False),
        ("api/predictions/", False),
        ("api\\..\\other", False),
        ("api/v1.0/predictions\x00", False),
        ("api/v1.0/predictions\n", False),
        ("api/v1.0/predictions?x=1", False),
        ("api/v1.0/predictions#x", False),
        ("api/v1.0/pré", False),
        ("api/\u2025/x", False),
        ("", False),
        ("a/" * 600 + "a", False),
    ],
)
def test_invoke_paths_stay_inside_the_deployment(path: str, ok: bool):
    assert (invoke_path_problem(path) is None) is ok, invoke_path_problem(path)


def test_json_depth_is_measured_without_recursion():
    from primehub_jupyter.core.jsondepth import too_deep
    from primehub_jupyter.server.handlers import MAX_JSON_DEPTH

    def json_too_deep(value: object) -> bool:
        return too_deep(value, MAX_JSON_DEPTH)

    nested: object = 1
    for _ in range(MAX_JSON_DEPTH):
        nested = [nested]
    assert not json_too_deep(nested)
    assert json_too_deep([nested])
    deep: object = {}
    for _ in range(100_000):
        deep = {"a": deep}
    assert json_too_deep(deep)
    assert not json_too_deep({"spec": {"predictors": [{"metadata": {"k": "v"}}]}})
