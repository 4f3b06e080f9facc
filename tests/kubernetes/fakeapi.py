"""A Kubernetes API server emulator that speaks the real REST protocol over HTTP.

Enough of the API for the official client (kubernetes.aio), kopf and kubectl-like tests:
discovery; namespaced CRUD with 201 on create, generateName, resourceVersion preconditions
(409 on a stale write), metadata.generation, the status subresource kept apart from the main
resource; list and watch with label and field selectors and resumption from a resourceVersion;
merge and JSON patches; deletion with finalizers and garbage collection through
ownerReferences; pod logs (tail, timestamps, follow); bearer-token authentication with RBAC
from the Role/RoleBinding manifests in deploy/; and validation of every write: built-in kinds
against the Kubernetes OpenAPI schemas (kubernetes-validate, strict), custom resources against
their CRD's structural schema (with pruning and the CEL rules our CRD uses).
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import threading
from collections.abc import Callable
from typing import Any

import jsonpatch
import jsonschema
from aiohttp import web

from .store import ApiError, LogSource, ResourceType, Store, Watcher, field_matcher, label_matcher
from .validation import RBAC, builtin_schemas, check_cel, prune

__all__ = ["RBAC", "ApiError", "Background", "FakeKubeAPI", "LogSource", "Store", "serve"]

# ---- the HTTP API ----------------------------------------------------------------------

_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class FakeKubeAPI:
    """The aiohttp application in front of a Store."""

    def __init__(
        self,
        store: Store,
        *,
        tokens: dict[str, str | None],
        rbac: RBAC,
        logs: LogSource | None = None,
        validate: bool = True,
    ) -> None:
        self.store = store
        self.tokens = tokens  # token -> user ("system:serviceaccount:ns:name"), None: admin
        self.rbac = rbac
        self.logs = logs or LogSource()
        self.validate = validate
        self.denied: list[str] = []
        self.invalid: list[str] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    # -- entry --

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            user = self._authenticate(request)
            path = request.path
            if path == "/version":
                return web.json_response(
                    {"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake"}
                )
            if path in ("/api", "/apis") or re.match(r"^/(api/v1|apis/[^/]+/[^/]+)$", path):
                return web.json_response(self._discovery(path))
            match = _PATH.match(path)
            if not match:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            group = match["group"] or ""
            version = match["core"] or match["version"]
            rt = self.store.type_for(group, version, match["plural"])
            return await self._resource(request, user, rt, match["ns"], match["name"], match["sub"])
        except ApiError as error:
            return web.json_response(error.body(), status=error.code)

    def _authenticate(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        token = header[len("Bearer ") :] if header.startswith("Bearer ") else None
        if token is None or token not in self.tokens:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return self.tokens[token]

    def _authorize(
        self,
        user: str | None,
        verb: str,
        rt: ResourceType,
        sub: str | None,
        ns: str,
        name: str | None,
    ) -> None:
        if user is None:
            return
        resource = f"{rt.plural}/{sub}" if sub else rt.plural
        if not self.rbac.allowed(user, verb, rt.group, resource, ns, name):
            message = (
                f'{rt.qualified} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
                f'in API group "{rt.group}" in the namespace "{ns}"'
            )
            self.denied.append(message)
            raise ApiError(403, "Forbidden", message)

    def _discovery(self, path: str) -> dict[str, Any]:
        types = list(self.store.types.values())
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            groups = sorted({(t.group, t.version) for t in types if t.group})
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": g,
                        "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                        "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v},
                    }
                    for g, v in groups
                ],
            }
        group, version = ("", "v1") if path == "/api/v1" else tuple(path.split("/")[2:4])
        selected = [t for t in types if t.group == group and t.version == version]
        if not selected:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resources: list[dict[str, Any]] = []
        verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
        for t in selected:
            resources.append(
                {
                    "name": t.plural,
                    "singularName": t.kind.lower(),
                    "namespaced": True,
                    "kind": t.kind,
                    "verbs": verbs,
                    "shortNames": list(t.short_names),
                }
            )
            for sub in t.subresources:
                resources.append(
                    {
                        "name": f"{t.plural}/{sub}",
                        "singularName": "",
                        "namespaced": True,
                        "kind": t.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    # -- resources --

    async def _resource(
        self,
        request: web.Request,
        user: str | None,
        rt: ResourceType,
        ns: str,
        name: str | None,
        sub: str | None,
    ) -> web.StreamResponse:
        method = request.method
        query = request.query
        if sub and sub not in rt.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if name is None:
            if method == "GET":
                watching = query.get("watch") in ("true", "1")
                self._authorize(user, "watch" if watching else "list", rt, None, ns, None)
                if watching:
                    return await self._watch(request, rt, ns)
                items = self.store.list(
                    rt, ns, query.get("labelSelector"), query.get("fieldSelector")
                )
                return web.json_response(
                    {
                        "kind": f"{rt.kind}List",
                        "apiVersion": rt.api_version,
                        "metadata": {"resourceVersion": str(self.store.rv), "continue": ""},
                        "items": items,
                    }
                )
            if method == "POST":
                self._authorize(user, "create", rt, None, ns, None)
                body = await self._json(request)
                if rt.subresources and "status" in rt.subresources:
                    body.pop("status", None)
                body = self._checked(rt, body, None)
                created = self.store.create(rt, ns, body)
                self.store.writes.append((user or "admin", "create", created))
                return web.json_response(created, status=201)
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed here")
        if sub == "log":
            self._authorize(user, "get", rt, "log", ns, name)
            return await self._log(request, ns, name)
        verb = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
        if verb is None:
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed here")
        self._authorize(user, verb, rt, sub, ns, name)
        current = self.store.get(rt, ns, name)
        if method == "GET":
            return web.json_response(current)
        if method == "DELETE":
            options = await self._json(request, default={})
            gone = self.store.delete(rt, ns, name, options.get("propagationPolicy") or "Background")
            return web.json_response(gone)
        body = await self._json(request)
        if method == "PATCH":
            content_type = request.headers.get("Content-Type", "")
            if "json-patch" in content_type:
                try:
                    merged = jsonpatch.apply_patch(current, body)
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
                    raise ApiError(422, "Invalid", str(error)) from None
            elif "merge-patch" in content_type or "strategic-merge-patch" in content_type:
                # A strategic merge patch is treated as a merge patch: close enough for the
                # fields this project patches (no lists merged by key).
                merged = merge_patch(current, body)
            else:
                raise ApiError(
                    415, "UnsupportedMediaType", f"the patch type {content_type} is not supported"
                )
            wanted_rv = (
                (body.get("metadata") or {}).get("resourceVersion")
                if isinstance(body, dict)
                else None
            )
        else:
            merged, wanted_rv = body, (body.get("metadata") or {}).get("resourceVersion")
        if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
            )
        merged = copy.deepcopy(merged)
        merged.setdefault("metadata", {})["name"] = name
        merged["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if sub == "status":
            result = copy.deepcopy(current)
            result["status"] = merged.get("status")
        elif sub == "scale":
            result = copy.deepcopy(current)
            result.setdefault("spec", {})["replicas"] = (merged.get("spec") or {}).get(
                "replicas", 0
            )
        else:
            result = merged
            if "status" in rt.subresources:
                result["status"] = copy.deepcopy(current.get("status"))
                if result["status"] is None:
                    result.pop("status")
            self._immutable(rt, current, result)
        result = self._checked(rt, result, current)
        updated = self.store.update(rt, ns, result)
        self.store.writes.append((user or "admin", verb, updated))
        return web.json_response(updated)

    def _immutable(self, rt: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> None:
        selectors = [(o.get("spec") or {}).get("selector") for o in (old, new)]
        if rt.kind in ("Deployment", "ReplicaSet") and selectors[0] != selectors[1]:
            raise ApiError(
                422,
                "Invalid",
                f'{rt.kind}.apps "{old["metadata"]["name"]}" is invalid: '
                "spec.selector: Invalid value: field is immutable",
            )
        if rt.kind == "Service":
            before, after = (
                (old.get("spec") or {}).get("clusterIP"),
                (new.get("spec") or {}).get("clusterIP"),
            )
            if before and after != before:
                raise ApiError(
                    422,
                    "Invalid",
                    f'Service "{old["metadata"]["name"]}" is invalid: '
                    "spec.clusterIP: Invalid value: field is immutable",
                )

    def _checked(
        self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the body must be an object")
        obj = copy.deepcopy(obj)
        obj.setdefault("apiVersion", rt.api_version)
        obj.setdefault("kind", rt.kind)
        if obj["apiVersion"] != rt.api_version or obj["kind"] != rt.kind:
            raise ApiError(400, "BadRequest", f"the body is a {obj['kind']}, not a {rt.kind}")
        if not self.validate:
            return obj
        schema = self.store.crds.get(rt.key)
        name = (obj.get("metadata") or {}).get("name") or (obj.get("metadata") or {}).get(
            "generateName"
        )
        if schema is not None:
            pruned = prune(obj, schema)
            pruned["metadata"] = obj.get("metadata", {})
            errors = [
                f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
                for e in jsonschema.Draft7Validator(schema).iter_errors(pruned)
            ]
            errors += check_cel(pruned, old, schema)
            obj = pruned
        else:
            errors = builtin_schemas().validate(obj)
        if errors:
            message = f'{rt.kind}.{rt.group or "core"} "{name}" is invalid: {"; ".join(errors)}'
            self.invalid.append(message)
            raise ApiError(422, "Invalid", message)
        return obj

    @staticmethod
    async def _json(request: web.Request, default: Any = None) -> Any:
        text = await request.text()
        if not text:
            if default is not None:
                return default
            raise ApiError(400, "BadRequest", "the request has no body")
        try:
            return json.loads(text)
        except ValueError as error:
            raise ApiError(400, "BadRequest", f"the body is not JSON: {error}") from None

    # -- watch --

    async def _watch(self, request: web.Request, rt: ResourceType, ns: str) -> web.StreamResponse:
        query = request.query
        watcher = Watcher(
            rt.key,
            ns,
            label_matcher(query.get("labelSelector")),
            field_matcher(query.get("fieldSelector")),
        )
        since = int(query.get("resourceVersion") or 0)
        timeout = float(query.get("timeoutSeconds") or 1800)
        bookmarks = query.get("allowWatchBookmarks") == "true"
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        self.store.watchers.add(watcher)
        try:
            if since:
                if self.store.history and since < self.store.history[0][0] - 1:
                    error = ApiError(410, "Expired", "too old resource version")
                    await response.write(
                        (json.dumps({"type": "ERROR", "object": error.body()}) + "\n").encode()
                    )
                    return response
                for rv, key, kind, obj in list(self.store.history):
                    if rv > since and watcher.wants(key, obj):
                        await response.write(
                            (json.dumps({"type": kind, "object": obj}) + "\n").encode()
                        )
            else:
                for obj in self.store.list(
                    rt, ns, query.get("labelSelector"), query.get("fieldSelector")
                ):
                    await response.write(
                        (json.dumps({"type": "ADDED", "object": obj}) + "\n").encode()
                    )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while loop.time() < deadline:
                try:
                    event = await asyncio.wait_for(
                        watcher.queue.get(), min(1.0, deadline - loop.time())
                    )
                except asyncio.TimeoutError:
                    if not bookmarks:
                        continue
                    event = {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": rt.kind,
                            "apiVersion": rt.api_version,
                            "metadata": {"resourceVersion": str(self.store.rv)},
                        },
                    }
                await response.write((json.dumps(event) + "\n").encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.watchers.discard(watcher)
        return response

    # -- logs --

    async def _log(self, request: web.Request, ns: str, name: str) -> web.StreamResponse:
        pod = self.store.get(self.store.types["/pods"], ns, name)
        query = request.query
        containers = [c["name"] for c in pod["spec"].get("containers", [])]
        containers += [c["name"] for c in pod["spec"].get("initContainers", [])]
        container = query.get("container") or (containers[0] if len(containers) == 1 else "")
        if container not in containers:
            raise ApiError(
                400,
                "BadRequest",
                f"a container name must be specified for pod {name}, choose one of: {containers}"
                if not container
                else f"container {container} is not valid for pod {name}",
            )
        stamps = query.get("timestamps") == "true"
        tail = int(query["tailLines"]) if "tailLines" in query else None

        def render(stamp: str, text: str) -> bytes:
            return (f"{stamp} {text}\n" if stamps else f"{text}\n").encode()

        if query.get("follow") != "true":
            lines = self.logs.lines(ns, name, container, query.get("previous") == "true")
            if tail is not None:
                lines = lines[-tail:] if tail else []
            return web.Response(
                body=b"".join(render(*line) for line in lines), content_type="text/plain"
            )
        lines = self.logs.lines(ns, name, container, False)
        follow = self.logs.follow(ns, name, container)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        try:
            for line in lines[-tail:] if tail else ([] if tail == 0 else lines):
                await response.write(render(*line))
            async for line in follow:
                await response.write(render(*line))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response


# ---- running it ------------------------------------------------------------------------


class Background:
    """An event loop in a thread that runs servers until stopped (like a separate process)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True, name="fake-kube")
        self._started = threading.Event()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._started.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def start(self) -> None:
        self._thread.start()
        self._started.wait(10)

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 30) -> Any:
        """Run `fn(*args)` (a function or a coroutine function) on the loop; its result."""

        async def runner() -> Any:
            result = fn(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(runner(), self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, shutdown_timeout=0.1)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port
