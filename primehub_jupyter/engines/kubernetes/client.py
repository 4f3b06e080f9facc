"""A small asyncio REST layer over the official client (kubernetes.aio): dicts in, dicts out.

The official client's asyncio flavour (shipped in the `kubernetes` distribution since v37)
loads kubeconfig or in-cluster credentials, refreshes tokens and owns the aiohttp session; this
module only builds paths, speaks JSON and turns API errors into one exception type. Plain dicts
(rather than generated models) are what we compare, hash, validate and patch anyway.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from .crd import GROUP, KIND, PLURAL, VERSION

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class Kind:
    """A namespaced resource type: where it lives in the REST API."""

    group: str
    version: str
    plural: str
    kind: str

    def path(self, namespace: str, name: str | None = None, sub: str | None = None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        path = f"{base}/namespaces/{namespace}/{self.plural}"
        if name is not None:
            path += f"/{name}"
        if sub:
            path += f"/{sub}"
        return path


PHDEPLOYMENTS = Kind(GROUP, VERSION, PLURAL, KIND)
DEPLOYMENTS = Kind("apps", "v1", "deployments", "Deployment")
REPLICASETS = Kind("apps", "v1", "replicasets", "ReplicaSet")
PODS = Kind("", "v1", "pods", "Pod")
SERVICES = Kind("", "v1", "services", "Service")
SECRETS = Kind("", "v1", "secrets", "Secret")
CONFIGMAPS = Kind("", "v1", "configmaps", "ConfigMap")
JOBS = Kind("batch", "v1", "jobs", "Job")
EVENTS = Kind("", "v1", "events", "Event")
INGRESSES = Kind("networking.k8s.io", "v1", "ingresses", "Ingress")
HPAS = Kind("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler")
SCALEDOBJECTS = Kind("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject")
HTTPSCALEDOBJECTS = Kind("http.keda.sh", "v1alpha1", "httpscaledobjects", "HTTPScaledObject")
HTTPROUTES = Kind("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")


class KubeError(Exception):
    """An error answer of the API server (status 0: it could not be reached)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


def _error(status: int, text: str) -> KubeError:
    try:
        body = json.loads(text)
        return KubeError(status, body.get("reason", ""), body.get("message", text))
    except (ValueError, AttributeError):
        return KubeError(status, "", text[:500])


async def load_configuration(
    kubeconfig: str = "", context: str = "", in_cluster: bool | None = None
) -> tuple[Any, str]:
    """(client Configuration, default namespace) from a kubeconfig or the pod's account.

    `in_cluster=None` tries the service account first, then the kubeconfig
    ($KUBECONFIG or ~/.kube/config), like kubectl inside and outside a cluster.
    """
    from kubernetes.aio import config as kube_config
    from kubernetes.aio.client import Configuration

    configuration = Configuration()
    use_cluster = in_cluster
    if use_cluster is None:
        use_cluster = not kubeconfig and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if use_cluster:
        kube_config.load_incluster_config(client_configuration=configuration)
        namespace = (
            IN_CLUSTER_NAMESPACE.read_text().strip() if IN_CLUSTER_NAMESPACE.exists() else ""
        )
        return configuration, namespace or "default"
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
    await kube_config.load_kube_config(
        config_file=path, context=context or None, client_configuration=configuration
    )
    contexts, active = kube_config.list_kube_config_contexts(config_file=path)
    chosen = next((c for c in contexts if c["name"] == context), active) if context else active
    namespace = ((chosen or {}).get("context") or {}).get("namespace") or "default"
    return configuration, namespace


async def bearer_token(configuration: Any) -> str | None:
    """The bearer token the configuration sends (for clients outside the official one)."""
    header = await configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
    if not header:
        return None
    parts = header.split(" ", 1)
    return parts[-1]


class Kube:
    """Namespaced REST calls returning JSON documents; KubeError on any error status."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        self.api = api_client
        self.namespace = namespace

    @classmethod
    def from_configuration(cls, configuration: Any, namespace: str) -> Kube:
        from kubernetes.aio.client import ApiClient

        return cls(ApiClient(configuration), namespace)

    async def close(self) -> None:
        await self.api.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = 30,
    ) -> Any:
        """One call; the decoded JSON answer (or text, for non-JSON answers)."""
        response = await self._send(method, path, query, body, content_type, timeout)
        data = await response.read()
        text = data.decode("utf-8", errors="replace")
        if response.status >= 400:
            raise _error(response.status, text)
        if "json" in (response.headers.get("Content-Type") or ""):
            return json.loads(text) if text else None
        return text

    async def _send(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None,
        body: Any,
        content_type: str,
        timeout: float | None,
    ) -> Any:
        params = [
            (k, str(v).lower() if isinstance(v, bool) else v) for k, v in (query or {}).items()
        ]
        method_, url, headers, body_, _ = await self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=[p for p in params if p[1] is not None],
            header_params={"Accept": "application/json, */*", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        # A ClientTimeout (not a number): no total limit for streams, a connect limit always.
        limit = aiohttp.ClientTimeout(total=timeout, sock_connect=10)
        try:
            return await self.api.call_api(method_, url, headers, body_, _request_timeout=limit)
        except Exception as error:  # connection refused, TLS, timeouts: say so, never hang
            if isinstance(error, KubeError):
                raise
            raise KubeError(
                0, "Unreachable", f"the Kubernetes API cannot be reached: {error}"
            ) from None

    async def stream_lines(
        self, path: str, query: Mapping[str, Any] | None = None
    ) -> AsyncIterator[str]:
        """Lines of a streaming answer (pod logs with follow), until the server ends it."""
        response = await self._send("GET", path, query, None, "application/json", None)
        if response.status >= 400:
            raise _error(response.status, (await response.read()).decode(errors="replace"))
        content = response.response.content
        try:
            while True:
                raw = await content.readline()
                if not raw:
                    return
                yield raw.decode("utf-8", errors="replace").rstrip("\n")
        finally:
            response.response.release()

    # ---- resources ------------------------------------------------------------------

    async def get(self, kind: Kind, name: str) -> dict[str, Any]:
        return await self.request("GET", kind.path(self.namespace, name))

    async def find(self, kind: Kind, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self.get(kind, name)
        except KubeError as error:
            if error.not_found:
                return None
            raise

    async def list(
        self, kind: Kind, *, labels: str | None = None, fields: str | None = None
    ) -> list[dict[str, Any]]:
        query = {"labelSelector": labels, "fieldSelector": fields}
        answer = await self.request("GET", kind.path(self.namespace), query=query)
        items = answer.get("items") or []
        for item in items:
            item.setdefault("kind", kind.kind)
            item.setdefault("apiVersion", f"{kind.group}/{kind.version}".lstrip("/"))
        return items

    async def create(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", kind.path(self.namespace), body=body)

    async def replace(
        self, kind: Kind, name: str, body: dict[str, Any], sub: str | None = None
    ) -> dict[str, Any]:
        return await self.request("PUT", kind.path(self.namespace, name, sub), body=body)

    async def patch(
        self, kind: Kind, name: str, body: dict[str, Any], sub: str | None = None
    ) -> dict[str, Any]:
        """JSON merge patch (RFC 7386) of the object or a subresource (status)."""
        return await self.request(
            "PATCH", kind.path(self.namespace, name, sub), body=body, content_type=MERGE_PATCH
        )

    async def delete(self, kind: Kind, name: str, propagation: str = "Background") -> None:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        await self.request("DELETE", kind.path(self.namespace, name), body=body)

    async def pod_log(
        self,
        pod: str,
        container: str,
        *,
        tail: int | None = None,
        previous: bool = False,
        timestamps: bool = True,
    ) -> str:
        query = {
            "container": container,
            "timestamps": timestamps,
            "tailLines": tail,
            "previous": previous or None,
        }
        text = await self.request("GET", PODS.path(self.namespace, pod, "log"), query=query)
        return text if isinstance(text, str) else json.dumps(text)

    def follow_pod_log(self, pod: str, container: str, *, tail: int = 0) -> AsyncIterator[str]:
        query = {"container": container, "timestamps": True, "follow": True, "tailLines": tail}
        return self.stream_lines(PODS.path(self.namespace, pod, "log"), query)
