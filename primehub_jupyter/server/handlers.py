"""REST handlers under <base_url>/primehub/api/: parse, call the service, serialize."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web
from tornado.iostream import StreamClosedError

from ..core.bodies import (
    CatalogDocument,
    ChangeMessage,
    ClientList,
    CreateDeployment,
    CreateJob,
    DeploymentList,
    GroupSettings,
    HistoryList,
    JobList,
    LogLines,
    NewClient,
    Promote,
    ReplicaList,
    Rollback,
    UpdateDeployment,
)
from ..core.errors import BadRequest, NotFound, ServiceError
from ..core.jsondepth import too_deep
from ..core.service import DeploymentService
from ..engines.base import DEFAULT_TAIL
from .openapi import openapi_document

ID = r"(?P<deployment_id>[^/]+)"
# Any segment: the service answers 404 for one that is not a job id (core.jobs.job_id_problem).
JOB = r"(?P<job_id>[^/]+)"
MAX_TAIL = 100_000
# No API body is deeper than a few levels; a deeper one is an attack on a recursive parser.
MAX_JSON_DEPTH = 64
_TAIL = re.compile(r"[0-9]{1,6}")
_REVISION = re.compile(r"[0-9]{1,9}")
# The invoke path as sent, before tornado decodes it: '..%2F' must be seen as an encoding.
_RAW_INVOKE_PATH = re.compile(r"/deployments/[^/]+/invoke/(?P<path>.+)\Z")


def api(method: Callable[..., Awaitable[Any]]) -> Any:
    """Authenticated, authorized, and domain errors answered as JSON with their status."""

    @functools.wraps(method)
    async def wrapper(self: PrimeHubHandler, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except ServiceError as error:
            if self._headers_written:
                raise
            self.clear_header("Content-Disposition")
            self.set_header("Content-Type", "application/json")
            self.set_status(error.status)
            self.finish(json.dumps(error.to_json()))

    return web.authenticated(authorized(wrapper))


class PrimeHubHandler(ExtensionHandlerMixin, APIHandler):
    """Base of every PrimeHub handler."""

    auth_resource = "primehub"

    @property
    def app(self) -> Any:
        return self.settings["primehub_app"]

    @property
    def user_name(self) -> str:
        return self.app.user_of(self)

    async def service(self) -> DeploymentService:
        return await self.app.ensure_started()

    def json_body(self) -> Any:
        """The parsed JSON body; 400 when absent, invalid or nested too deeply."""
        if not self.request.body:
            raise BadRequest("the request needs a JSON body")
        deep = BadRequest(f"the body nests objects or arrays deeper than {MAX_JSON_DEPTH}")
        try:
            data = json.loads(self.request.body)
        except RecursionError:
            raise deep from None
        except ValueError as error:
            raise BadRequest(f"the body is not valid JSON: {error}") from None
        if too_deep(data, MAX_JSON_DEPTH):
            raise deep
        return data

    def window_and_step(self) -> tuple[float, float]:
        """The `window` and `step` query arguments of the metrics routes, in seconds."""
        try:
            window = float(self.get_argument("window", "900"))
            step = float(self.get_argument("step", "5"))
        except ValueError:
            raise BadRequest("window and step must be numbers of seconds") from None
        if not (math.isfinite(window) and math.isfinite(step)):
            raise BadRequest("window and step must be finite numbers of seconds")
        return window, step

    def tail(self) -> int | None:
        """The `tail` query argument: a line count (default 2000), or None for 'all'."""
        raw = self.get_argument("tail", str(DEFAULT_TAIL))
        if raw in ("all", "-1"):
            return None
        # ASCII digits only: str.isdigit() also takes '²', which int() then refuses.
        if not _TAIL.fullmatch(raw) or int(raw) > MAX_TAIL:
            raise BadRequest(f"tail must be a number from 0 to {MAX_TAIL}, or 'all'")
        return int(raw)

    def flag(self, name: str) -> bool:
        return self.get_argument(name, "").lower() in ("1", "true", "yes", "on")

    def send(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))


class MeHandler(PrimeHubHandler):
    @api
    async def get(self) -> None:
        service = await self.service()
        self.send(await service.me(self.user_name))


class GroupsHandler(PrimeHubHandler):
    @api
    async def get(self) -> None:
        service = await self.service()
        self.send({"groups": await service.groups(self.user_name)})


class GroupHandler(PrimeHubHandler):
    @api
    async def patch(self, group: str) -> None:
        body = GroupSettings.parse(self.json_body())
        service = await self.service()
        self.send(await service.set_group_enabled(self.user_name, group, body.enabled_deployment))


class InstanceTypesHandler(PrimeHubHandler):
    @api
    async def get(self) -> None:
        service = await self.service()
        group = self.get_argument("group", None)
        self.send({"instanceTypes": await service.instance_types(self.user_name, group)})


class DeploymentsHandler(PrimeHubHandler):
    @api
    async def get(self) -> None:
        service = await self.service()
        found = await service.list_deployments(
            self.user_name,
            name=self.get_argument("name", None),
            mine=self.flag("mine"),
            group=self.get_argument("group", None),
        )
        self.send(DeploymentList(deployments=found).to_json())

    @api
    async def post(self) -> None:
        body = CreateDeployment.parse(self.json_body(), user=self.user_name)
        service = await self.service()
        created = await service.create(self.user_name, body)
        self.set_header("Location", self.request.path.rstrip("/") + "/" + created.id)
        self.send(created.to_json(), 201)


class DeploymentHandler(PrimeHubHandler):
    @api
    async def get(self, deployment_id: str) -> None:
        service = await self.service()
        self.send((await service.get(self.user_name, deployment_id)).to_json())

    @api
    async def patch(self, deployment_id: str) -> None:
        body = UpdateDeployment.parse(self.json_body())
        service = await self.service()
        updated = await service.update(self.user_name, deployment_id, body)
        self.send(updated.to_json())

    @api
    async def delete(self, deployment_id: str) -> None:
        service = await self.service()
        await service.delete(self.user_name, deployment_id)
        self.set_status(204)
        self.finish()


class StopHandler(PrimeHubHandler):
    stop = True

    @api
    async def post(self, deployment_id: str) -> None:
        body = ChangeMessage.parse(self.json_body() if self.request.body else {})
        service = await self.service()
        result = await service.set_stopped(
            self.user_name, deployment_id, self.stop, body.update_message
        )
        self.send(result.to_json())


class StartHandler(StopHandler):
    stop = False


class HistoryHandler(PrimeHubHandler):
    @api
    async def get(self, deployment_id: str) -> None:
        service = await self.service()
        history = await service.history(self.user_name, deployment_id)
        self.send(HistoryList(history=history).to_json())


class HistoryEntryHandler(PrimeHubHandler):
    @api
    async def get(self, deployment_id: str, revision: str) -> None:
        service = await self.service()
        if not _REVISION.fullmatch(revision):
            raise NotFound(f"deployment '{deployment_id}' has no history revision {revision[:20]}")
        entry = await service.history_entry(self.user_name, deployment_id, int(revision))
        self.send(entry.to_json())


class ClientsHandler(PrimeHubHandler):
    @api
    async def get(self, deployment_id: str) -> None:
        service = await self.service()
        clients = await service.list_clients(self.user_name, deployment_id)
        self.send(ClientList.model_validate({"clients": clients}).to_json())

    @api
    async def post(self, deployment_id: str) -> None:
        body = NewClient.parse(self.json_body())
        service = await self.service()
        created = await service.add_client(self.user_name, deployment_id, body.name)
        # The token is in this response and nowhere else, ever: do not let anything cache it.
        self.set_header("Cache-Control", "no-store")
        self.send(created, 201)


class ClientHandler(PrimeHubHandler):
    @api
    async def delete(self, deployment_id: str, name: str) -> None:
        service = await self.service()
        await service.delete_client(self.user_name, deployment_id, name)
        self.set_status(204)
        self.finish()


class ReplicasHandler(PrimeHubHandler):
    @api
    async def get(self, deployment_id: str) -> None:
        service = await self.service()
        names = await service.replicas(self.user_name, deployment_id)
        self.send(ReplicaList(replicas=names).to_json())


class LogsHandler(PrimeHubHandler):
    """Tail (text or JSON), follow (a chunked stream) or download (an attachment) the logs."""

    _stream: asyncio.Task | None = None

    def _tail(self) -> int | None:
        return self.tail()

    @api
    async def get(self, deployment_id: str) -> None:
        service = await self.service()
        replica = self.get_argument("replica", None)
        user = self.user_name
        if self.flag("download"):
            chunks = await service.download_logs(user, deployment_id, replica)
            suffix = f"-{replica}" if replica else ""
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.set_header(
                "Content-Disposition", f'attachment; filename="{deployment_id}{suffix}.log"'
            )
            async for chunk in chunks:
                self.write(chunk)
                await self.flush()
            self.finish()
            return
        if self.flag("follow"):
            await self._follow(service, user, deployment_id, replica)
            return
        lines = await service.logs(user, deployment_id, replica, self._tail())
        if self.get_argument("format", "text") == "json":
            names = await service.replicas(user, deployment_id)
            self.send(LogLines(replicas=names, lines=lines).to_json())
            return
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish("".join(line + "\n" for line in lines))

    async def _follow(
        self, service: DeploymentService, user: str, deployment_id: str, replica: str | None
    ) -> None:
        lines = await service.follow_logs(user, deployment_id, replica)
        tail = self._tail()
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        if tail:
            for line in await service.logs(user, deployment_id, replica, tail):
                self.write(line + "\n")
            await self.flush()

        async def pump() -> None:
            async for line in lines:
                self.write(line + "\n")
                await self.flush()

        self._stream = asyncio.ensure_future(pump())
        try:
            await self._stream
        except (asyncio.CancelledError, StreamClosedError):
            pass
        finally:
            with contextlib.suppress(Exception):
                await lines.aclose()  # type: ignore[attr-defined]
        if not self._finished:
            with contextlib.suppress(StreamClosedError):
                self.finish()

    def on_connection_close(self) -> None:
        # The client went away: stop following so no file handle or task leaks.
        if self._stream is not None:
            self._stream.cancel()
        super().on_connection_close()


class MetricsHandler(PrimeHubHandler):
    @api
    async def get(self, deployment_id: str) -> None:
        service = await self.service()
        window, step = self.window_and_step()
        report = await service.metrics(self.user_name, deployment_id, window, step)
        self.send(report.to_json())


class RollbackHandler(PrimeHubHandler):
    @api
    async def post(self, deployment_id: str) -> None:
        body = Rollback.parse(self.json_body())
        service = await self.service()
        result = await service.rollback(
            self.user_name, deployment_id, body.revision, body.update_message
        )
        self.send(result.to_json())


class CompareHandler(PrimeHubHandler):
    @api
    async def get(self, deployment_id: str) -> None:
        service = await self.service()
        report = await service.compare(self.user_name, deployment_id)
        self.send(report.to_json())


class PromoteHandler(PrimeHubHandler):
    @api
    async def post(self, deployment_id: str) -> None:
        body = Promote.parse(self.json_body())
        service = await self.service()
        self.send((await service.promote(self.user_name, deployment_id, body)).to_json())


class InvokeHandler(PrimeHubHandler):
    """POST a request to the deployment's endpoint as the signed-in user."""

    @api
    async def post(self, deployment_id: str, path: str | None = None) -> None:
        service = await self.service()
        if path is not None:
            raw = _RAW_INVOKE_PATH.search(self.request.path)
            target = raw.group("path") if raw else path
        else:
            target = self.get_argument("path", "api/v1.0/predictions", strip=False)
        headers = {"Content-Type": self.request.headers.get("Content-Type", "application/json")}
        for name in ("Request-ID", "X-Request-ID"):
            if name in self.request.headers:
                headers[name] = self.request.headers[name]
        result = await service.invoke(
            self.user_name, deployment_id, target, self.request.body, headers
        )
        self.set_status(result.status)
        for name, value in result.headers.items():
            self.set_header(name, value)
        self.finish(result.body)


class CatalogHandler(PrimeHubHandler):
    """The deployment's service catalog: its model server's OpenAPI document, via invoke."""

    @api
    async def get(self, deployment_id: str) -> None:
        service = await self.service()
        record = await service.get(self.user_name, deployment_id)
        # As the signed-in user, like invoke: private endpoints need no client token here.
        result = await service.invoke(
            self.user_name, deployment_id, "api/model/info", b"", {"Accept": "application/json"}
        )
        try:
            document = CatalogDocument.model_validate_json(result.body)
        except ValueError:
            document = None
        if result.status != 200 or document is None:
            error = ServiceError(_catalog_problem(deployment_id, result.status, result.body))
            # Not deployed (503) or an older model server without a catalog (404) say so.
            error.status = result.status if 400 <= result.status < 600 else 502
            raise error
        endpoint = record.status.endpoint or ""
        if endpoint.endswith(_PREDICTIONS):  # both engines: <base>/deployment/<id>/<predictions>
            document.servers = [{"url": endpoint[: -len(_PREDICTIONS)]}]
        if record.spec.endpoint.access_type == "private":
            # Swagger UI's "Authorize" then asks for a client's name and token (HTTP Basic).
            extra = document.model_extra if document.model_extra is not None else {}
            components = extra.setdefault("components", {})
            components.setdefault("securitySchemes", {})["client"] = {
                "type": "http",
                "scheme": "basic",
                "description": "A client of this private endpoint: its name and token.",
            }
            extra["security"] = [{"client": []}]
        self.send(document.model_dump(mode="json", by_alias=True))


_PREDICTIONS = "/api/v1.0/predictions"


def _catalog_problem(deployment_id: str, status: int, body: bytes) -> str:
    if status == 404:
        return (
            f"deployment '{deployment_id}' has no service catalog: its model server predates "
            "it; update the deployment to serve it with this version"
        )
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    message = answer.get("message", "") if isinstance(answer, dict) else ""
    return f"deployment '{deployment_id}' cannot give its catalog now ({status}): {message}"


class JobsHandler(PrimeHubHandler):
    """A deployment's batch jobs: list (newest first) and start one."""

    @api
    async def get(self, deployment_id: str) -> None:
        service = await self.service()
        jobs = await service.list_jobs(self.user_name, deployment_id)
        self.send(JobList(jobs=jobs).to_json())

    @api
    async def post(self, deployment_id: str) -> None:
        body = CreateJob.parse(self.json_body())
        service = await self.service()
        job = await service.create_job(self.user_name, deployment_id, body)
        self.set_header("Location", self.request.path.rstrip("/") + "/" + job.id)
        self.send(job.to_json(), 201)


class JobHandler(PrimeHubHandler):
    """One job: its progress; DELETE cancels a live one (200) or removes a finished one (204)."""

    @api
    async def get(self, deployment_id: str, job_id: str) -> None:
        service = await self.service()
        self.send((await service.get_job(self.user_name, deployment_id, job_id)).to_json())

    @api
    async def delete(self, deployment_id: str, job_id: str) -> None:
        service = await self.service()
        cancelled = await service.delete_job(self.user_name, deployment_id, job_id)
        if cancelled is not None:
            self.send(cancelled.to_json())
            return
        self.set_status(204)
        self.finish()


class JobLogsHandler(PrimeHubHandler):
    """The job process's log: `{"replicas": [<job>], "lines": [...]}`, oldest first."""

    @api
    async def get(self, deployment_id: str, job_id: str) -> None:
        service = await self.service()
        lines = await service.job_logs(self.user_name, deployment_id, job_id, self.tail())
        if self.get_argument("format", "json") == "text":
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish("".join(line + "\n" for line in lines))
            return
        self.send(LogLines(replicas=[job_id], lines=lines).to_json())


class OpenAPIHandler(PrimeHubHandler):
    @api
    async def get(self) -> None:
        self.send(openapi_document(self.base_url))


PREFIX = "/primehub/api"

default_handlers: list[tuple[str, type]] = [
    (rf"{PREFIX}/me", MeHandler),
    (rf"{PREFIX}/openapi.json", OpenAPIHandler),
    (rf"{PREFIX}/groups", GroupsHandler),
    (rf"{PREFIX}/groups/(?P<group>[^/]+)", GroupHandler),
    (rf"{PREFIX}/instance-types", InstanceTypesHandler),
    (rf"{PREFIX}/deployments/?", DeploymentsHandler),
    (rf"{PREFIX}/deployments/{ID}", DeploymentHandler),
    (rf"{PREFIX}/deployments/{ID}/stop", StopHandler),
    (rf"{PREFIX}/deployments/{ID}/start", StartHandler),
    (rf"{PREFIX}/deployments/{ID}/history", HistoryHandler),
    (rf"{PREFIX}/deployments/{ID}/history/(?P<revision>[0-9]+)", HistoryEntryHandler),
    (rf"{PREFIX}/deployments/{ID}/clients", ClientsHandler),
    (rf"{PREFIX}/deployments/{ID}/clients/(?P<name>[^/]+)", ClientHandler),
    (rf"{PREFIX}/deployments/{ID}/replicas", ReplicasHandler),
    (rf"{PREFIX}/deployments/{ID}/logs", LogsHandler),
    (rf"{PREFIX}/deployments/{ID}/metrics", MetricsHandler),
    (rf"{PREFIX}/deployments/{ID}/rollback", RollbackHandler),
    (rf"{PREFIX}/deployments/{ID}/compare", CompareHandler),
    (rf"{PREFIX}/deployments/{ID}/promote", PromoteHandler),
    (rf"{PREFIX}/deployments/{ID}/catalog", CatalogHandler),
    (rf"{PREFIX}/deployments/{ID}/invoke", InvokeHandler),
    (rf"{PREFIX}/deployments/{ID}/invoke/(?P<path>.+)", InvokeHandler),
    (rf"{PREFIX}/deployments/{ID}/jobs/?", JobsHandler),
    (rf"{PREFIX}/deployments/{ID}/jobs/{JOB}", JobHandler),
    (rf"{PREFIX}/deployments/{ID}/jobs/{JOB}/logs", JobLogsHandler),
]

# The event stream and the metrics charts live in events.py, which adds its routes above.
from . import events as _events  # noqa: E402, F401
