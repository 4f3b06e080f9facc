"""Schemathesis against the served OpenAPI document: no operation ever answers a 5xx."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from .conftest import spec
from .serve_helpers import Serve as Server

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402

# A fixed budget per operation, derandomized: the same cases on every run, bounded in time.
# An operation without inputs has little to vary (only negative headers): a few cases do.
MAX_EXAMPLES = 25
MAX_EXAMPLES_WITHOUT_INPUTS = 5
LIVE, STILL, SPARE = "fuzz-live", "fuzz-still", "spare"
# Operations that may change or remove the fuzzed deployments run on the stopped one, whose
# group has no quota: starting it fails at once instead of spawning replicas in a loop.
CHANGES = (
    "PATCH",
    "DELETE",
    "POST /deployments/{id}/stop",
    "POST /deployments/{id}/start",
    "POST /deployments/{id}/rollback",
)

GROUPS = {
    "admins": ["alice"],
    "instanceTypes": [{"name": "cpu-0.5", "cpu": 0.5, "memory": "512Mi"}],
    "groups": [
        {"name": "everyone", "instanceTypes": ["cpu-0.5"]},
        {"name": "fuzz", "enabledDeployment": True, "members": ["alice"]},
        {
            "name": "fuzz-zero",
            "enabledDeployment": True,
            "members": ["alice"],
            "quota": {"cpu": 0, "maxDeployments": 5},
        },
        {"name": SPARE, "enabledDeployment": True, "members": ["alice"]},
    ],
}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory, bundles: dict[str, Path]):
    """A real `primehub-deploy serve` with one running and one stopped deployment."""
    server = Server.with_groups(
        tmp_path_factory.mktemp("fuzz"), GROUPS, "alice", "--PrimeHubApp.bcrypt_rounds=4"
    )
    server.start()
    try:
        api = server.url + "primehub/api/"
        auth = {"Authorization": f"token {server.token}"}
        live = {"id": LIVE, "spec": spec(bundles["v1"], groupName="fuzz")}
        still = {"id": STILL, "spec": {**spec(bundles["v1"], groupName="fuzz-zero"), "stop": True}}
        for body in (live, still):
            response = requests.post(api + "deployments", json=body, headers=auth, timeout=60)
            assert response.status_code == 201, response.text
        deadline = time.monotonic() + 120
        while True:
            state = requests.get(api + f"deployments/{LIVE}", headers=auth, timeout=60).json()
            if state["status"]["phase"] == "Deployed":
                break
            assert time.monotonic() < deadline, state["status"]
            time.sleep(0.2)
        yield server
    finally:
        server.stop()


def _fixed_parameters(operation: Any) -> dict[str, str]:
    """Path parameters naming things that exist, so cases reach past the 404."""
    names = {p.name for p in operation.path_parameters}
    fixed = {}
    if "id" in names:
        changes = operation.method.upper() in CHANGES or operation.label in CHANGES
        fixed["id"] = STILL if changes else LIVE
    if "group" in names:
        fixed["group"] = SPARE
    return fixed


def _describe(case: Any, response: Any) -> str:
    body = case.body if not isinstance(case.body, bytes) else case.body[:300]
    return (
        f"{case.method} {case.formatted_path} query={case.query} "
        f"body={json.dumps(body, default=str)[:300]} -> {response.status_code} "
        f"{response.text[:300]}"
    )


def test_no_operation_answers_a_server_error(fuzz_server: Server):
    url = fuzz_server.url + "primehub/api"
    auth = {"Authorization": f"token {fuzz_server.token}"}
    schema = schemathesis.openapi.from_url(url + "/openapi.json", headers=auth, timeout=60)
    operations = [result.ok() for result in schema.get_all_operations()]
    # An event stream never ends by itself: request/response fuzzing would only wait for it
    # (tests/test_events.py covers /events, its parameters and its 400s).
    operations = [
        op for op in operations if "text/event-stream" not in json.dumps(op.definition.raw)
    ]
    # Deleting last, so every other operation still finds the deployments.
    operations.sort(key=lambda op: op.method.upper() == "DELETE")
    assert {"/deployments/{id}/invoke", "/deployments/{id}/invoke/{path}"} <= {
        op.path for op in operations
    }
    session = requests.Session()
    failures: list[str] = []
    calls: dict[str, int] = {}

    for operation in operations:
        fixed = _fixed_parameters(operation)
        # A followed log is a stream that never ends by itself: request/response fuzzing would
        # only wait for it (tests/test_logs.py follows logs); every other parameter is fuzzed.
        query = {"follow": "false"} if "follow" in {p.name for p in operation.query} else None
        # Positive and negative cases, on random paths and on the deployments that exist.
        strategies = [
            operation.as_strategy(generation_mode=mode, path_parameters=path, query=query)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
            for path in ([None, fixed] if fixed else [None])
        ]

        has_inputs = any((operation.path_parameters, operation.query, operation.body))

        @settings(
            max_examples=MAX_EXAMPLES if has_inputs else MAX_EXAMPLES_WITHOUT_INPUTS,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=st.one_of(strategies))
        def exercise(case: Any) -> None:
            response = case.call(base_url=url, session=session, headers=auth, timeout=60)
            label = case.operation.label
            calls[label] = calls.get(label, 0) + 1
            try:
                case.validate_response(response, checks=[not_a_server_error], headers=auth)
            except Exception:  # the check's failure: record it, keep exploring the rest
                failures.append(_describe(case, response))

        exercise()

    assert not failures, "\n".join(failures)
    assert len(calls) == len(operations), set(op.label for op in operations) - set(calls)
    # The fuzzed deployments were reached, not only 404s: the live one still serves.
    state = session.get(f"{url}/deployments/{LIVE}", headers=auth, timeout=60).json()
    assert state["status"]["phase"] == "Deployed"
