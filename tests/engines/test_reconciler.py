"""The local reconciler alone: real model-server replicas and a real SQLite store, no engine."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from primehub_jupyter.core.config import ConfigStore
from primehub_jupyter.core.models import (
    DeploymentRecord,
    DeploymentSpec,
    DeploymentStatus,
    Phase,
    utcnow,
)
from primehub_jupyter.engines.local.launcher import ReplicaLauncher
from primehub_jupyter.engines.local.processes import Prober
from primehub_jupyter.engines.local.reconciler import Reconciler
from primehub_jupyter.engines.local.replica import DeploymentState, ReplicaSettings
from primehub_jupyter.engines.local.rows import ReplicaRows
from primehub_jupyter.engines.local.sandbox import Sandbox
from primehub_jupyter.engines.local.store import Store

from ..conftest import OWNER, spec, wait_until


class RoutesTable:
    """Stands in for the gateway process: it keeps the last routing table it was given."""

    def __init__(self) -> None:
        self.routes: dict[str, Any] = {}
        self.pushes = 0
        self.rejected: dict[str, str] = {}

    async def ensure_running(self) -> None:
        """The real gateway restarts itself here; this one is always up."""

    async def push(self, routes: dict[str, Any]) -> bool:
        self.routes = routes
        self.pushes += 1
        return True

    def replica_urls(self, deployment_id: str, predictor: str | None = None) -> list[str]:
        """URLs routed for a deployment (every predictor's, or one's)."""
        predictors = self.routes.get(deployment_id, {}).get("predictors", [])
        return [
            r["url"]
            for p in predictors
            if predictor is None or p["name"] == predictor
            for r in p["replicas"]
        ]


class Harness:
    """A reconciler wired to a store, a launcher and the routes table; ticks on demand."""

    def __init__(self, root: Path, groups_file: Path) -> None:
        self.root = root
        self.store = Store(root / "state.sqlite3")
        self.prober = Prober()
        self.gateway = RoutesTable()
        self.rows = ReplicaRows(self.store)
        settings = ReplicaSettings(
            drain_seconds=0.0,
            stop_grace_seconds=5.0,
            restart_backoff_max=1.0,
            python_executable=sys.executable,
            deploy_timeout=120.0,
        )
        config_store = ConfigStore(groups_file, user=OWNER)
        self.reconciler = Reconciler(
            settings=settings,
            config_store=config_store,
            gateway=self.gateway,  # type: ignore[arg-type]
            rows=self.rows,
            data_dir=root,
            engine_id="reconciler-test",
            make_launcher=lambda kick: ReplicaLauncher(
                settings=settings,
                config_store=config_store,
                rows=self.rows,
                sandbox=Sandbox("off", python=sys.executable),
                prober=self.prober,
                engine_id="reconciler-test",
                request_log_dir=root / "request-logs",
                resolve_model_uri=Path,
                kick=kick,
            ),
        )

    async def add(
        self, deployment_id: str, bundle: Path | dict[str, Any], **overrides: Any
    ) -> DeploymentState:
        """Store and track a deployment of a bundle (or of a whole spec document)."""
        now = utcnow()
        document = bundle if isinstance(bundle, dict) else spec(bundle, **overrides)
        deployment = DeploymentRecord(
            id=deployment_id,
            spec=DeploymentSpec.model_validate(document),
            status=DeploymentStatus(creation_time=now, last_updated=now),
        )
        seq = await self.store.insert(deployment)
        state = DeploymentState(deployment, seq)
        self.reconciler.deployments[deployment_id] = state
        return state

    async def until(self, state: DeploymentState, phase: Phase, what: str = "") -> None:
        """Tick until the deployment reaches `phase` (probes run beside the ticks)."""

        async def reached() -> bool:
            await self.reconciler.tick()
            return state.phase == phase

        await wait_until(reached, limit=120, what=what or f"{state.id} {phase.value}")

    async def close(self) -> None:
        await self.reconciler.stop()
        await self.reconciler.stop_replicas()
        await self.store.close()
        await self.prober.close()


@pytest.fixture
def harness(tmp_path: Path, groups_file: Path, jp_asyncio_loop: Any) -> Iterator[Harness]:
    made = Harness(tmp_path / "data", groups_file)
    jp_asyncio_loop.run_until_complete(made.store.open())
    yield made
    jp_asyncio_loop.run_until_complete(made.close())


def answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/health/ping", timeout=5).status_code == 200
    except requests.RequestException:
        return False


async def test_a_deployment_rolls_out_and_its_ready_replica_is_routed(harness, bundles):
    state = await harness.add("iris-a", bundles["v1"])
    await harness.reconciler.tick()
    assert state.phase == Phase.DEPLOYING and state.message == "0 of 1 replicas ready"
    assert harness.gateway.replica_urls("iris-a") == []  # not routed before it is ready

    await harness.until(state, Phase.DEPLOYED)
    assert state.message == ""
    [url] = harness.gateway.replica_urls("iris-a")
    assert answers(url)
    # Its row (pid and port) is stored for adoption after a restart; its phase is saved.
    [row] = await harness.store.replicas()
    assert row.deployment_id == "iris-a" and row.pid == state.replicas[0].handle.pid
    assert url.endswith(f":{row.port}")
    [stored] = await harness.store.load_all()
    assert stored.phase == "Deployed"


async def test_a_rolling_update_routes_the_old_replica_until_the_new_one_is_ready(harness, bundles):
    state = await harness.add("iris-b", bundles["v1"])
    await harness.until(state, Phase.DEPLOYED)
    [old] = state.replicas
    [old_url] = harness.gateway.replica_urls("iris-b")

    state.deployment.spec.predictor.model_uri = str(bundles["v2"])
    await harness.reconciler.tick()
    assert state.phase == Phase.DEPLOYING
    assert old_url in harness.gateway.replica_urls("iris-b")  # still serving meanwhile

    await harness.until(state, Phase.DEPLOYED)
    [new_url] = harness.gateway.replica_urls("iris-b")
    assert new_url != old_url and answers(new_url)
    # The old replica is retired after the push that took it out of the routes, then ends.
    await wait_until(lambda: old.handle is not None and old.handle.exit_code() is not None)
    assert old not in state.replicas or old.state in ("Retiring", "Terminating")


async def test_a_model_that_cannot_load_fails_and_the_previous_version_keeps_serving(
    harness, bundles
):
    state = await harness.add("iris-c", bundles["v1"])
    await harness.until(state, Phase.DEPLOYED)
    [old_url] = harness.gateway.replica_urls("iris-c")

    state.deployment.spec.predictor.model_uri = str(bundles["broken"])
    await harness.until(state, Phase.FAILED)
    assert state.message.endswith("; the previous version keeps serving")
    assert "model" in state.message.lower()
    assert harness.gateway.replica_urls("iris-c") == [old_url] and answers(old_url)


async def test_stop_retires_every_replica_then_reports_stopped(harness, bundles):
    state = await harness.add("iris-d", bundles["v1"])
    await harness.until(state, Phase.DEPLOYED)
    [replica] = state.replicas
    state.deployment.spec.stop = True
    await harness.until(state, Phase.STOPPED)
    assert harness.gateway.replica_urls("iris-d") == []
    assert replica.handle is not None and replica.handle.exit_code() is not None

    # Stopped means nothing alive; the exited replica and its row go when the exit is
    # noticed, which may be a tick later.
    async def forgotten() -> bool:
        return state.replicas == [] and await harness.store.replicas() == []

    await wait_until(forgotten, what="the stopped replica forgotten")


async def test_a_crashed_replica_is_restarted_and_counted(harness, bundles):
    state = await harness.add("iris-e", bundles["v1"])
    await harness.until(state, Phase.DEPLOYED)
    [replica] = state.replicas
    first = replica.handle
    assert first is not None
    await first.terminate(5.0)  # the process ends behind the reconciler's back

    async def restarted() -> bool:
        await harness.reconciler.tick()
        return replica.restarts == 1 and replica.handle not in (None, first)

    await wait_until(restarted, what="the replica restarted")
    assert replica.last_exit  # why it ended, shown in its status
    await harness.until(state, Phase.DEPLOYED)
    assert answers(harness.gateway.replica_urls("iris-e")[0])


async def test_a_deployment_over_the_group_quota_is_failed_and_starts_nothing(harness, bundles):
    # The "small" group has 1 CPU: two replicas of 1 CPU do not fit.
    state = await harness.add(
        "iris-f", bundles["v1"], groupName="small", instanceType="cpu-1", replicas=2
    )
    await harness.reconciler.tick()
    assert state.phase == Phase.FAILED
    assert state.message.startswith("group resource not enough: cpu 2 requested")
    assert state.replicas == [] and harness.gateway.replica_urls("iris-f") == []
