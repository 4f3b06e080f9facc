"""MemoryEngine: an in-memory Engine for fast tests of the service and the engine contract."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from primehub_jupyter.core.errors import Conflict, NotFound, Unchangeable
from primehub_jupyter.core.metrics import (
    DeploymentSeries,
    MetricsReport,
    MetricsTotals,
    ReplicaSeries,
)
from primehub_jupyter.core.models import DeploymentRecord, Phase, ReplicaStatus, utcnow
from primehub_jupyter.core.quota import Usage, quota_problem_for_usage, requested
from primehub_jupyter.core.traffic import PredictorCounters
from primehub_jupyter.engines.base import Engine, InvokeResult

ENDPOINT_BASE = "http://memory.invalid"


@dataclass
class _Entry:
    """One stored deployment and what "runs" it: replica names, their logs, client hashes."""

    deployment: DeploymentRecord
    version: int = 1
    phase: Phase = Phase.DEPLOYING
    message: str = ""
    template: str = ""
    replicas: list[str] = field(default_factory=list)
    logs: dict[str, list[str]] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[float, int, str]] = field(default_factory=list)
    quarantine: str | None = None
    counters: dict[str, PredictorCounters] = field(default_factory=dict)


class MemoryEngine(Engine):
    """Keeps deployments in a dict and settles each change on the next turn of the event loop.

    It behaves as the real engines do where the service or a client can tell (phases,
    resourceVersion conflicts, client hashes, replica logs, the metrics document, quota),
    and runs nothing: a replica is a name with log lines, an invoke sums the rows it gets.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._entries: dict[str, _Entry] = {}
        self._templates = 0
        self._written = asyncio.Event()
        self.replace_calls = 0

    @property
    def endpoint_base(self) -> str | None:
        return ENDPOINT_BASE

    # ---- test hooks -------------------------------------------------------------------

    def quarantine(self, deployment_id: str, message: str) -> None:
        """Mark a deployment unreadable, as a corrupt stored row is: Failed and Unchangeable."""
        entry = self._entry(deployment_id)
        entry.quarantine = message
        entry.phase, entry.message = Phase.FAILED, message

    def set_counters(self, deployment_id: str, *counters: PredictorCounters) -> None:
        """Set the per-predictor counts the engine reports (what a gateway would have counted)."""
        entry = self._entry(deployment_id)
        for counter in counters:
            entry.counters[counter.name] = counter.model_copy(deep=True)

    def client_hashes(self, deployment_id: str) -> dict[str, str]:
        """The stored token hash of each client (what the gateway would check)."""
        return dict(self._entry(deployment_id).hashes)

    # ---- the Engine interface ---------------------------------------------------------

    def _entry(self, deployment_id: str) -> _Entry:
        entry = self._entries.get(deployment_id)
        if entry is None:
            raise NotFound(f"deployment '{deployment_id}' not found")
        return entry

    async def create(self, deployment: DeploymentRecord) -> DeploymentRecord:
        await _io()
        if deployment.id in self._entries:
            raise Conflict(f"deployment id '{deployment.id}' is already taken")
        stored = deployment.model_copy(deep=True)
        stored.status.creation_time = stored.status.creation_time or utcnow()
        stored.status.last_updated = stored.status.last_updated or stored.status.creation_time
        phase = Phase.STOPPED if stored.spec.stop else Phase.DEPLOYING
        entry = self._entries[stored.id] = _Entry(stored, phase=phase)
        self._settle_soon(stored.id)
        return self._with_status(entry)

    async def get(self, deployment_id: str) -> DeploymentRecord:
        await _io()
        return self._with_status(self._entry(deployment_id))

    async def list_deployments(self) -> list[DeploymentRecord]:
        return [self._with_status(e) for e in self._entries.values()]

    async def replace(
        self, deployment: DeploymentRecord, *, client_secret: tuple[str, str] | None = None
    ) -> DeploymentRecord:
        self.replace_calls += 1
        await _io()
        entry = self._entry(deployment.id)
        if entry.quarantine is not None:
            raise Unchangeable(entry.quarantine)
        if deployment.resource_version != str(entry.version):
            raise Conflict(
                f"deployment '{deployment.id}' was changed by someone else "
                f"(resourceVersion {deployment.resource_version} is stale, current is "
                f"{entry.version}); reload it and apply your change again"
            )
        stored = deployment.model_copy(deep=True)
        stored.status.creation_time = entry.deployment.status.creation_time
        stored.status.last_updated = utcnow()
        entry.deployment = stored
        entry.version += 1
        names = {c.name for c in stored.spec.endpoint.clients}
        entry.hashes = {k: v for k, v in entry.hashes.items() if k in names}
        if client_secret is not None:
            entry.hashes[client_secret[0]] = client_secret[1]
        if stored.spec.stop:
            entry.phase = Phase.STOPPING if entry.replicas else Phase.STOPPED
        elif entry.phase != Phase.DEPLOYED or self._template(stored) != entry.template:
            entry.phase = Phase.DEPLOYING
        self._settle_soon(stored.id)
        return self._with_status(entry)

    async def delete(self, deployment_id: str) -> None:
        self._entry(deployment_id)
        del self._entries[deployment_id]
        self._wake()

    async def replica_names(self, deployment_id: str) -> list[str]:
        entry = self._entry(deployment_id)
        older = [n for n in reversed(entry.logs) if n not in entry.replicas]
        return [*entry.replicas, *older]

    def _selected(self, entry: _Entry, replica: str | None) -> list[str]:
        if replica is not None:
            return [replica] if replica in entry.logs else []
        return list(entry.replicas) or [n for n in reversed(entry.logs)][:1]

    async def logs(self, deployment_id: str, replica: str | None, tail: int | None) -> list[str]:
        entry = self._entry(deployment_id)
        names = self._selected(entry, replica)
        tagged = len(names) > 1
        lines = sorted(
            (line[:24], _tag(name, line) if tagged else line)
            for name in names
            for line in entry.logs[name]
        )
        merged = [line for _, line in lines]
        return merged if tail is None else merged[-tail:] if tail else []

    async def follow_logs(self, deployment_id: str, replica: str | None) -> AsyncIterator[str]:
        entry = self._entry(deployment_id)
        seen = {name: len(lines) for name, lines in entry.logs.items()}
        while deployment_id in self._entries:
            names = self._selected(entry, replica)
            for name in names:
                lines = entry.logs.get(name, [])
                for line in lines[seen.get(name, 0) :]:
                    yield _tag(name, line) if replica is None and len(names) > 1 else line
                seen[name] = len(lines)
            written = self._written
            await written.wait()

    async def download_logs(self, deployment_id: str, replica: str | None) -> AsyncIterator[bytes]:
        entry = self._entry(deployment_id)
        names = [replica] if replica is not None else list(entry.logs)
        for name in names:
            if len(names) > 1:
                yield f"===== replica {name} =====\n".encode()
            yield "".join(line + "\n" for line in entry.logs.get(name, [])).encode()

    async def predictor_counters(self, deployment_id: str) -> list[PredictorCounters]:
        entry = self._entry(deployment_id)
        return [c.model_copy(deep=True) for c in entry.counters.values()]

    async def metrics(self, deployment_id: str, window: float, step: float) -> MetricsReport:
        entry = self._entry(deployment_id)
        points = max(1, int(window // step))
        now = time.time()
        last = math.floor(now / step) * step
        times = [last - (points - 1 - i) * step for i in range(points)]
        series = DeploymentSeries(**{f: [] for f in DeploymentSeries.model_fields})
        replicas = {
            name: ReplicaSeries(**{f: [] for f in ReplicaSeries.model_fields})
            for name in entry.replicas
        }
        for start in times:
            inside = [r for r in entry.requests if start <= r[0] < start + step]
            ok = sum(1 for _, code, _ in inside if 200 <= code < 300)
            client = sum(1 for _, code, _ in inside if 400 <= code < 500)
            server = sum(1 for _, code, _ in inside if code >= 500)
            series.requests_per_second.append(len(inside) / step)
            series.predict_requests_per_second.append(len(inside) / step)
            series.success_rate.append(ok / len(inside) if inside else None)
            series.client_errors_per_second.append(client / step)
            series.server_errors_per_second.append(server / step)
            for quantile in (series.latency_p50, series.latency_p90, series.latency_p99):
                quantile.append(0.001 if inside else None)
            series.reward.append(None)
            for name, columns in replicas.items():
                served = sum(1 for r in inside if r[2] == name)
                columns.requests_per_second.append(served / step)
                columns.latency_p99.append(0.001 if served else None)
                columns.cpu.append(0.0)
                columns.memory.append(0.0)
        counted = [r for r in entry.requests if r[0] >= times[0]]
        return MetricsReport(
            deployment_id=deployment_id,
            window=points * step,
            step=step,
            timestamps=times,
            series=series,
            replicas=replicas,
            totals=MetricsTotals(
                requests=len(counted),
                predict_requests=len(counted),
                client_errors=sum(1 for r in counted if 400 <= r[1] < 500),
                server_errors=sum(1 for r in counted if r[1] >= 500),
                feedback=0,
                reward=None,
            ),
        )

    async def invoke(
        self, deployment_id: str, path: str, body: bytes, headers: dict[str, str], user: str
    ) -> InvokeResult:
        entry = self._entry(deployment_id)
        json_type = {"Content-Type": "application/json"}
        if entry.phase != Phase.DEPLOYED or not entry.replicas:
            message = f"deployment '{deployment_id}' is {entry.phase.value}"
            return InvokeResult(503, json.dumps({"message": message}).encode(), json_type)
        replica = entry.replicas[len(entry.requests) % len(entry.replicas)]
        try:
            rows = json.loads(body or b"{}")["data"]["ndarray"]
            answer: dict[str, Any] = {
                "data": {"names": ["sum"], "ndarray": [[float(sum(row))] for row in rows]},
                "meta": {"replica": replica, "user": user},
            }
            code = 200
        except (ValueError, KeyError, TypeError):
            answer, code = {"status": {"code": 400, "info": "invalid payload"}}, 400
        entry.requests.append((time.time(), code, replica))
        self._log(entry, replica, f"POST /{path.lstrip('/')} {code} user={user}")
        return InvokeResult(code, json.dumps(answer).encode(), json_type)

    # ---- the "reconciler" -------------------------------------------------------------

    def _settle_soon(self, deployment_id: str) -> None:
        asyncio.get_running_loop().call_soon(self._settle, deployment_id)

    def _template(self, deployment: DeploymentRecord) -> str:
        spec = deployment.spec
        return json.dumps([spec.predictor.to_json(), [e.to_json() for e in spec.env]])

    def _settle(self, deployment_id: str) -> None:
        """Bring one deployment to its spec at once: what the real reconcilers converge to."""
        entry = self._entries.get(deployment_id)
        if entry is None or entry.quarantine is not None:
            return
        spec = entry.deployment.spec
        if spec.stop:
            self._retire(entry, list(entry.replicas))
            entry.phase, entry.message = Phase.STOPPED, ""
            return
        assert self.config_store is not None
        config = self.config_store.get()
        problem = config.problem_with(spec.group_name, spec.predictor.instance_type)
        if problem is None:
            others = Usage()
            for other in self._entries.values():
                same_group = other.deployment.spec.group_name == spec.group_name
                if other is not entry and same_group and other.replicas:
                    others = others.add(requested(config, other.deployment))
            want = requested(config, entry.deployment)
            problem = quota_problem_for_usage(config, spec.group_name, want, others)
        if problem is not None:
            self._retire(entry, list(entry.replicas))
            entry.phase, entry.message = Phase.FAILED, problem
            return
        template = self._template(entry.deployment)
        if template != entry.template:
            self._templates += 1
            entry.template = template
            self._retire(entry, list(entry.replicas))
        wanted = spec.predictor.replicas
        self._retire(entry, entry.replicas[wanted:])
        key = f"{self._templates:05x}"
        while len(entry.replicas) < wanted:
            name = f"{deployment_id}-{key}-{len(entry.replicas)}"
            entry.replicas.append(name)
            entry.logs.pop(name, None)
            entry.logs[name] = []
            self._log(entry, name, "[engine] replica started")
            self._log(entry, name, "model loaded; serving on port 9000")
        entry.phase, entry.message = Phase.DEPLOYED, ""

    def _retire(self, entry: _Entry, names: list[str]) -> None:
        for name in names:
            self._log(entry, name, "[engine] replica stopped")
            entry.replicas.remove(name)

    def _log(self, entry: _Entry, replica: str, text: str) -> None:
        entry.logs.setdefault(replica, []).append(f"{utcnow()} {text}")
        self._wake()

    def _wake(self) -> None:
        self._written.set()
        self._written = asyncio.Event()

    def _with_status(self, entry: _Entry) -> DeploymentRecord:
        deployment = entry.deployment.model_copy(deep=True)
        deployment.resource_version = str(entry.version)
        status = deployment.status
        status.phase, status.message = entry.phase, entry.message
        status.replicas = len(entry.replicas)
        status.available_replicas = len(entry.replicas) if entry.phase == Phase.DEPLOYED else 0
        status.endpoint = f"{ENDPOINT_BASE}/deployment/{deployment.id}/api/v1.0/predictions"
        status.replica_statuses = [
            ReplicaStatus(name=name, ready=True, phase="Running") for name in entry.replicas
        ]
        return deployment


async def _io() -> None:
    # Where a real engine waits for SQLite or the API server: other tasks run meanwhile, so
    # two writers can interleave here as they do there (the service's retries need that).
    await asyncio.sleep(0)


def _tag(replica: str, line: str) -> str:
    return f"{line[:24]} [{replica}] {line[25:]}"
