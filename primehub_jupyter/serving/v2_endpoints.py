"""KServe V2 endpoints of the model server, mixed into ModelServerApp."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import numpy as np
import orjson

from .errors import PayloadError
from .http import (
    JSON,
    OCTETS,
    REQUEST_ID_TEXT,
    Answer,
    Call,
    Handler,
    header_length,
    read_body,
)
from .protocols import v2

if TYPE_CHECKING:
    from .metrics import ServerMetrics
    from .runtimes.base import Runtime

_POST = ("POST",)
_GET = ("GET",)
V2_MODELS = "/v2/models/"


class V2Endpoints:
    """/v2 health and metadata, /v2/models/<name>[/versions/<v>][/ready|/infer]."""

    # Provided by ModelServerApp.
    runtime: Runtime
    name: str
    names: set[str]
    model_version: str
    server_version: str
    max_body_bytes: int
    metrics: ServerMetrics
    _inputs: list[dict[str, Any]]
    _outputs: list[dict[str, Any]]
    _output_name: str
    _dtype: np.dtype[Any]
    _strict: bool
    _custom_metrics: bool
    _table: Any

    async def _v2_table_infer(self, call: Call) -> Answer:
        """A V2 request for a table model (TableEndpoints._v2_table_infer)."""
        raise NotImplementedError

    async def predict(self, X: Any, names: list[str] | None, meta: dict[str, Any]) -> Any:
        """Run the model (ModelServerApp.predict)."""
        raise NotImplementedError

    async def _v2_server(self, call: Call) -> Answer:
        return 200, JSON, orjson.dumps(v2.server_metadata(self.server_version))

    async def _v2_live(self, call: Call) -> Answer:
        return 200, JSON, b'{"live":true}'

    async def _v2_ready(self, call: Call) -> Answer:
        return 200, JSON, b'{"ready":true}'

    def _v2_model_route(self, path: str, call: Call) -> tuple[tuple[str, ...], Handler] | None:
        parts = path[len(V2_MODELS) :].split("/")
        name = unquote(parts[0])
        version = None
        tail = parts[1:]
        if len(parts) >= 3 and parts[1] == "versions":
            version = unquote(parts[2])
            tail = parts[3:]
        if tail == ["infer"]:
            methods, action = _POST, self._v2_infer
        elif tail == ["ready"]:
            methods, action = _GET, self._v2_model_ready
        elif tail == [] or tail == [""]:
            methods, action = _GET, self._v2_model_metadata
        else:
            return None

        async def handler(call: Call) -> Answer:
            if name not in self.names:
                served = ", ".join(sorted(self.names))
                message = f"model {name!r} not found; this server serves {served}"
                return 404, JSON, v2.error_body(message)
            if version is not None and version != self.model_version:
                message = (
                    f"version {version!r} of model {name!r} not found; the served version is "
                    f"{self.model_version!r}"
                )
                return 404, JSON, v2.error_body(message)
            return await action(call)

        return methods, handler

    async def _v2_model_ready(self, call: Call) -> Answer:
        return 200, JSON, orjson.dumps({"name": self.name, "ready": True})

    async def _v2_model_metadata(self, call: Call) -> Answer:
        call.service = "metadata"
        document = v2.model_metadata(
            name=self.name,
            version=self.model_version,
            platform=self.runtime.name,
            inputs=self._inputs,
            outputs=self._outputs,
        )
        if self._table is not None:  # as MLServer marks a model that takes a DataFrame
            document["parameters"] = {"content_type": "pd"}
        return 200, JSON, orjson.dumps(document)

    async def _v2_infer(self, call: Call) -> Answer:
        call.service = "infer"
        call.log = True
        if self._table is not None:
            return await self._v2_table_infer(call)
        try:
            body = await read_body(call, self.max_body_bytes)
            length = header_length(call.header_length)
            request = v2.decode_infer(body, length)
            # Only now is the header known to be JSON (the request log embeds it as is).
            call.request_json_length = len(body) if length is None else length
            X, names = v2.model_input(request)
            if self._strict and X.dtype.kind not in "biuf":
                raise PayloadError(
                    f"the model takes numbers ({v2.datatype_name(np.empty(0, self._dtype))}); "
                    f"got {v2.datatype_name(X)} data"
                )
            if X.dtype != self._dtype and X.dtype.kind in "biuf":
                X = X.astype(self._dtype)
            X = self.runtime.check_input(X, names)
        except PayloadError as exc:
            return exc.status, JSON, v2.error_body(str(exc))
        return await self._v2_answer(call, request, lambda meta: self.predict(X, names, meta))

    async def _v2_answer(
        self,
        call: Call,
        request: v2.InferRequest,
        predict: Callable[[dict[str, Any]], Awaitable[Any]],
    ) -> Answer:
        """Predict for a decoded V2 request (tensor or table) and encode the answer."""
        if not call.id_given and request.id and REQUEST_ID_TEXT.fullmatch(request.id):
            call.request_id = request.id.encode()
        meta = {"tags": request.parameters} if request.parameters else {}
        try:
            output = np.asarray(await predict(meta))
            body, json_length = v2.encode_infer(
                model_name=self.name,
                model_version=self.model_version,
                request=request,
                outputs={self._output_name: output},
                class_names=self.runtime.class_names,
            )
        except PayloadError as exc:
            return exc.status, JSON, v2.error_body(str(exc))
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            return 500, JSON, v2.error_body(f"{type(exc).__name__}: {exc}")
        if self._custom_metrics:
            self.metrics.custom(self.runtime.metrics(), "predict")
        if json_length is None:
            return 200, JSON, body
        call.response_json_length = json_length
        call.extra_headers = [(b"inference-header-content-length", str(json_length).encode())]
        return 200, OCTETS, body
