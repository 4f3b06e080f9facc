"""The local engine's reconciler: desired state in, replica processes and gateway routes out."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import psutil

from ...core.config import ConfigStore, format_memory
from ...core.models import DeploymentSpec, Phase, Predictor, PredictorPhase, utcnow
from ...core.quota import Usage, quota_problem_for_usage, requested
from ..rollout import RUNNING_KEEPS_SERVING, Rollout, rollout_phase, stopped_phase
from . import adoption
from .autoscaler import Autoscaler, Bounds, scale_phase
from .files import replica_dir
from .gateway_process import GatewayProcess
from .launcher import ReplicaLauncher
from .processes import ProcessHandle
from .replica import (
    CRASHED,
    READY,
    RETIRING,
    STARTING,
    TERMINATING,
    DeploymentState,
    PredictorState,
    Replica,
    ReplicaSettings,
)
from .rows import ReplicaRows
from .store import ReplicaRecord

# A predictor's rollout phase, and the deployment's phase of a single predictor's.
PREDICTOR_PHASES = {
    Phase.DEPLOYED: PredictorPhase.DEPLOYED,
    Phase.DEPLOYING: PredictorPhase.DEPLOYING,
    Phase.FAILED: PredictorPhase.FAILED,
}
DEPLOYMENT_PHASES = {
    PredictorPhase.DEPLOYED: Phase.DEPLOYED,
    PredictorPhase.DEPLOYING: Phase.DEPLOYING,
    # Waking is scale to zero working as meant: the deployment stays Deployed while its
    # requests are held, so a wake is no new rollout (no "Deployed" notice every time).
    PredictorPhase.WAKING_UP: Phase.DEPLOYED,
    PredictorPhase.SCALED_TO_ZERO: Phase.DEPLOYED,
    PredictorPhase.STOPPED: Phase.STOPPED,
    PredictorPhase.FAILED: Phase.FAILED,
}


def spec_shadow(spec: DeploymentSpec, name: str) -> bool:
    """Whether the predictor called `name` is the spec's shadow."""
    return spec.shadow is not None and spec.shadow.name == name


class Reconciler:
    """Turns each deployment's spec into running, probed replicas and the gateway's routes.

    It owns the deployments' state (`deployments`, by id) and its background loop. Each tick
    admits deployments (group, instance type, quota, machine), starts or retires replicas (a
    rolling update keeps the old ones serving until the new are ready), restarts crashed ones
    with backoff, sets phases and pushes the routing table.
    """

    def __init__(
        self,
        *,
        settings: ReplicaSettings,
        config_store: ConfigStore,
        gateway: GatewayProcess,
        rows: ReplicaRows,
        data_dir: Path,
        engine_id: str,
        make_launcher: Callable[[Callable[[], None]], ReplicaLauncher],
        jobs_usage: Callable[[str], Usage] | None = None,
        log: Any = None,
    ) -> None:
        self.settings = settings
        self.config_store = config_store
        self.gateway = gateway
        self.rows = rows
        self.data_dir = data_dir
        self.engine_id = engine_id
        self.log = log or logging.getLogger(__name__)
        self.launcher = make_launcher(self.kick)
        # What a group's running batch jobs hold: admission counts it beside the deployments.
        self.jobs_usage = jobs_usage or (lambda group: Usage())
        self.deployments: dict[str, DeploymentState] = {}
        # Replica counts of autoscaled predictors; fed by the engine's ScaleLoop.
        self.autoscaler = Autoscaler(settings.scale)
        self._wake = asyncio.Event()
        self._tick_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._loop_task: asyncio.Task | None = None

    # ---- the loop -------------------------------------------------------------------------

    def start(self) -> None:
        """Reconcile in the background until `stop()`."""
        self._loop_task = asyncio.create_task(self._run(), name="primehub-reconciler")

    async def stop(self) -> None:
        """End the loop and every task it spawned (probes, drains)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        for task in list(self._tasks):
            task.cancel()

    def kick(self) -> None:
        """Reconcile now rather than at the next tick."""
        self._wake.set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run beside the tick; cancelled by `stop()`."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop reconciling every other deployment
                self.log.exception("PrimeHub reconciler tick failed")
            busy = any(
                r.phase in (Phase.DEPLOYING, Phase.STOPPING) or r.progress_since is not None
                for r in self.deployments.values()
            )
            period = self.settings.tick_seconds
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), period if busy else period * 4)
            self._wake.clear()

    async def tick(self) -> None:
        """One pass over every deployment; a change is in effect (routes pushed) on return."""
        async with self._tick_lock:
            await self._tick_locked()

    async def _tick_locked(self) -> None:
        await self.gateway.ensure_running()
        config = self.config_store.get()
        await self.rows.flush()
        for probe in self.launcher.due_probes(self.deployments.values()):
            self.spawn(probe)
        for stop in self.launcher.unwanted_templates(self.deployments.values()):
            self.spawn(stop)
        admitted_by_group: dict[str, Usage] = {}
        for state in sorted(self.deployments.values(), key=lambda r: r.seq):
            if state.deleted or state.quarantined:
                continue
            await self._reconcile(state, config, admitted_by_group)
            if state.admitted is not None:
                group = state.deployment.spec.group_name
                admitted_by_group[group] = admitted_by_group.get(group, Usage()).add(state.admitted)
        pushed = await self.push_routes()
        for state in list(self.deployments.values()):
            refused = self.gateway.rejected.get(state.id)
            if refused is not None:  # only this deployment: the gateway routes the others
                reason = f"the gateway refused this deployment's routing entry: {refused}"
                self._set_phase(state, Phase.FAILED, reason)
            for replica in state.replicas:
                if replica.state == TERMINATING and replica.handle is not None:
                    continue
                if replica.state == RETIRING and pushed:
                    replica.state = TERMINATING
                    self.spawn(self.launcher.terminate(state, replica, drain=True))
            await self.rows.save_phase(state)

    # ---- adoption, removal, shutdown ------------------------------------------------------

    async def adopt(self) -> None:
        """Adopt the replicas an earlier server left running; end those nobody wants.

        Processes are found by their mark (so one spawned just before a crash, with no record
        yet, is found too); records of unmarked processes (started by an older version) are
        adopted by pid. Of two processes for one replica, the recorded (else the older) stays.
        """
        records = {r.name: r for r in await self.rows.store.replicas()}
        marked = await asyncio.to_thread(adoption.scan, self.engine_id)
        by_name: dict[str, list[adoption.MarkedProcess]] = {}
        for process in marked:
            by_name.setdefault(process.replica, []).append(process)
        unwanted: list[ProcessHandle] = []
        adopted: set[str] = set()
        for name, processes in by_name.items():
            record = records.get(name)
            processes.sort(key=lambda m: (not (record and record.pid == m.pid), m.create_time))
            keep = processes[0]
            for extra in processes[1:]:
                unwanted.append(ProcessHandle(extra.pid, extra.create_time))
            handle = ProcessHandle.adopt(keep.pid, keep.create_time)
            state = self.deployments.get(keep.deployment_id)
            if handle is None:
                continue
            if state is None or state.quarantined or not keep.port:
                unwanted.append(handle)
                continue
            same = record is not None and record.pid == keep.pid
            row = ReplicaRecord(
                name=name,
                deployment_id=keep.deployment_id,
                slot=keep.slot,
                template=keep.template,
                pid=keep.pid,
                create_time=keep.create_time,
                port=keep.port,
                restarts=record.restarts if record is not None and same else 0,
                start_time=record.start_time if record is not None and same else None,
            )
            self._adopt(state, row, handle, record_stale=not same)
            adopted.add(name)
        for record in records.values():
            if record.name in adopted:
                continue
            state = self.deployments.get(record.deployment_id)
            old = ProcessHandle.adopt(record.pid, record.create_time) if record.pid else None
            if old is not None and record.name not in by_name:
                if state is not None and not state.quarantined:
                    self._adopt(state, record, old, record_stale=False)
                    adopted.add(record.name)
                    continue
                unwanted.append(old)
            await self.rows.write(record.name, None)
        if unwanted:
            self.log.warning("ending %d replica processes no deployment wants", len(unwanted))
        grace = self.settings.stop_grace_seconds
        await asyncio.gather(*(h.terminate(grace) for h in unwanted), return_exceptions=True)

    def _adopt(
        self,
        state: DeploymentState,
        record: ReplicaRecord,
        handle: ProcessHandle,
        *,
        record_stale: bool,
    ) -> None:
        # A replica named by an older version (no predictor part) served the only predictor.
        predictor = (
            adoption.predictor_of(record.name, record.deployment_id)
            or state.deployment.spec.predictor.name
        )
        self._track_predictors(state)
        replica = Replica(
            name=record.name,
            deployment_id=record.deployment_id,
            slot=record.slot,
            template=record.template,
            directory=replica_dir(self.data_dir, record.deployment_id, record.name),
            predictor=predictor,
            port=record.port,
            handle=handle,
            restarts=record.restarts,
            start_time=record.start_time or utcnow(),
            # It was serving when the last server stopped: keep it routed from the first
            # routes push until probes say otherwise (a restart drops no request).
            state=READY,
        )
        state.replicas.append(replica)
        if predictor in state.predictors:  # its rollout goes on, it does not start again
            state.predictors[predictor].template = record.template
        if record_stale:
            self.spawn(self.rows.write(replica.name, self.rows.record_of(replica)))
        self.log.info("adopted replica %s (pid %d)", record.name, record.pid)

    async def remove(self, state: DeploymentState) -> None:
        """End everything that runs a deleted deployment (its row is already gone)."""
        state.deleted = True
        for replica in state.replicas:
            self.rows.discard(replica.name)
        await self.push_routes()
        await asyncio.gather(
            *(self.launcher.terminate(state, r, drain=False) for r in list(state.replicas)),
            return_exceptions=True,
        )
        # Every process of the deployment, known to this server or not.
        strays = await asyncio.to_thread(adoption.scan, self.engine_id, state.id)
        grace = self.settings.stop_grace_seconds
        await asyncio.gather(
            *(ProcessHandle(m.pid, m.create_time).terminate(grace) for m in strays),
            return_exceptions=True,
        )
        self.deployments.pop(state.id, None)

    async def stop_replicas(self) -> None:
        """Stop every replica and forget its row (they start again with the next server)."""
        grace = self.settings.stop_grace_seconds
        handles = [r.handle for s in self.deployments.values() for r in s.replicas if r.handle]
        await asyncio.gather(*(h.terminate(grace) for h in handles), return_exceptions=True)
        await self.launcher.stop_templates()
        for state in self.deployments.values():
            for replica in state.replicas:
                await self.rows.write(replica.name, None)

    # ---- admission ------------------------------------------------------------------------

    def _template(self, spec: DeploymentSpec, predictor: Predictor) -> str:
        # What a replica runs; traffic and shadow are routing, so a weight change alone
        # restarts nothing. The predictor's name is in it: a replica template (templates.py)
        # forks replicas that answer with that name.
        key = json.dumps(
            {
                "predictor": predictor.name,
                "uri": predictor.model_uri,
                "image": predictor.model_image,
                "instanceType": predictor.instance_type,
                "metadata": predictor.metadata,
                "env": [e.to_json() for e in spec.env],
            },
            sort_keys=True,
        )
        return hashlib.sha256(key.encode()).hexdigest()[:5]

    def machine_capacity(self) -> Usage:
        """CPU and memory this machine offers to deployments."""
        cpu = self.settings.machine_cpu or (os.cpu_count() or 1) * self.settings.cpu_overcommit
        memory = self.settings.machine_memory or psutil.virtual_memory().total
        return Usage(cpu=cpu, memory=memory)

    def _admission_problem(self, state: DeploymentState, want: Usage) -> str | None:
        config = self.config_store.get()
        group = state.deployment.spec.group_name
        others = self.jobs_usage(group)
        everyone = Usage()
        for other in self.deployments.values():
            if other is state or other.admitted is None or other.deleted:
                continue
            everyone = everyone.add(other.admitted)
            if other.deployment.spec.group_name == group:
                others = others.add(other.admitted)
        problem = quota_problem_for_usage(config, group, want, others)
        if problem:
            return problem
        capacity = self.machine_capacity()
        if everyone.cpu + want.cpu > capacity.cpu + 1e-9:
            return (
                f"machine resource not enough: cpu {want.cpu:g} requested, "
                f"{max(capacity.cpu - everyone.cpu, 0):g} of {capacity.cpu:g} free"
            )
        if everyone.memory + want.memory > capacity.memory:
            return (
                f"machine resource not enough: memory {format_memory(want.memory)} requested, "
                f"{format_memory(max(capacity.memory - everyone.memory, 0))} free"
            )
        return None

    # ---- one deployment -------------------------------------------------------------------

    async def _reconcile(
        self, state: DeploymentState, config: Any, admitted_by_group: dict[str, Usage]
    ) -> None:
        spec = state.deployment.spec
        await self.launcher.observe_exits(state)
        self._track_predictors(state)
        if spec.stop:
            state.admitted = None
            self._retire(state, list(state.replicas))
            self._unroute(state, PredictorPhase.STOPPED, "")
            self._set_phase(state, stopped_phase(sum(1 for r in state.replicas if r.alive)), "")
            return
        problem = next(
            (
                found
                for p in spec.predictors
                if (found := config.problem_with(spec.group_name, p.instance_type))
            ),
            None,
        )
        if problem:
            state.admitted = None
            self._retire(state, list(state.replicas))
            self._unroute(state, PredictorPhase.FAILED, problem)
            self._set_phase(state, Phase.FAILED, problem)
            return
        want = requested(config, state.deployment)
        if state.admitted != want:
            problem = self._admission_problem(state, want)
            if problem:
                for pstate in state.predictors.values():
                    pstate.routed = [r for r in state.replicas_of(pstate.name) if r.ready]
                serving = state.routed
                self._set_phase(
                    state, Phase.FAILED, problem + (RUNNING_KEEPS_SERVING if serving else "")
                )
                return
            state.admitted = want
        for predictor in spec.predictors:
            await self._reconcile_predictor(state, state.predictors[predictor.name], predictor)
        # Replicas of predictors no longer in the spec leave traffic with this push.
        self._retire(state, [r for r in state.replicas if r.predictor not in state.predictors])
        self._set_phase(state, *self._deployment_phase(state))

    def _track_predictors(self, state: DeploymentState) -> None:
        """One PredictorState per predictor of the spec, in spec order."""
        old = state.predictors
        state.predictors = {
            p.name: old.get(p.name) or PredictorState(p.name)
            for p in state.deployment.spec.predictors
        }

    def _unroute(self, state: DeploymentState, phase: PredictorPhase, message: str) -> None:
        for pstate in state.predictors.values():
            pstate.routed = []
            pstate.progress_since = None
            pstate.phase, pstate.message = phase, message

    def wanted_replicas(self, state: DeploymentState, predictor: Predictor) -> int:
        """How many replicas `predictor` of the deployment should run now.

        The fixed count, or what the autoscaler decided for an autoscaled predictor (0 when
        it scaled to zero; the engine's ScaleLoop feeds it the gateway's load).
        """
        if predictor.replicas is not None:
            return predictor.replicas
        key = (state.id, predictor.name)
        return self.autoscaler.scaler(key, Bounds.of(predictor), time.monotonic()).replicas

    async def _reconcile_predictor(
        self, state: DeploymentState, pstate: PredictorState, predictor: Predictor
    ) -> None:
        """Start, probe and retire one predictor's replicas: a rolling update per predictor."""
        spec = state.deployment.spec
        template = self._template(spec, predictor)
        wanted = self.wanted_replicas(state, predictor)
        if template != pstate.template or wanted > pstate.wanted_replicas:
            pstate.progress_since = time.monotonic()
        pstate.template = template
        pstate.wanted_replicas = wanted
        mine = state.replicas_of(predictor.name)
        current = [r for r in mine if r.template == template]
        current = [r for r in current if r.state not in (RETIRING, TERMINATING)]
        slots = {r.slot for r in current}
        leaving = {r.slot: r for r in mine if r.template == template and r not in current}
        for slot in range(wanted):
            if slot in slots:
                continue
            going = leaving.get(slot)
            if going is not None and going.state == RETIRING and going.alive:
                # Scaled down a moment ago and wanted again: the process never stopped, so it
                # serves again (after a probe) instead of a cold start.
                going.state = STARTING
                current.append(going)
                continue
            if going is not None:
                continue  # its name is still in use; the slot starts once it has stopped
            replica = self._new_replica(state, predictor.name, slot, template)
            state.replicas.append(replica)
            current.append(replica)
        self._retire(state, [r for r in current if r.slot >= wanted])
        current = [r for r in current if r.slot < wanted]
        now = time.monotonic()
        for replica in current:
            if replica.handle is None and now >= replica.next_start:
                try:
                    await self.launcher.start(state, replica, self.deployments.values())
                except OSError as error:  # e.g. no space for its directory: try again later
                    replica.last_exit = f"could not start: {error}"
                    replica.state = CRASHED
                    replica.next_start = now + self.settings.backoff(replica.restarts)
                    replica.restarts += 1
        ready = [r for r in current if r.ready]
        old = [r for r in mine if r not in current and r.state not in (TERMINATING, RETIRING)]
        old_ready = [r for r in old if r.ready]
        complete = len(ready) == wanted
        pstate.routed = ready if complete else ready + old_ready
        if complete:
            self._retire(state, old)
            pstate.progress_since = None
        waited = now - pstate.progress_since if pstate.progress_since is not None else 0.0
        crashed = next((r for r in current if r.state == CRASHED), None)
        phase, message = rollout_phase(
            Rollout(
                wanted=wanted,
                ready=len(ready),
                complete=complete,
                old_serving=bool(old_ready),
                problem=next((r.load_error for r in current if r.load_error), ""),
                timed_out=pstate.progress_since is not None
                and waited > self.settings.deploy_timeout,
                deploy_timeout=self.settings.deploy_timeout,
                restarting=(
                    f"{crashed.name} {crashed.last_exit}, restart {crashed.restarts}"
                    if crashed is not None
                    else ""
                ),
                last_exit=next((r.last_exit for r in current if r.last_exit), ""),
            )
        )
        if predictor.autoscaled and phase == Phase.DEPLOYING and ready and not old:
            # More replicas of the running version (scaling up) is no rollout: still serving.
            phase, message = Phase.DEPLOYED, f"scaling up: {message}"
        pstate.phase, pstate.message = PREDICTOR_PHASES[phase], message
        scaler = self.autoscaler.scalers.get((state.id, predictor.name))
        if scaler is not None and ready:
            scaler.woke = False  # awake: a replica answers
        elif scaler is not None and not scaler.at_zero:
            # Idle time counts from a ready replica: one still loading is not idle.
            scaler.last_active = now
        if phase != Phase.FAILED:
            scaled = scale_phase(predictor, scaler, ready=len(ready))
            if scaled is not None:
                pstate.phase, pstate.message = scaled

    def _deployment_phase(self, state: DeploymentState) -> tuple[Phase, str]:
        """Deployed when every predictor with traffic is; a shadow's trouble is only told."""
        spec = state.deployment.spec
        pstates = state.predictors
        if len(pstates) == 1:
            only = next(iter(pstates.values()))
            return DEPLOYMENT_PHASES[only.phase], only.message
        weights = spec.weights()
        required = [p for name, p in pstates.items() if weights.get(name, 0) > 0]
        failed = [p for p in required if p.phase == PredictorPhase.FAILED]
        if failed:
            return Phase.FAILED, "; ".join(f"predictor {p.name}: {p.message}" for p in failed)
        pending = [p for p in required if DEPLOYMENT_PHASES[p.phase] != Phase.DEPLOYED]
        if pending:
            return Phase.DEPLOYING, "; ".join(
                f"predictor {p.name}: {p.message}" for p in pending if p.message
            )
        # Predictors scaled to zero or waking are told, like a shadow's trouble.
        told = [p for p in pstates.values() if p.phase != PredictorPhase.DEPLOYED and p.message]
        return Phase.DEPLOYED, "; ".join(
            f"{'shadow ' if spec_shadow(spec, p.name) else ''}predictor {p.name}: {p.message}"
            for p in told
        )

    def _set_phase(self, state: DeploymentState, phase: Phase, message: str) -> None:
        if (state.phase, state.message) != (phase, message):
            self.log.info("deployment %s: %s %s", state.id, phase.value, message)
        state.phase, state.message = phase, message

    def _new_replica(
        self, state: DeploymentState, predictor: str, slot: int, template: str
    ) -> Replica:
        name = adoption.replica_name(state.id, predictor, template, slot)
        return Replica(
            name=name,
            predictor=predictor,
            deployment_id=state.id,
            slot=slot,
            template=template,
            directory=replica_dir(self.data_dir, state.id, name),
        )

    def _retire(self, state: DeploymentState, replicas: list[Replica]) -> None:
        """Take replicas out of traffic; they stop after the next routes push and a drain."""
        for replica in replicas:
            if replica.state in (TERMINATING, RETIRING):
                continue
            if replica.handle is None or not replica.alive:
                state.replicas.remove(replica)
                self.spawn(self.rows.write(replica.name, None))
                continue
            replica.state = RETIRING

    # ---- routes ---------------------------------------------------------------------------

    def routes(self) -> dict[str, Any]:
        """The gateway's routing table: every deployment, its predictors and routed replicas."""
        routes: dict[str, Any] = {}
        for state in self.deployments.values():
            if state.deleted:
                continue
            spec = state.deployment.spec
            weights = spec.weights()
            routes[state.id] = {
                "phase": state.phase.value,
                "message": state.message,
                "accessType": spec.endpoint.access_type,
                "clients": dict(state.client_hashes),
                "stickyHeader": spec.routing.sticky_header,
                "predictors": [
                    {
                        "name": predictor.name,
                        "traffic": weights.get(predictor.name, 0),
                        "shadow": predictor.shadow,
                        "phase": pstate.phase.value,
                        "message": pstate.message,
                        "replicas": [
                            {"name": r.name, "url": r.url}
                            for r in pstate.routed
                            if r.ready and r.state == READY
                        ],
                        # Without a replica, its requests wait in the gateway for one.
                        "hold": predictor.idle_seconds is not None
                        and pstate.phase != PredictorPhase.FAILED,
                    }
                    for predictor in spec.predictors
                    if (pstate := state.predictors.get(predictor.name)) is not None
                ],
            }
        return routes

    async def push_routes(self) -> bool:
        """Send the routing table to the gateway; False when it was not taken."""
        return await self.gateway.push(self.routes())
