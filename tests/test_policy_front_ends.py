"""The access policy from the notebook (magics, panel), the CLI, and the bearer example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from primehub_jupyter.cli.documents import keep_nulls, parse_sets
from primehub_jupyter.core.models import merge_patch
from primehub_jupyter.kernel.client import Client
from primehub_jupyter.kernel.examples import BEARER_NOTE, curl_example
from primehub_jupyter.kernel.options import policy_patch
from primehub_jupyter.kernel.panel import DeploymentPanel

from .conftest import GROUPS, OWNER
from .serve_helpers import Serve as Server
from .test_kernel_magics import Kernel, assert_one_line_failure


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    server = Server.with_groups(tmp_path_factory.mktemp("policy"), GROUPS, OWNER)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def kernel(served: Server, tmp_path_factory: pytest.TempPathFactory):
    k = Kernel(served.env, tmp_path_factory.mktemp("notebook"))
    k.ok("%load_ext primehub_jupyter")
    k.ok(
        "from sklearn.datasets import load_iris\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "X, y = load_iris(return_X_y=True)\n"
        "model = LogisticRegression(max_iter=1000).fit(X, y)"
    )
    yield k
    k.shutdown()


def policy_of(kernel: Kernel, deployment_id: str) -> object:
    shown = kernel.ok(
        f"g = %phdeploy get {deployment_id}\n"
        "import json\nprint(json.dumps(g.spec['endpoint'].get('policy')))"
    )
    return json.loads(shown.stdout.strip().splitlines()[-1])


# ---- the magics -------------------------------------------------------------------------------


def test_deploy_magics_set_change_and_clear_the_policy(kernel: Kernel):
    kernel.ok(
        "p = %deploy model --name iris-policy --private --policy-groups team-c --policy-users bob"
    )
    deployment_id = kernel.ok("print(p.id)").stdout.strip()
    assert policy_of(kernel, deployment_id) == {"users": ["bob"], "groups": ["team-c"]}

    # Invoke from the notebook goes through the REST API as the signed-in user (alice), whom
    # the policy leaves out: the endpoint's JWT check is not on this path, by design.
    answer = kernel.ok("print(p.invoke(X[:2]).tolist())").stdout
    assert answer.strip().startswith("[[")

    # The card's "Run an Example": Basic first, then the bearer form.
    card = "".join(kernel.ok("p").html)
    assert "-u &#x27;&lt;client-name&gt;:&lt;client-token&gt;&#x27;" in card
    assert "Authorization: Bearer &lt;access-token&gt;" in card

    # %%deploy: the flags on the first line (the whole policy: the groups are gone) ...
    kernel.ok(f"%%deploy {deployment_id} --policy-users carol,bob\nreplicas: 1\n")
    assert policy_of(kernel, deployment_id) == {"users": ["carol", "bob"], "groups": []}
    # ... or `policy:` in the YAML, merged into the deployment's like every field ...
    kernel.ok(f"%%deploy {deployment_id}\npolicy:\n  groups: [default]\nreplicas: 1\n")
    assert policy_of(kernel, deployment_id) == {"users": ["carol", "bob"], "groups": ["default"]}
    # ... and both empty: no policy, the deployment's group may call again.
    kernel.ok(f"%%deploy {deployment_id} --policy-groups= --policy-users=\nreplicas: 1\n")
    assert policy_of(kernel, deployment_id) is None

    duplicated = kernel.run("%deploy model --name iris-dup --private --policy-users bob,bob")
    assert_one_line_failure(duplicated, "--policy-groups/--policy-users")
    kernel.ok(f"%phdeploy delete {deployment_id}")


# ---- the CLI ------------------------------------------------------------------------------------


def test_cli_create_and_update_set_the_policy(served: Server, bundles, tmp_path: Path):
    spec_file = tmp_path / "deploy.yaml"
    spec_file.write_text(
        yaml.safe_dump(
            {
                "spec": {
                    "displayName": "cli-policy",
                    "groupName": "default",
                    "endpoint": {"accessType": "private", "policy": {"users": ["eve"]}},
                    "predictors": [{"instanceType": "cpu-0.5", "modelURI": str(bundles["v1"])}],
                }
            }
        )
    )
    created = json.loads(
        served.cli(
            "create", "-f", str(spec_file), "--policy-groups", "default,small", "-o", "json"
        ).stdout
    )
    # The flags replace the file's policy (a missing one is empty).
    assert created["spec"]["endpoint"]["policy"] == {"users": [], "groups": ["default", "small"]}
    deployment_id = created["id"]

    def policy() -> object:
        shown = served.cli("get", deployment_id, "-o", "json").stdout
        return json.loads(shown)["spec"]["endpoint"].get("policy")

    served.cli("update", deployment_id, "--set", "endpoint.policy.groups=small")
    assert policy() == {"users": [], "groups": ["small"]}
    served.cli("update", deployment_id, "--set", "endpoint.policy.users=bob, carol")
    assert policy() == {"users": ["bob", "carol"], "groups": ["small"]}
    served.cli("update", deployment_id, "--set", "policyGroups=[default]")
    assert policy() == {"users": ["bob", "carol"], "groups": ["default"]}
    served.cli("update", deployment_id, "--set", "endpoint.policy=null")
    assert policy() is None
    bad = served.cli("create", "-f", str(spec_file), "--policy-users", "x,x", check=False)
    assert bad.returncode == 1 and "must be unique" in bad.stderr
    served.cli("delete", deployment_id, "-y")


def test_set_and_flags_parse_lists_of_names():
    assert parse_sets(("endpoint.policy.groups=g1,g2",)) == {
        "endpoint": {"policy": {"groups": ["g1", "g2"]}}
    }
    assert parse_sets(("endpoint.policy.users=[a, b]",)) == {
        "endpoint": {"policy": {"users": ["a", "b"]}}
    }
    assert parse_sets(("endpoint.policy.users=",)) == {"endpoint": {"policy": {"users": []}}}
    # `-f FILE --set endpoint.policy=null`: the null reaches the server (it removes the policy).
    changes = parse_sets(("endpoint.policy=null", "replicas=2"))
    merged = keep_nulls(merge_patch({"predictors": [{"modelURI": "/m"}]}, changes), changes)
    assert merged == {
        "predictors": [{"modelURI": "/m", "replicas": 2}],
        "endpoint": {"policy": None},
    }
    assert policy_patch(None, None) is None
    assert policy_patch(" g1, ,g2 ", None) == {"policy": {"users": [], "groups": ["g1", "g2"]}}
    assert policy_patch("", "") == {"policy": None}


# ---- the panel ----------------------------------------------------------------------------------


def test_panel_form_edits_the_policy_where_the_access_type_is(served: Server, bundles):
    client = Client(served.url, served.token)
    panel = DeploymentPanel(client, refresh_seconds=0)
    form = panel.show_create()
    assert form is not None
    fields = list(form.children)
    # Right after the access type, and shown only for private access.
    assert fields[fields.index(form.private) + 1] is form.policy_box
    assert form.policy_box.layout.display == "none"
    form.private.value = True
    assert form.policy_box.layout.display == ""
    form.name.value = "panel-policy"
    form.model_uri.value = str(bundles["v1"])
    form.policy_groups.value = "default, small"
    form.policy_users.value = "bob"
    form.submit.click()
    assert form.errors.value == "", form.errors.value
    (created,) = [d for d in client.list() if d["spec"]["displayName"] == "panel-policy"]
    policy = created["spec"]["endpoint"]["policy"]
    assert policy == {"users": ["bob"], "groups": ["default", "small"]}

    # The update form starts from the deployment's policy; clearing both fields removes it.
    form = panel.show_update(client.get(created["id"]))
    assert form.policy_groups.value == "default, small"
    assert form.policy_users.value == "bob"
    form.policy_groups.value = ""
    form.policy_users.value = ""
    form.submit.click()
    assert form.errors.value == "", form.errors.value
    assert client.get(created["id"])["spec"]["endpoint"].get("policy") is None
    client.delete(created["id"])
    panel.close()


# ---- "Run an Example" -------------------------------------------------------------------------


def test_private_example_has_the_basic_form_then_the_bearer_form():
    endpoint = "http://gw/deployment/x/api/v1.0/predictions"
    data = {
        "spec": {"endpoint": {"accessType": "private"}},
        "status": {"endpoint": endpoint, "sampleRequest": {"data": {"ndarray": [[1, 2]]}}},
    }
    basic, bearer = curl_example(data).split("\n\n")
    assert basic.splitlines()[0] == f"curl -X POST -u '<client-name>:<client-token>' {endpoint} \\"
    assert bearer.splitlines() == [
        BEARER_NOTE,
        f'curl -X POST -H "Authorization: Bearer <access-token>" {endpoint} \\',
        "  -H 'Content-Type: application/json' \\",
        """  -d '{"data": {"ndarray": [[1, 2]]}}'""",
    ]
    assert basic.splitlines()[-1] == bearer.splitlines()[-1]
    public = curl_example({**data, "spec": {"endpoint": {"accessType": "public"}}})
    assert "Bearer" not in public and "-u" not in public
