"""DeploymentService: who may do what, validation, history and clients, over any engine."""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..engines.base import DEFAULT_TAIL, Engine, InvokeResult
from .bodies import (
    ChangeMessage,
    ClientCreated,
    CreateDeployment,
    CreateJob,
    NewClient,
    Promote,
    Rollback,
    UpdateDeployment,
    parse_spec,
    revalidate,
)
from .compare import ComparisonReport, compare_report, promoted_spec
from .config import ConfigStore, PrimeHubConfig
from .errors import BadRequest, Conflict, NotFound, Unchangeable, ValidationError
from .ids import generate_id, id_problem, invoke_path_problem
from .jobrequests import job_quota_problem, job_record
from .jobs import JobRecord, job_id_problem
from .metrics import MetricsReport
from .models import (
    IMMUTABLE_SPEC_FIELDS,
    MAX_HISTORY,
    ClientRef,
    DeploymentRecord,
    DeploymentSpec,
    DeploymentStatus,
    HistoryEntry,
    Phase,
    merge_patch,
    utcnow,
)
from .quota import group_usage, jobs_usage
from .security import hash_token, new_token

log = logging.getLogger(__name__)

# A change without a resourceVersion is retried on a conflict (re-read, re-apply, re-validate),
# as `kubectl apply` retries: bounded, with a small randomized backoff so contenders spread out.
MAX_CHANGE_ATTEMPTS = 50
_BACKOFF_BASE = 0.005
_BACKOFF_CAP = 0.2
_REPLICA_INDEX = re.compile(r"[0-9]{1,6}")

SpecBuilder = Callable[[DeploymentRecord], DeploymentSpec]


def holds_resources(deployment: DeploymentRecord) -> bool:
    """Whether a deployment counts against its group's quota right now."""
    if deployment.spec.stop:
        return deployment.status.replicas > 0
    return deployment.status.phase in (Phase.DEPLOYING, Phase.DEPLOYED) or (
        deployment.status.replicas > 0
    )


class DeploymentService:
    """The one place that enforces groups, membership, immutability, history and clients."""

    def __init__(self, engine: Engine, config_store: ConfigStore, *, bcrypt_rounds: int = 12):
        self.engine = engine
        self.config_store = config_store
        self.bcrypt_rounds = bcrypt_rounds
        # One job admitted at a time: two submissions must not both take the last quota.
        self._job_admission = asyncio.Lock()

    # ---- users and groups -------------------------------------------------------------

    def config(self) -> PrimeHubConfig:
        return self.config_store.get()

    async def me(self, user: str) -> dict[str, Any]:
        """The signed-in user, whether they are an admin, and their groups."""
        config = self.config()
        return {
            "name": user,
            "isAdmin": config.is_admin(user),
            "engine": type(self.engine).__name__,
            "endpointBase": self.engine.endpoint_base,
            "groups": await self.groups(user),
        }

    async def groups(self, user: str) -> list[dict[str, Any]]:
        """The user's groups with quota, current usage and instance types."""
        config = self.config()
        deployments = await self.engine.list_deployments()
        jobs = await self.engine.running_jobs()
        result = []
        for group in config.user_groups(user):
            running = [
                d for d in deployments if d.spec.group_name == group.name and holds_resources(d)
            ]
            usage = group_usage(config, running)
            usage = usage.add(jobs_usage(config, deployments, jobs, group.name))
            result.append(
                {
                    "name": group.name,
                    "displayName": group.display_name or group.name,
                    "enabledDeployment": group.enabled_deployment,
                    "isMember": user in group.members,
                    "quota": group.quota.to_json(),
                    "usage": usage.to_json(),
                    "instanceTypes": [it.to_json() for it in config.group_instance_types(group)],
                }
            )
        return result

    async def instance_types(self, user: str, group: str | None = None) -> list[dict[str, Any]]:
        """Instance types the user can pick, for one group or all their groups."""
        config = self.config()
        groups = config.user_groups(user)
        if group is not None:
            groups = [g for g in groups if g.name == group]
            if not groups:
                raise NotFound(f"group '{group}' not found")
        seen: dict[str, dict[str, Any]] = {}
        for g in groups:
            for it in config.group_instance_types(g):
                seen.setdefault(it.name, it.to_json())
        return list(seen.values())

    async def set_group_enabled(self, user: str, group: str, enabled: bool) -> dict[str, Any]:
        """Admins enable or disable model deployment for a group."""
        from .errors import Forbidden

        if not self.config().is_admin(user):
            raise Forbidden("only administrators can enable or disable model deployment")
        await asyncio.to_thread(self.config_store.set_group_enabled, group, enabled)
        return next(g for g in await self.groups(user) if g["name"] == group)

    # ---- reading ----------------------------------------------------------------------

    def _visible(self, user: str, deployment: DeploymentRecord) -> bool:
        names = {g.name for g in self.config().user_groups(user)}
        return deployment.spec.group_name in names

    async def get(self, user: str, deployment_id: str) -> DeploymentRecord:
        """A deployment the user may see; NotFound otherwise (we do not reveal others')."""
        problem = id_problem(deployment_id)
        if problem:
            raise NotFound(f"deployment '{deployment_id}' not found")
        deployment = await self.engine.get(deployment_id)
        if not self._visible(user, deployment):
            raise NotFound(f"deployment '{deployment_id}' not found")
        return deployment

    async def list_deployments(
        self,
        user: str,
        *,
        name: str | None = None,
        mine: bool = False,
        group: str | None = None,
    ) -> list[DeploymentRecord]:
        """The user's groups' deployments, newest update first, optionally filtered."""
        found = [d for d in await self.engine.list_deployments() if self._visible(user, d)]
        if name:
            needle = name.lower()
            found = [d for d in found if needle in d.spec.display_name.lower() or needle in d.id]
        if mine:
            found = [d for d in found if d.spec.user_name == user]
        if group:
            found = [d for d in found if d.spec.group_name == group]
        found.sort(key=lambda d: d.status.last_updated or "", reverse=True)
        return found

    # ---- writing ----------------------------------------------------------------------

    def _check_runnable(self, user: str, spec: DeploymentSpec) -> None:
        config = self.config()
        if config.group(spec.group_name) is None:
            raise ValidationError(
                f"group '{spec.group_name}' not found",
                details=[{"field": "spec.groupName", "message": "not found"}],
            )
        group = config.check_member(user, spec.group_name)
        for predictor in spec.predictors:
            config.check_instance_type(group, predictor.instance_type)
        self.engine.check_spec(spec)

    async def create(self, user: str, body: CreateDeployment | dict[str, Any]) -> DeploymentRecord:
        """Create a deployment from `{"id"?, "spec"}` (or the custom resource form)."""
        request = CreateDeployment.parse(body, user=user)
        wanted_id = request.requested_id
        spec = request.spec
        if request.spec.user_name != user:
            # A parsed request made for someone else: the signed-in user still owns it.
            spec = revalidate(spec.model_copy(update={"user_name": user}))
        if spec.endpoint.clients:
            raise ValidationError(
                "clients are added after creation: POST .../deployments/<id>/clients "
                "returns each client's token once",
                details=[{"field": "spec.endpoint.clients", "message": "must be empty"}],
            )
        self._check_runnable(user, spec)
        now = utcnow()
        history = [
            HistoryEntry(
                revision=1, time=now, user=user, update_message=spec.update_message, spec=spec
            )
        ]
        for attempt in range(5):
            deployment_id = wanted_id or generate_id(spec.display_name)
            deployment = DeploymentRecord(
                id=deployment_id,
                spec=spec,
                status=DeploymentStatus(
                    phase=Phase.STOPPED if spec.stop else Phase.DEPLOYING,
                    creation_time=now,
                    last_updated=now,
                    history=history,
                ),
            )
            try:
                created = await self.engine.create(deployment)
            except Conflict:
                if wanted_id or attempt == 4:
                    raise
                continue
            log.info("user %s created deployment %s", user, created.id)
            return created
        raise AssertionError("unreachable")

    async def update(
        self, user: str, deployment_id: str, body: UpdateDeployment | dict[str, Any]
    ) -> DeploymentRecord:
        """Apply a merge patch `{"spec": {...}, "resourceVersion"?}` to a deployment.

        With a resourceVersion the update is refused (409) when the deployment changed since;
        without one it is re-applied to the newest version until it lands (a blind update).
        """
        request = UpdateDeployment.parse(body)
        if request.requested_id not in (None, deployment_id):
            raise ValidationError(
                "id is immutable", details=[{"field": "id", "message": "immutable"}]
            )
        version = request.based_on
        patch = request.patch

        def build(current: DeploymentRecord) -> DeploymentSpec:
            before = current.spec.to_json()
            merged = merge_patch(before, patch)
            for name in IMMUTABLE_SPEC_FIELDS:
                if merged.get(name) != before[name]:
                    raise ValidationError(
                        f"{name} is immutable after create",
                        details=[{"field": f"spec.{name}", "message": "immutable"}],
                    )
            if "updateMessage" not in patch:
                merged["updateMessage"] = ""
            spec = parse_spec(merged)
            old_clients = {c.name for c in current.spec.endpoint.clients}
            added = [c.name for c in spec.endpoint.clients if c.name not in old_clients]
            if added:
                raise ValidationError(
                    f"clients cannot be added by an update ({', '.join(added)}); "
                    "use POST .../clients, which returns the token once",
                    details=[{"field": "spec.endpoint.clients", "message": "use the clients API"}],
                )
            return spec

        return await self._change(user, deployment_id, build, version=version)

    async def _change(
        self,
        user: str,
        deployment_id: str,
        build: SpecBuilder,
        *,
        version: str | None = None,
        client_secret: tuple[str, str] | None = None,
        force_history: bool = False,
    ) -> DeploymentRecord:
        """Read, build the new spec, validate and store it; retry blind changes on a conflict."""
        for attempt in range(MAX_CHANGE_ATTEMPTS):
            current = await self.get(user, deployment_id)
            spec = build(current)
            try:
                return await self._apply(
                    user,
                    current,
                    spec,
                    version=version,
                    client_secret=client_secret,
                    force_history=force_history,
                )
            except Unchangeable:
                raise
            except Conflict:
                if version is not None:
                    raise
            delay = min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt) * random.random()
            await asyncio.sleep(delay)
        raise Conflict(
            f"deployment '{deployment_id}' kept changing while this change was applied "
            f"({MAX_CHANGE_ATTEMPTS} attempts); try again"
        )

    async def _apply(
        self,
        user: str,
        current: DeploymentRecord,
        spec: DeploymentSpec,
        *,
        version: str | None = None,
        client_secret: tuple[str, str] | None = None,
        force_history: bool = False,
    ) -> DeploymentRecord:
        """Store a changed spec with a new history entry; a no-op when nothing changed.

        Every spec is validated here as create validates it, whether it came from a user's
        patch or was built in code (stop, start, rollback, clients): nothing unreadable is
        ever stored.
        """
        spec = revalidate(spec)
        self._check_runnable(user, spec)
        if version is not None and version != current.resource_version:
            raise Conflict(
                f"deployment '{current.id}' was changed by someone else "
                f"(resourceVersion {version} is stale, current is {current.resource_version}); "
                "reload it and apply your change again"
            )
        unchanged = spec.model_copy(update={"update_message": ""}) == current.spec.model_copy(
            update={"update_message": ""}
        )
        if unchanged and not force_history and client_secret is None:
            return current
        revision = max((h.revision for h in current.status.history), default=0) + 1
        entry = HistoryEntry(
            revision=revision,
            time=utcnow(),
            user=user,
            update_message=spec.update_message,
            spec=spec,
        )
        status = current.status.model_copy(
            update={"history": [entry, *current.status.history][:MAX_HISTORY]}
        )
        updated = current.model_copy(update={"spec": spec, "status": status})
        result = await self.engine.replace(updated, client_secret=client_secret)
        log.info("user %s updated deployment %s (revision %d)", user, current.id, revision)
        return result

    async def set_stopped(
        self, user: str, deployment_id: str, stop: bool, message: Any = None
    ) -> DeploymentRecord:
        """Stop (replicas go away, the spec stays) or start a deployment."""
        message = ChangeMessage.parse({"updateMessage": message}).update_message

        # History entries say what happened when the caller gave no message of their own.
        said = message if message not in (None, "") else ("stopped" if stop else "started")

        def build(current: DeploymentRecord) -> DeploymentSpec:
            return current.spec.model_copy(update={"stop": stop, "update_message": said})

        return await self._change(user, deployment_id, build)

    async def delete(self, user: str, deployment_id: str) -> None:
        """Delete a deployment and everything that runs it."""
        current = await self.get(user, deployment_id)
        self.config().check_member(user, current.spec.group_name)
        await self.engine.delete(deployment_id)
        log.info("user %s deleted deployment %s", user, deployment_id)

    async def rollback(
        self, user: str, deployment_id: str, revision: Any, message: Any = None
    ) -> DeploymentRecord:
        """Re-apply history entry `revision`'s spec as a new update (history grows).

        `stop` keeps its current value (a rollback does not start or stop anything), and so do
        the clients: their tokens cannot be brought back, only the access type can.
        """
        request = Rollback.parse({"revision": revision, "updateMessage": message})
        revision, message = request.revision, request.update_message
        await self.history_entry(user, deployment_id, revision)

        def build(current: DeploymentRecord) -> DeploymentSpec:
            entry = next((h for h in current.status.history if h.revision == revision), None)
            if entry is None:
                raise NotFound(f"deployment '{deployment_id}' has no history revision {revision}")
            return entry.spec.model_copy(
                update={
                    "stop": current.spec.stop,
                    "user_name": current.spec.user_name,
                    "endpoint": entry.spec.endpoint.model_copy(
                        update={"clients": current.spec.endpoint.clients}
                    ),
                    "update_message": message or f"rollback to revision {revision}",
                }
            )

        return await self._change(user, deployment_id, build, force_history=True)

    async def promote(
        self, user: str, deployment_id: str, body: Promote | dict[str, Any]
    ) -> DeploymentRecord:
        """Send every request to one predictor and remove the others (an update: history grows,
        and a rollback to the revision before brings the split back)."""
        request = Promote.parse(body)

        def build(current: DeploymentRecord) -> DeploymentSpec:
            return promoted_spec(current.spec, request.predictor, request.update_message)

        return await self._change(user, deployment_id, build)

    async def compare(self, user: str, deployment_id: str) -> ComparisonReport:
        """Per-predictor requests, errors, latency and feedback, with a significance test."""
        deployment = await self.get(user, deployment_id)
        counters = await self.engine.predictor_counters(deployment_id)
        return compare_report(deployment, counters)

    # ---- history ----------------------------------------------------------------------

    async def history(self, user: str, deployment_id: str) -> list[HistoryEntry]:
        """Every change, newest first (at most 32)."""
        return (await self.get(user, deployment_id)).status.history

    async def history_entry(self, user: str, deployment_id: str, revision: int) -> HistoryEntry:
        """One history entry by revision number."""
        for entry in await self.history(user, deployment_id):
            if entry.revision == revision:
                return entry
        raise NotFound(f"deployment '{deployment_id}' has no history revision {revision}")

    # ---- clients ----------------------------------------------------------------------

    async def list_clients(self, user: str, deployment_id: str) -> list[dict[str, str]]:
        """Client names (tokens are never shown again)."""
        deployment = await self.get(user, deployment_id)
        return [{"name": c.name} for c in deployment.spec.endpoint.clients]

    async def add_client(self, user: str, deployment_id: str, name: Any) -> dict[str, str]:
        """Add (or replace) a client; the only time its token is ever returned."""
        name = NewClient.parse({"name": name}).name
        await self.get(user, deployment_id)
        token = new_token()
        hashed = await asyncio.to_thread(hash_token, token, self.bcrypt_rounds)

        def build(current: DeploymentRecord) -> DeploymentSpec:
            clients = current.spec.endpoint.clients
            replaced = name in [c.name for c in clients]
            if not replaced:
                clients = [*clients, ClientRef(name=name)]
            return current.spec.model_copy(
                update={
                    "endpoint": current.spec.endpoint.model_copy(update={"clients": clients}),
                    "update_message": f"client '{name}' {'replaced' if replaced else 'added'}",
                }
            )

        await self._change(
            user, deployment_id, build, client_secret=(name, hashed), force_history=True
        )
        return ClientCreated(name=name, token=token).to_json()

    async def delete_client(self, user: str, deployment_id: str, name: str) -> None:
        """Remove a client; its token stops working at once."""

        def build(current: DeploymentRecord) -> DeploymentSpec:
            clients = [c for c in current.spec.endpoint.clients if c.name != name]
            if len(clients) == len(current.spec.endpoint.clients):
                raise NotFound(f"deployment '{deployment_id}' has no client '{name}'")
            return current.spec.model_copy(
                update={
                    "endpoint": current.spec.endpoint.model_copy(update={"clients": clients}),
                    "update_message": f"client '{name}' deleted",
                }
            )

        await self._change(user, deployment_id, build)

    # ---- logs and invoke --------------------------------------------------------------

    async def _check_replica(self, deployment_id: str, replica: str | None) -> str | None:
        if replica is None or replica == "":
            return None
        names = await self.engine.replica_names(deployment_id)
        # ASCII digits only: str.isdigit() also takes '²', which int() then refuses.
        if _REPLICA_INDEX.fullmatch(replica) and int(replica) < len(names):
            return names[int(replica)]
        if replica not in names:
            raise NotFound(
                f"deployment '{deployment_id}' has no replica '{replica}'; "
                f"replicas: {', '.join(names) or 'none yet'}"
            )
        return replica

    async def replicas(self, user: str, deployment_id: str) -> list[str]:
        await self.get(user, deployment_id)
        return await self.engine.replica_names(deployment_id)

    async def logs(
        self, user: str, deployment_id: str, replica: str | None, tail: int | None = DEFAULT_TAIL
    ) -> list[str]:
        """Log lines, oldest first; `replica` is a name or an index."""
        await self.get(user, deployment_id)
        return await self.engine.logs(
            deployment_id, await self._check_replica(deployment_id, replica), tail
        )

    async def follow_logs(
        self, user: str, deployment_id: str, replica: str | None
    ) -> AsyncIterator[str]:
        await self.get(user, deployment_id)
        name = await self._check_replica(deployment_id, replica)
        return self.engine.follow_logs(deployment_id, name)

    async def download_logs(
        self, user: str, deployment_id: str, replica: str | None
    ) -> AsyncIterator[bytes]:
        await self.get(user, deployment_id)
        name = await self._check_replica(deployment_id, replica)
        return self.engine.download_logs(deployment_id, name)

    async def metrics(
        self, user: str, deployment_id: str, window: float = 900, step: float = 5
    ) -> MetricsReport:
        """Traffic, errors, latency, reward and replica usage over time (docs/internals.md)."""
        await self.get(user, deployment_id)
        if not 10 <= window <= 86400:
            raise ValidationError("window must be between 10 and 86400 seconds")
        if not 1 <= step <= 3600 or window / step > 2000:
            raise ValidationError("step must be 1-3600 seconds, and window/step at most 2000")
        return await self.engine.metrics(deployment_id, window, step)

    async def invoke(
        self, user: str, deployment_id: str, path: str, body: bytes, headers: dict[str, str]
    ) -> InvokeResult:
        """Call the endpoint as the signed-in user (private endpoints included).

        The path is confined to this deployment before any engine sees it: a '..' segment, an
        encoded separator or a URL would otherwise reach another deployment as this caller.
        """
        problem = invoke_path_problem(path)
        if problem:
            raise BadRequest(problem, details=[{"field": "path", "message": problem}])
        await self.get(user, deployment_id)
        return await self.engine.invoke(deployment_id, path, body, headers, user)

    # ---- batch jobs -------------------------------------------------------------------

    async def create_job(
        self, user: str, deployment_id: str, body: CreateJob | dict[str, Any]
    ) -> JobRecord:
        """Start a batch job scoring a file with the deployment's model (docs/internals.md).

        Members of the deployment's group only; the engine checks the input, columns and
        output (422) before anything is stored. While it runs, a job holds one replica of
        its predictor's instance type of the group's quota.
        """
        request = CreateJob.parse(body)
        deployment = await self.get(user, deployment_id)
        config = self.config()
        config.check_member(user, deployment.spec.group_name)
        job = job_record(deployment, request, user)
        async with self._job_admission:
            every = await self.engine.list_deployments()
            holding = [d for d in every if holds_resources(d)]
            running = await self.engine.running_jobs()
            problem = job_quota_problem(config, deployment, job, holding, running, every)
            if problem:
                raise ValidationError(problem)
            created = await self.engine.create_job(deployment, job)
        log.info("user %s started job %s of deployment %s", user, job.id, deployment_id)
        return created

    async def list_jobs(self, user: str, deployment_id: str) -> list[JobRecord]:
        """The deployment's jobs, newest first (the last 50)."""
        await self.get(user, deployment_id)
        return await self.engine.list_jobs(deployment_id)

    async def get_job(self, user: str, deployment_id: str, job_id: str) -> JobRecord:
        """One job with its progress; NotFound for an id that is not one of its jobs."""
        await self.get(user, deployment_id)
        if job_id_problem(job_id):
            raise NotFound(f"deployment '{deployment_id}' has no job '{job_id[:40]}'")
        return await self.engine.get_job(deployment_id, job_id)

    async def delete_job(self, user: str, deployment_id: str, job_id: str) -> JobRecord | None:
        """Cancel a live job (returned, Cancelled) or remove a finished one (None)."""
        deployment = await self.get(user, deployment_id)
        self.config().check_member(user, deployment.spec.group_name)
        job = await self.get_job(user, deployment_id, job_id)
        result = await self.engine.delete_job(deployment_id, job_id)
        return None if job.phase.finished else result

    async def job_logs(
        self, user: str, deployment_id: str, job_id: str, tail: int | None = DEFAULT_TAIL
    ) -> list[str]:
        """The job process's log lines, oldest first."""
        await self.get_job(user, deployment_id, job_id)
        return await self.engine.job_logs(deployment_id, job_id, tail)
