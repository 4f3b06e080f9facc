"""The simulated pod network: Services and pods answer like a model server, and log requests."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from primehub_jupyter.serving.bundle import load_bundle
from primehub_jupyter.serving.catalog import openapi_document
from primehub_jupyter.serving.errors import BundleError

from .kubelet import PodRun

SERVED = ("/api/v1.0/predictions", "/api/v1.0/feedback")


class PodNetwork:
    """Mixed into Cluster: /svc/<service>/... and /pod/<pod>/... on one local HTTP server."""

    # ---- the pod network ------------------------------------------------------------

    def _pod_by_name(self, name: str) -> tuple[dict[str, Any], PodRun] | None:
        pod = self.store.find(self._type("/pods"), self.namespace, name)
        run = self.pods.get(pod["metadata"]["uid"]) if pod else None
        return (pod, run) if pod and run else None

    async def _service_request(self, request: web.Request) -> web.StreamResponse:
        service = self.store.find(
            self._type("/services"), self.namespace, request.match_info["service"]
        )
        if service is None:
            return web.json_response({"message": "no such service"}, status=502)
        selector = service["spec"].get("selector") or {}
        ready = [
            p
            for p in self._list("/pods")
            if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
            and self._ready(p)
            and not p["metadata"].get("deletionTimestamp")
        ]
        if not ready:
            return web.json_response({"message": "no ready endpoints"}, status=503)
        turn = self._round_robin.get(service["metadata"]["name"], 0)
        self._round_robin[service["metadata"]["name"]] = turn + 1
        pod = sorted(ready, key=lambda p: p["metadata"]["name"])[turn % len(ready)]
        return await self._answer(request, pod["metadata"]["name"], request.match_info["path"])

    async def _pod_request(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, request.match_info["pod"], request.match_info["path"])

    async def _answer(self, request: web.Request, pod: str, path: str) -> web.StreamResponse:
        found = self._pod_by_name(pod)
        if found is None or not found[1].model.ready:
            return web.json_response({"message": f"pod {pod} is not ready"}, status=503)
        run = found[1]
        user = request.headers.get("X-Forwarded-User", "-")
        body = await request.read()
        if path == "health/ping":
            return web.Response(text="pong")
        if path == "metrics":
            return web.Response(text=self._metrics_text(run), content_type="text/plain")
        if path in ("api/model/info", "openapi.json") and run.bundle is not None:
            # The real model server's catalog of the mounted bundle (its sample request).
            try:
                descriptor = load_bundle(run.bundle)
            except BundleError as error:  # the tests' stand-in bundles are not whole ones
                return web.json_response({"message": str(error)}, status=404)
            document = openapi_document(descriptor, name="model", version="1", served=SERVED)
            return web.json_response(document)
        service, code = "other", 404
        answer: dict[str, Any] = {"message": "not found"}
        if path in ("api/v1.0/predictions", "api/v0.1/predictions"):
            service = "predictions"
            try:
                payload = json.loads(body or b"{}")
                rows = payload["data"]["ndarray"]
                answer = {
                    "data": {"names": ["sum"], "ndarray": [[float(sum(r))] for r in rows]},
                    "meta": {"replica": pod, "user": user},
                }
                code = 200
            except (ValueError, KeyError, TypeError):
                answer, code = {"status": {"code": 400, "info": "invalid payload"}}, 400
        elif path == "api/v1.0/feedback":
            service, code, answer = "feedback", 200, {"meta": {}}
            reward = float((json.loads(body or b"{}") or {}).get("reward", 0))
            run.metrics["feedback"] = run.metrics.get("feedback", 0) + 1
            run.metrics["reward"] = run.metrics.get("reward", 0) + reward
        key = f"{code}|{service}"
        run.metrics[key] = run.metrics.get(key, 0) + 1
        self._log(pod, "model", run.model.instance, f"{request.method} /{path} {code} user={user}")
        # As our model server does when it is given a predictor name (PREDICTIVE_UNIT_ID).
        env = found[0]["spec"]["containers"][0].get("env") or []
        predictor = next((e.get("value") for e in env if e["name"] == "PREDICTIVE_UNIT_ID"), None)
        headers = {"X-PrimeHub-Predictor": predictor} if predictor else None
        return web.json_response(answer, status=code, headers=headers)

    def _metrics_text(self, run: PodRun) -> str:
        lines = ["# TYPE seldon_api_executor_server_requests_seconds histogram"]
        for key, value in sorted(run.metrics.items()):
            if "|" not in key:
                continue
            code, service = key.split("|")
            labels = f'code="{code}",deployment_name="x",service="{service}"'
            for le in ("0.005", "0.01", "+Inf"):
                bucket = f'{{{labels},le="{le}"}}'
                lines.append(f"seldon_api_executor_server_requests_seconds_bucket{bucket} {value}")
            lines.append(f"seldon_api_executor_server_requests_seconds_count{{{labels}}} {value}")
            lines.append(
                f"seldon_api_executor_server_requests_seconds_sum{{{labels}}} {value * 0.004}"
            )
        lines += [
            "# TYPE seldon_api_model_feedback_total counter",
            f"seldon_api_model_feedback_total {run.metrics.get('feedback', 0)}",
            "# TYPE seldon_api_model_feedback_reward_total counter",
            f"seldon_api_model_feedback_reward_total {run.metrics.get('reward', 0)}",
            "# TYPE process_cpu_seconds_total counter",
            f"process_cpu_seconds_total {time.monotonic() % 1000 / 100:.3f}",
            "# TYPE process_resident_memory_bytes gauge",
            "process_resident_memory_bytes 123456789",
        ]
        return "\n".join(lines) + "\n"
