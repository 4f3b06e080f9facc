"""The model server's ASGI application: Seldon v1 and KServe V2 endpoints, metrics, request log."""

from __future__ import annotations

import asyncio
import os
import time
from time import perf_counter
from typing import Any

import numpy as np
import orjson

from .batching import Batcher
from .catalog import CATALOG_PATHS, openapi_document, server_url
from .errors import PayloadError
from .http import (
    JSON,
    REQUEST_ID,
    REQUEST_ID_TEXT,
    TEXT,
    Answer,
    Call,
    ClientGone,
    Handler,
    Receive,
    Scope,
    Send,
    lifespan,
    model_error,
    read_body,
    seldon_error,
    text,
)
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Identity, ServerMetrics
from .protocols import seldon, v2
from .requestlog import FEEDBACK, REQUESTS, RawBody, RequestLog
from .runtimes.base import Runtime
from .table_endpoints import TableEndpoints
from .tables import Table
from .v2_endpoints import V2_MODELS, V2Endpoints

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024

_MAX_LOGGED_PATH = 512
_POST = ("POST",)
_GET = ("GET",)
_GET_POST = ("GET", "POST")

_QUIET_PATHS = frozenset(
    {"/health/ping", "/health/status", "/v2/health/live", "/v2/health/ready", "/metrics"}
)
# Services in the Seldon latency histograms; health probes and scrapes are not requests.
_PREDICT_CLIENT_SERVICE = "/predict"
_FEEDBACK_CLIENT_SERVICE = "/send-feedback"


def _overrides(runtime: Runtime, hook: str) -> bool:
    """True when the runtime's class replaces the base class's do-nothing hook."""
    return getattr(type(runtime), hook) is not getattr(Runtime, hook)


class ModelServerApp(TableEndpoints, V2Endpoints):
    """Raw ASGI app serving one loaded runtime.

    Per request the hot path is a few dict lookups, one JSON decode and one encode, the model
    call, two histogram observations and, when the request log is on, one queue put. The model
    runs on the event loop, or in one worker thread when adaptive batching is on.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        name: str,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        access_log: bool = True,
        deployment: str | None = None,
        replica: str | None = None,
        predictor: str | None = None,
        model_version: str = "",
        model_image: str = "",
        aliases: tuple[str, ...] = (),
        max_batch_size: int = 1,
        max_batch_wait: float = 0.0,
        request_log: RequestLog | None = None,
        metrics: ServerMetrics | None = None,
        server_version: str = "",
    ) -> None:
        self.runtime = runtime
        self.name = name
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log
        self.deployment = deployment
        self.replica = replica
        self.predictor = predictor
        # Every answer names its predictor (canary, A/B): X-PrimeHub-Predictor.
        self._predictor_header = (
            [(b"x-primehub-predictor", predictor.encode())] if predictor else []
        )
        self.model_version = model_version
        self.model_image = model_image
        self.request_log = request_log
        self.server_version = server_version
        self.metrics = metrics or ServerMetrics(
            Identity(
                deployment_name=deployment or "",
                predictor_name=predictor or "",
                model_name=name,
                model_image=model_image,
                model_version=model_version,
            )
        )
        self.names = {name, *aliases}
        self.batcher: Batcher | None = None
        if max_batch_size > 1 and runtime.supports_batching:
            self.batcher = Batcher(
                runtime.predict,
                max_batch_size=max_batch_size,
                max_wait=max_batch_wait,
                on_batch=self.metrics.observe_batch,
            )
        self._predict_raw = _overrides(runtime, "predict_raw")
        self._send_feedback = _overrides(runtime, "send_feedback")
        self._custom_metrics = _overrides(runtime, "metrics")
        self._tags = _overrides(runtime, "tags")
        self._health_status = _overrides(runtime, "health_status")
        self._metadata = hasattr(Runtime, "metadata") and _overrides(runtime, "metadata")

        descriptor = runtime.descriptor
        signature = descriptor.signature if descriptor else None
        self._inputs = [s.v2_metadata() for s in signature.inputs] if signature else []
        self._outputs = [s.v2_metadata() for s in signature.outputs] if signature else []
        # The bundle's declared input type decides how JSON arrays are read: numbers become
        # that type (FP64 for scikit-learn) and anything else is a 400, unless the runtime
        # takes non-numeric arrays too (custom models).
        self._dtype: np.dtype[Any] = getattr(runtime, "input_dtype", _FLOAT64)
        self._strict: bool = getattr(runtime, "numeric_input", True)
        self._output_name = self._outputs[0]["name"] if self._outputs else "output-0"
        # A table signature: requests become DataFrames with the recorded column dtypes
        # (tensor bundles never take this branch, so their hot path is unchanged).
        self._table = Table(signature.inputs) if signature and signature.is_table else None
        self._requests_path: dict[str, str] | None = {name: model_image} if model_image else None

        routes: dict[str, tuple[tuple[str, ...], Handler]] = {}
        for path in ("/api/v1.0/predictions", "/api/v0.1/predictions"):
            routes[path] = (_POST, self._predictions)
        routes["/predict"] = (_GET_POST, self._predictions)  # Seldon's microservice path
        routes["/api/model/invoke"] = (_POST, self._odahu_invoke)
        for path in ("/api/v1.0/feedback", "/api/v0.1/feedback"):
            routes[path] = (_POST, self._seldon_feedback)
        routes["/send-feedback"] = (_GET_POST, self._seldon_feedback)
        for path in ("/feedback", "/feedback/model", "/feedback/model/", "/api/v1/feedback"):
            routes[path] = (_POST, self._request_id_feedback)
        for path in ("/api/v1.0/metadata", "/metadata"):
            routes[path] = (_GET, self._seldon_metadata)
        for alias in self.names:
            routes[f"/api/v1.0/metadata/{alias}"] = (_GET, self._seldon_metadata)
        routes["/health/ping"] = (_GET, self._ping)
        routes["/health/status"] = (_GET, self._status)
        routes["/api/v1.0/health/status"] = (_GET, self._status)
        routes["/metrics"] = (_GET, self._metrics)
        routes["/prometheus"] = (_GET, self._metrics)  # where Seldon's executor serves them
        routes["/v2"] = (_GET, self._v2_server)
        routes["/v2/health/live"] = (_GET, self._v2_live)
        routes["/v2/health/ready"] = (_GET, self._v2_ready)
        for path in CATALOG_PATHS:
            # POST too: the control plane's invoke (the catalog REST route) always POSTs.
            routes[path] = (_GET_POST, self._catalog)
        self._routes = routes
        self._started = False
        self._id_prefix = b""
        self._ids = 0

    # ---- lifecycle --------------------------------------------------------------------------

    def _start(self) -> None:
        """Start threads and timers in the serving process (they do not survive fork())."""
        self._started = True
        self._id_prefix = os.urandom(8).hex().encode()  # per worker: chosen after fork()
        if self.request_log is not None:
            self.request_log.start()
        if self.metrics.snapshot_dir is not None:
            asyncio.get_running_loop().call_later(1.0, self._flush_metrics)

    def _flush_metrics(self) -> None:
        self._count_request_log_drops()
        self.metrics.flush()
        asyncio.get_running_loop().call_later(1.0, self._flush_metrics)

    def close(self) -> None:
        """Finish the batch in flight, write the request log out and the last metrics."""
        if self.batcher is not None:
            self.batcher.close()
        if self.request_log is not None:
            self.request_log.close()
        self._count_request_log_drops()
        self.metrics.flush(force=True)

    # ---- the model --------------------------------------------------------------------------

    async def predict(self, X: Any, names: list[str] | None, meta: dict[str, Any]) -> Any:
        """Run the model, through the batcher when batching is on; records the client latency."""
        started = perf_counter()
        code = 500
        try:
            # Table requests arrive as DataFrames and batch too (concatenated by the batcher).
            if self.batcher is not None and (
                self._table is not None or (isinstance(X, np.ndarray) and X.ndim)
            ):
                output = await self.batcher.submit(X, names, meta)
            else:
                output = self.runtime.predict(X, names, meta)
            code = 200
            return output
        except PayloadError:
            code = 400
            raise
        finally:
            self.metrics.observe_client(_PREDICT_CLIENT_SERVICE, code, perf_counter() - started)

    # ---- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await lifespan(receive, send)
            return
        if not self._started:
            self._start()
        started = perf_counter()
        call = Call(scope, receive)
        forwarded_id: bytes | None = None
        request_id: bytes | None = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                call.content_length = value
            elif key == b"content-type":
                call.content_type = value
            elif key == b"request-id":
                request_id = value
            elif key == b"x-request-id":
                forwarded_id = value
            elif key == b"x-forwarded-user":
                call.user = value
            elif key == v2.HEADER_LENGTH:
                call.header_length = value
            elif key == b"content-encoding":
                call.content_encoding = value
            elif key == b"model-name":
                call.model_name = value
            elif key == b"model-version":
                call.model_version = value
        if request_id is None:
            request_id = forwarded_id
        if request_id is not None and REQUEST_ID.fullmatch(request_id):
            call.request_id = request_id
            call.id_given = True
        else:
            # A random per-process prefix and a counter: unique like a uuid4, a tenth the cost.
            self._ids += 1
            call.request_id = b"%s%016x" % (self._id_prefix, self._ids)

        path = scope["path"]
        route = self._routes.get(path)
        if route is None and path.startswith(V2_MODELS):
            route = self._v2_model_route(path, call)
        try:
            if route is None:
                status, content_type, body = seldon_error(404, f"no route {path}", "NOT_FOUND")
            elif scope["method"] not in route[0]:
                allowed = ", ".join(route[0])
                status, content_type, body = seldon_error(
                    405, f"{path} accepts {allowed} only", "METHOD_NOT_ALLOWED"
                )
                call.extra_headers = [(b"allow", allowed.encode())]
            else:
                status, content_type, body = await route[1](call)
        except ClientGone:
            if self.access_log:  # 499: nginx's code for "client closed the request"
                self._log(scope, 499, started, call.user, call.request_id)
            return

        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (b"request-id", call.request_id),
            *self._predictor_header,
        ]
        if call.extra_headers:
            headers.extend(call.extra_headers)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        elapsed = perf_counter() - started
        if call.service is not None:
            self.metrics.observe_server(call.service, status, elapsed, scope["method"])
        if call.log and self.request_log is not None:
            self._log_request(call, status, body, elapsed)
        # Successful health probes come every few seconds and would bury real traffic.
        if self.access_log and not (status == 200 and path in _QUIET_PATHS):
            self._log(scope, status, started, call.user, call.request_id)

    # ---- Seldon v1 --------------------------------------------------------------------------

    async def _predictions(self, call: Call) -> Answer:
        call.service = "predictions"
        call.log = True
        try:
            body = await read_body(call, self.max_body_bytes)
            body = seldon.form_json(body, call.content_type, call.scope["query_string"])
            call.request_body = body
            payload = seldon.load_json(body)
            call.request_json_length = len(body)
            if self._predict_raw:
                answer = await self._raw(call, payload)
                if answer is not None:
                    return answer
            if self._table is not None:
                return await self._table_predictions(call, payload)
            request = seldon.decode_payload(
                payload,
                runtime=self.runtime.name,
                kinds=self.runtime.payload_kinds,
                dtype=self._dtype,
                strict=self._strict,
            )
            X = request.X
            if request.kind in seldon.ARRAY_KINDS:
                X = self.runtime.check_input(X, request.names)
        except PayloadError as exc:
            return seldon_error(exc.status, str(exc), exc.reason)
        puid = request.meta.get("puid")
        if not call.id_given and isinstance(puid, str) and REQUEST_ID_TEXT.fullmatch(puid):
            call.request_id = puid.encode()
        try:
            output = await self.predict(X, request.names, request.meta)
            meta = self._response_meta(call, request.meta, "predict")
            body = seldon.encode_response(output, request.kind, self.runtime.class_names, meta)
        except PayloadError as exc:  # a runtime may reject input only it can judge
            return seldon_error(exc.status, str(exc), exc.reason)
        except Exception as exc:
            return model_error(exc)
        return 200, JSON, body

    async def _raw(self, call: Call, payload: dict[str, Any]) -> Answer | None:
        """The runtime's predict_raw hook: the whole document in, a whole document out."""
        started = perf_counter()
        code = 500
        try:
            answer = self.runtime.predict_raw(payload)
            code = 200
        except PayloadError as exc:
            code = 400
            return seldon_error(exc.status, str(exc), exc.reason)
        except Exception as exc:
            return model_error(exc)
        finally:
            self.metrics.observe_client(_PREDICT_CLIENT_SERVICE, code, perf_counter() - started)
        if answer is None:
            return None
        try:
            # Inside the try: a model's malformed custom metrics is its error, a JSON 500.
            if isinstance(answer, dict):
                meta = answer.get("meta")
                if isinstance(meta, dict):
                    meta.setdefault("puid", call.request_id.decode())
                    if "metrics" in meta:  # Seldon reads custom metrics from a raw answer's meta
                        meta["metrics"] = self.metrics.custom(meta["metrics"], "predict")
                else:
                    answer["meta"] = self._response_meta(call, payload.get("meta") or {}, "predict")
            return 200, JSON, seldon.dumps(answer)
        except Exception as exc:  # the model's own failure: a JSON 500
            return model_error(exc)

    def _response_meta(self, call: Call, request_meta: Any, method: str) -> dict[str, Any]:
        meta: dict[str, Any] = {"puid": call.request_id.decode()}
        tags = request_meta.get("tags") if isinstance(request_meta, dict) else None
        if self._tags:
            extra = self.runtime.tags()
            tags = {**tags, **extra} if isinstance(tags, dict) else extra
        if tags:
            meta["tags"] = tags
        if self._custom_metrics:
            custom = self.metrics.custom(self.runtime.metrics(), method)
            if custom:
                meta["metrics"] = custom
        if self._requests_path is not None:
            meta["requestPath"] = self._requests_path
        return meta

    async def _seldon_feedback(self, call: Call) -> Answer:
        call.service = "feedback"
        started = perf_counter()
        try:
            body = await read_body(call, self.max_body_bytes)
            body = seldon.form_json(body, call.content_type, call.scope["query_string"])
            feedback = seldon.decode_feedback(body)
        except PayloadError as exc:
            return seldon_error(exc.status, str(exc), exc.reason)
        answer: Any = None
        code = 500
        try:
            if self._send_feedback:
                answer = self.runtime.send_feedback(
                    feedback.request, feedback.response, feedback.reward or 0.0, feedback.truth
                )
            code = 200
        except PayloadError as exc:
            code = 400
            return seldon_error(exc.status, str(exc), exc.reason)
        except Exception as exc:
            return model_error(exc)
        finally:
            self.metrics.observe_client(_FEEDBACK_CLIENT_SERVICE, code, perf_counter() - started)
        self.metrics.feedback(feedback.reward)
        referenced = feedback.request_id or (call.request_id.decode() if call.id_given else None)
        if self.request_log is not None:
            self.request_log.record(
                FEEDBACK,
                {
                    "_epoch": time.time(),
                    "requestId": referenced,
                    "feedbackId": call.request_id.decode(),
                    "source": "seldon",
                    "user": text(call.user),
                    "reward": feedback.reward,
                    "truth": feedback.truth,
                    "request": feedback.request,
                    "response": feedback.response,
                },
            )
        try:
            meta = self._response_meta(call, feedback.request.get("meta"), "feedback")
            if answer is None:
                return 200, JSON, seldon.dumps({"meta": meta})
            if isinstance(answer, dict):  # a whole Seldon message (send_feedback_raw)
                their_meta = answer.get("meta")
                answer["meta"] = {**meta, **their_meta} if isinstance(their_meta, dict) else meta
                return 200, JSON, seldon.dumps(answer)
            kind = seldon.NDARRAY if isinstance(answer, (list, np.ndarray)) else ""
            return 200, JSON, seldon.encode_response(answer, kind, None, meta)
        except Exception as exc:  # the model's own failure: a JSON 500
            return model_error(exc)

    async def _request_id_feedback(self, call: Call) -> Answer:
        """ODAHU-style feedback: any JSON body about the prediction named by Request-ID."""
        call.service = "feedback"
        try:
            body = await read_body(call, self.max_body_bytes)
            if not call.id_given:
                raise PayloadError(
                    "send the Request-ID header of the prediction this feedback is about "
                    "(every prediction response carries one)"
                )
            payload = seldon.load_json(body, "send any JSON object as the feedback")
        except PayloadError as exc:
            return seldon_error(exc.status, str(exc), exc.reason)
        request_id = call.request_id.decode()
        logged = self.request_log is not None
        if self.request_log is not None:
            self.request_log.record(
                FEEDBACK,
                {
                    "_epoch": time.time(),
                    "requestId": request_id,
                    "source": "request-id",
                    "user": text(call.user),
                    "modelName": text(call.model_name),
                    "modelVersion": text(call.model_version),
                    "feedback": payload,
                },
            )
        message = "feedback stored" if logged else "request logging is off; feedback not stored"
        answer = {"message": message, "requestId": request_id, "logged": logged}
        return 200, JSON, orjson.dumps(answer)

    async def _seldon_metadata(self, call: Call) -> Answer:
        call.service = "metadata"
        return 200, JSON, seldon.dumps(self.seldon_metadata())

    def seldon_metadata(self) -> dict[str, Any]:
        """Model metadata in Seldon's format, from the bundle's signature."""
        descriptor = self.runtime.descriptor
        custom = {}
        if descriptor is not None:
            custom = {
                "framework": descriptor.framework,
                "frameworkVersion": descriptor.framework_version,
                "runtime": descriptor.runtime,
                "predictMethod": descriptor.predict_method,
            }
        feature_names = None
        if descriptor is not None and descriptor.sample is not None:
            data = descriptor.sample.request.get("data")
            if isinstance(data, dict) and isinstance(data.get("names"), list):
                feature_names = data["names"]
        declared = self.runtime.metadata() if self._metadata else None
        if isinstance(declared, dict):  # the model's own (Seldon's init_metadata)
            return {"name": self.name, "versions": [self.model_version], **declared}
        inputs = self._inputs
        if self._table is not None:  # Seldon describes a table as one tensor of named columns
            inputs = [{"name": "input-0", "shape": [-1, len(self._table.columns)]}]
            feature_names = self._table.columns
        return seldon.metadata(
            name=self.name,
            version=self.model_version,
            platform=self.runtime.name,
            inputs=inputs,
            outputs=self._outputs,
            feature_names=feature_names,
            class_names=self.runtime.class_names,
            custom=custom,
        )

    async def _catalog(self, call: Call) -> Answer:
        prefix = next((v for k, v in call.scope["headers"] if k == b"x-forwarded-prefix"), b"")
        document = openapi_document(
            self.runtime.descriptor,
            name=self.name,
            version=self.model_version,
            served=self._routes.keys(),
            server=server_url(prefix.decode("latin-1")),
            deployment=self.deployment,
        )
        return 200, JSON, orjson.dumps(document)

    # ---- health and metrics -----------------------------------------------------------------

    async def _ping(self, call: Call) -> Answer:
        return 200, TEXT, b"pong"

    async def _status(self, call: Call) -> Answer:
        descriptor = self.runtime.descriptor
        status: dict[str, Any] = {
            "status": "ok",
            "name": self.name,
            "runtime": self.runtime.name,
            "framework": descriptor.framework if descriptor else None,
            "predictMethod": getattr(self.runtime, "method", None),
            "classNames": self.runtime.class_names,
            "deployment": self.deployment,
            "replica": self.replica,
            "predictor": self.predictor,
            "modelVersion": self.model_version,
            "batching": {
                "maxBatchSize": self.batcher.max_batch_size if self.batcher else 1,
                "maxBatchWaitMs": self.batcher.max_wait * 1000 if self.batcher else 0,
            },
            "requestLog": self.request_log is not None,
            "pid": os.getpid(),
        }
        if self._health_status:
            try:
                status["model"] = self.runtime.health_status()
            except Exception as exc:
                status["status"] = "unhealthy"
                status["message"] = f"{type(exc).__name__}: {exc}"
                return 503, JSON, seldon.dumps(status)
        try:
            return 200, JSON, seldon.dumps(status)
        except TypeError as exc:
            return model_error(exc)

    async def _metrics(self, call: Call) -> Answer:
        self._count_request_log_drops()
        return 200, METRICS_CONTENT_TYPE, self.metrics.render()

    def _count_request_log_drops(self) -> None:
        # Read here, on the event loop, so the metrics are never written from the log's thread.
        if self.request_log is not None:
            self.metrics.request_log_dropped(self.request_log.dropped)

    # ---- logs -------------------------------------------------------------------------------

    def _log_request(self, call: Call, status: int, body: bytes, elapsed: float) -> None:
        assert self.request_log is not None
        response_length = len(body) if call.response_json_length < 0 else call.response_json_length
        self.request_log.record(
            REQUESTS,
            {
                "_epoch": time.time(),
                "requestId": call.request_id.decode(),
                "user": text(call.user),
                "method": call.scope["method"],
                "path": call.scope["path"],
                "status": status,
                "latencyMs": round(elapsed * 1000.0, 3),
                "replica": self.replica,
                "predictor": self.predictor,
                "request": RawBody(call.request_body, call.request_json_length),
                "response": RawBody(body, response_length),
            },
        )

    def _log(
        self, scope: Scope, status: int, started: float, user: bytes | None, request_id: bytes
    ) -> None:
        millis = (perf_counter() - started) * 1000.0
        who = user.replace(b" ", b"_")[:128] if user else b"-"
        path = scope["path"][:_MAX_LOGGED_PATH].replace(" ", "%20")
        line = b"%s %s %d %.2fms user=%s request_id=%s\n" % (
            scope["method"].encode(),
            path.encode("utf-8", "replace"),
            status,
            millis,
            who,
            request_id,
        )
        # One write(2) per line: atomic on a pipe, so lines from several workers never mix.
        # (try/except rather than contextlib.suppress: this runs on every request.)
        try:  # noqa: SIM105
            os.write(1, line)
        except OSError:
            pass


_FLOAT64 = np.dtype(np.float64)
