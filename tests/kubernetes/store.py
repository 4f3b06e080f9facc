"""The emulated API's state: types, objects, selectors, watch fan-out, garbage collection."""

from __future__ import annotations

import asyncio
import base64
import copy
import random
import re
import string
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

# ---- resource types --------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    subresources: tuple[str, ...] = ("status",)
    short_names: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.group}/{self.plural}"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


BUILTIN = [
    ResourceType("", "v1", "pods", "Pod", ("status", "log")),
    ResourceType("", "v1", "services", "Service"),
    ResourceType("", "v1", "secrets", "Secret", ()),
    ResourceType("", "v1", "configmaps", "ConfigMap", ()),
    ResourceType("", "v1", "events", "Event", ()),
    ResourceType("", "v1", "resourcequotas", "ResourceQuota"),
    ResourceType("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim"),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", ()),
    ResourceType("apps", "v1", "deployments", "Deployment", ("status", "scale")),
    ResourceType("apps", "v1", "replicasets", "ReplicaSet", ("status", "scale")),
    ResourceType("batch", "v1", "jobs", "Job"),
    ResourceType("networking.k8s.io", "v1", "ingresses", "Ingress"),
    ResourceType("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
]


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def body(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


def now_text() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- selectors -------------------------------------------------------------------------


def _split_top(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current:
        parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def label_matcher(selector: str | None) -> Callable[[dict[str, str]], bool]:
    """A predicate for a label selector (=, ==, !=, in, notin, exists, !exists)."""
    tests: list[Callable[[dict[str, str]], bool]] = []
    for req in _split_top(selector or ""):
        if m := re.match(r"^([\w./-]+)\s+(in|notin)\s+\((.*)\)$", req):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in":
                tests.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                tests.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif m := re.match(r"^([\w./-]+)\s*(!=|==|=)\s*([\w.-]*)$", req):
            key, op, value = m.groups()
            if op == "!=":
                tests.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                tests.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif m := re.match(r"^!([\w./-]+)$", req):
            tests.append(lambda labels, k=m.group(1): k not in labels)
        elif re.match(r"^[\w./-]+$", req):
            tests.append(lambda labels, k=req: k in labels)
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {req!r}")
    return lambda labels: all(t(labels) for t in tests)


def _path_value(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def field_matcher(selector: str | None) -> Callable[[dict[str, Any]], bool]:
    tests: list[Callable[[dict[str, Any]], bool]] = []
    for req in _split_top(selector or ""):
        m = re.match(r"^([\w.]+)\s*(!=|==|=)\s*(.*)$", req)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid field selector: {req!r}")
        path, op, value = m.groups()
        if op == "!=":
            tests.append(lambda obj, p=path, v=value: _path_value(obj, p) != v)
        else:
            tests.append(lambda obj, p=path, v=value: _path_value(obj, p) == v)
    return lambda obj: all(t(obj) for t in tests)


# ---- the store -------------------------------------------------------------------------


@dataclass
class Watcher:
    key: str
    namespace: str
    labels: Callable[[dict[str, str]], bool]
    fields: Callable[[dict[str, Any]], bool]
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)

    def wants(self, key: str, obj: dict[str, Any]) -> bool:
        return (
            key == self.key
            and obj["metadata"].get("namespace") == self.namespace
            and self.labels(obj["metadata"].get("labels") or {})
            and self.fields(obj)
        )


class LogSource:
    """Where pod logs come from (the simulated kubelet implements it)."""

    def lines(
        self, namespace: str, pod: str, container: str, previous: bool
    ) -> list[tuple[str, str]]:
        raise ApiError(400, "BadRequest", f'container "{container}" in pod "{pod}" is not running')

    def follow(self, namespace: str, pod: str, container: str) -> AsyncIterator[tuple[str, str]]:
        raise ApiError(400, "BadRequest", f'container "{container}" in pod "{pod}" is not running')


class Store:
    """Objects by (resource, namespace, name) with a global resourceVersion and watch fan-out."""

    def __init__(self) -> None:
        self.types: dict[str, ResourceType] = {t.key: t for t in BUILTIN}
        self.crds: dict[str, dict[str, Any]] = {}
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.rv = 1000
        self.history: list[tuple[int, str, str, dict[str, Any]]] = []
        self.watchers: set[Watcher] = set()
        self.listeners: list[Callable[[str, str, dict[str, Any]], None]] = []
        self.writes: list[tuple[str, str, dict[str, Any]]] = []  # (who, verb, object) via HTTP

    # -- types --

    def install_crd(self, crd: dict[str, Any]) -> None:
        spec = crd["spec"]
        version = next(v for v in spec["versions"] if v.get("storage"))
        subresources = tuple(version.get("subresources") or {})
        rt = ResourceType(
            spec["group"],
            version["name"],
            spec["names"]["plural"],
            spec["names"]["kind"],
            subresources,
            tuple(spec["names"].get("shortNames") or ()),
        )
        self.types[rt.key] = rt
        self.crds[rt.key] = version["schema"]["openAPIV3Schema"]

    def type_for(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self.types.get(f"{group}/{plural}")
        if rt is None or rt.version != version:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return rt

    # -- reads --

    def get(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        obj = self.objects.get((rt.key, namespace, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{rt.qualified} "{name}" not found')
        return obj

    def find(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((rt.key, namespace, name))

    def list(
        self, rt: ResourceType, namespace: str, labels: str | None = None, fields: str | None = None
    ) -> list[dict[str, Any]]:
        match_labels, match_fields = label_matcher(labels), field_matcher(fields)
        return [
            obj
            for (key, ns, _), obj in sorted(self.objects.items())
            if key == rt.key
            and ns == namespace
            and match_labels(obj["metadata"].get("labels") or {})
            and match_fields(obj)
        ]

    # -- writes (server side: no validation, no authorization) --

    def _emit(self, rt: ResourceType, kind: str, obj: dict[str, Any]) -> None:
        snapshot = copy.deepcopy(obj)
        self.history.append((int(obj["metadata"]["resourceVersion"]), rt.key, kind, snapshot))
        if len(self.history) > 20000:
            del self.history[:5000]
        for watcher in list(self.watchers):
            if watcher.wants(rt.key, snapshot):
                watcher.queue.put_nowait({"type": kind, "object": snapshot})
        for listener in self.listeners:
            listener(rt.key, kind, snapshot)

    def _bump(self, obj: dict[str, Any]) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def create(self, rt: ResourceType, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(
                    422, "Invalid", f"{rt.kind} is invalid: metadata.name: Required value"
                )
            suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
            meta["name"] = meta["generateName"] + suffix
        name = meta["name"]
        if (rt.key, namespace, name) in self.objects:
            raise ApiError(409, "AlreadyExists", f'{rt.qualified} "{name}" already exists')
        meta.update(
            namespace=namespace,
            uid=str(uuid.uuid4()),
            creationTimestamp=now_text(),
            generation=1,
        )
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        if rt.kind == "Service":
            spec = obj.setdefault("spec", {})
            spec.setdefault("clusterIP", f"10.96.{random.randint(0, 255)}.{random.randint(1, 254)}")
            spec["clusterIPs"] = [spec["clusterIP"]]
        if rt.kind == "Secret" and "stringData" in obj:
            data = obj.setdefault("data", {})
            for k, v in obj.pop("stringData").items():
                data[k] = base64.b64encode(v.encode()).decode()
        self._bump(obj)
        self.objects[(rt.key, namespace, name)] = obj
        self._emit(rt, "ADDED", obj)
        refs = meta.get("ownerReferences") or []
        if refs and not any(self._exists(ref.get("uid"), namespace) for ref in refs):
            # The garbage collector deletes a dependent whose owners are all gone (a child
            # created by a reconcile that raced its owner's deletion).
            self.delete(rt, namespace, name, "Background")
        return obj

    def _exists(self, uid: str | None, namespace: str) -> bool:
        return any(
            ns == namespace and o["metadata"].get("uid") == uid
            for (_, ns, _), o in self.objects.items()
        )

    def update(self, rt: ResourceType, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Replace an object as is (server-side writes: status, finalizers, scale)."""
        name = obj["metadata"]["name"]
        old = self.get(rt, namespace, name)
        obj = copy.deepcopy(obj)
        for keep in ("uid", "creationTimestamp", "namespace"):
            obj["metadata"][keep] = old["metadata"][keep]
        strip = lambda o: {k: v for k, v in o.items() if k not in ("metadata", "status")}  # noqa: E731
        generation = old["metadata"].get("generation", 1)
        obj["metadata"]["generation"] = generation + (strip(obj) != strip(old))
        if obj == {
            **old,
            "metadata": {**old["metadata"], "generation": obj["metadata"]["generation"]},
        }:
            return old  # nothing changed: no new resourceVersion, no event
        self._bump(obj)
        if obj["metadata"].get("deletionTimestamp") and not obj["metadata"].get("finalizers"):
            self.objects.pop((rt.key, namespace, name), None)
            self._emit(rt, "DELETED", obj)
            self._collect(obj["metadata"]["uid"], namespace)
            return obj
        self.objects[(rt.key, namespace, name)] = obj
        self._emit(rt, "MODIFIED", obj)
        return obj

    def delete(
        self, rt: ResourceType, namespace: str, name: str, propagation: str = "Background"
    ) -> dict[str, Any]:
        obj = self.get(rt, namespace, name)
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                marked = copy.deepcopy(obj)
                marked["metadata"]["deletionTimestamp"] = now_text()
                self._bump(marked)
                self.objects[(rt.key, namespace, name)] = marked
                self._emit(rt, "MODIFIED", marked)
                return marked
            return obj
        if propagation == "Orphan":
            self._orphan(obj["metadata"]["uid"], namespace)
        else:
            # Foreground: dependents first, then the owner. Background: the owner first.
            if propagation == "Foreground":
                self._collect(obj["metadata"]["uid"], namespace)
        del self.objects[(rt.key, namespace, name)]
        gone = copy.deepcopy(obj)
        self._bump(gone)
        self._emit(rt, "DELETED", gone)
        if propagation == "Background":
            self._collect(obj["metadata"]["uid"], namespace)
        return gone

    def _dependents(self, uid: str, namespace: str) -> list[tuple[ResourceType, dict[str, Any]]]:
        found = []
        for (key, ns, _), obj in list(self.objects.items()):
            refs = obj["metadata"].get("ownerReferences") or []
            if ns == namespace and any(r.get("uid") == uid for r in refs):
                found.append((self.types[key], obj))
        return found

    def _collect(self, uid: str, namespace: str) -> None:
        """The garbage collector: dependents of a deleted owner go too (recursively)."""
        for rt, obj in self._dependents(uid, namespace):
            if (rt.key, namespace, obj["metadata"]["name"]) in self.objects:
                self.delete(rt, namespace, obj["metadata"]["name"], "Foreground")

    def _orphan(self, uid: str, namespace: str) -> None:
        for rt, obj in self._dependents(uid, namespace):
            changed = copy.deepcopy(obj)
            refs = changed["metadata"].get("ownerReferences") or []
            changed["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
            self.update(rt, namespace, changed)
