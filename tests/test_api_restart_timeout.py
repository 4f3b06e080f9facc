"""Deploy timeout: a rollout slower than the timeout is Failed, and recovers once ready."""

from __future__ import annotations

import pytest

from .conftest import spec


@pytest.fixture
def engine_config():
    # Loading a scikit-learn model takes about a second: far longer than this timeout.
    return {"deploy_timeout": 0.05, "drain_seconds": 0.2, "stop_grace_seconds": 5.0}


async def test_deploy_timeout_fails_then_recovers(api, bundles):
    deployment_id = (await api.ok("POST", "deployments", {"spec": spec(bundles["v1"])}))["id"]
    failed = await api.wait_phase(deployment_id, "Failed")
    assert "not ready within the deploy timeout of 0.05 s" in failed["status"]["message"]
    # The engine keeps trying: once the replica is ready, the deployment is Deployed.
    await api.wait_phase(deployment_id, "Deployed")
