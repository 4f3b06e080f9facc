"""Table requests (Seldon v1, KServe V2 with content_type pd) and ODAHU's invoke, mixed into
ModelServerApp."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from .errors import PayloadError
from .http import JSON, REQUEST_ID_TEXT, Answer, Call, header_length, model_error, read_body
from .http import seldon_error as _seldon_error
from .protocols import seldon, v2

if TYPE_CHECKING:
    from .runtimes.base import Runtime
    from .tables import Table

_INVOKE_HOW_TO = 'send {"columns": ["a", "b"], "data": [[1, "x"], [2, "y"]]}'


class TableEndpoints:
    """Decodes table requests into DataFrames with the recorded dtypes; serves /api/model/invoke."""

    # Provided by ModelServerApp.
    runtime: Runtime
    name: str
    model_version: str
    max_body_bytes: int
    _table: Table | None
    _output_name: str
    _dtype: np.dtype[Any]

    async def predict(self, X: Any, names: list[str] | None, meta: dict[str, Any]) -> Any:
        """Run the model (ModelServerApp.predict)."""
        raise NotImplementedError

    def _response_meta(self, call: Call, request_meta: Any, method: str) -> dict[str, Any]:
        raise NotImplementedError

    if TYPE_CHECKING:  # V2Endpoints._v2_answer; a stub here would shadow it (this mixin is first)

        async def _v2_answer(
            self,
            call: Call,
            request: v2.InferRequest,
            predict: Callable[[dict[str, Any]], Awaitable[Any]],
        ) -> Answer: ...

    async def _predict_frame(self, frame: Any, meta: dict[str, Any]) -> Any:
        """The model's output for a table; a value the model refuses in a column with known
        categories is a PayloadError naming that column (checked only after a failure)."""
        table = self._table
        try:
            return await self.predict(frame, list(frame.columns), meta)
        except PayloadError:
            raise
        except Exception as exc:
            problem = table.unknown_category(frame) if table is not None else None
            if problem is None and "nan" in str(exc).lower():
                problem = _missing_values(frame)
            if problem is not None:
                raise PayloadError(problem) from None
            raise

    # ---- Seldon v1 --------------------------------------------------------------------------

    def seldon_frame(self, payload: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The DataFrame and meta of a Seldon v1 table request: data.names + data.ndarray (or
        data.tensor), or jsonData as records ([{column: value}, ...] or {column: [values]})."""
        table = self._table
        assert table is not None
        meta = seldon.check_meta(payload.get("meta"), "meta")
        data = payload.get("data")
        if data is None and seldon.JSON_DATA in payload:
            return table.from_records(payload[seldon.JSON_DATA], seldon.JSON_DATA), meta
        if not isinstance(data, dict):
            raise PayloadError(
                'send {"data": {"names": [...], "ndarray": [[...], ...]}} or '
                '{"jsonData": [{"column": value, ...}, ...]}'
            )
        names = data.get("names") or None
        if names is not None and (
            not isinstance(names, list) or not all(isinstance(n, str) for n in names)
        ):
            raise PayloadError('"data.names" must be a list of strings')
        if seldon.NDARRAY in data:
            return table.from_rows(names, data[seldon.NDARRAY], "data.ndarray"), meta
        if seldon.TENSOR in data:
            rows = seldon.decode_payload({"data": {seldon.TENSOR: data[seldon.TENSOR]}}).X
            return table.from_rows(names, np.atleast_2d(rows).tolist(), "data.tensor"), meta
        raise PayloadError('"data" must hold "ndarray" (rows of values) or "tensor"')

    async def _table_predictions(self, call: Call, payload: dict[str, Any]) -> Answer:
        try:
            frame, request_meta = self.seldon_frame(payload)
        except PayloadError as exc:
            return _seldon_error(exc.status, str(exc), exc.reason)
        puid = request_meta.get("puid")
        if not call.id_given and isinstance(puid, str) and REQUEST_ID_TEXT.fullmatch(puid):
            call.request_id = puid.encode()
        try:
            output = await self._predict_frame(frame, request_meta)
            meta = self._response_meta(call, request_meta, "predict")
            body = seldon.encode_response(output, seldon.NDARRAY, self.runtime.class_names, meta)
        except PayloadError as exc:
            return _seldon_error(exc.status, str(exc), exc.reason)
        except Exception as exc:
            return model_error(exc)
        return 200, JSON, body

    # ---- ODAHU ------------------------------------------------------------------------------

    async def _odahu_invoke(self, call: Call) -> Answer:
        """ODAHU's POST /api/model/invoke: {"columns", "data"} in, {"prediction", "columns"} out."""
        call.service = "predictions"
        call.log = True
        try:
            body = await read_body(call, self.max_body_bytes)
            call.request_body = body
            payload = seldon.load_json(body, _INVOKE_HOW_TO)
            call.request_json_length = len(body)
            columns = payload.get("columns")
            if columns is not None and (
                not isinstance(columns, list) or not all(isinstance(c, str) for c in columns)
            ):
                raise PayloadError('"columns" must be a list of strings')
            if "data" not in payload:
                raise PayloadError(f'the request has no "data"; {_INVOKE_HOW_TO}')
            X: Any
            if self._table is not None:
                X = self._table.from_rows(columns or None, payload["data"], "data")
            else:
                X = seldon.decode_payload(
                    {"data": {seldon.NDARRAY: payload["data"]}}, dtype=self._dtype
                ).X
                X = self.runtime.check_input(X, columns or None)
        except PayloadError as exc:
            return _seldon_error(exc.status, str(exc), exc.reason)
        try:
            if self._table is not None:
                output = await self._predict_frame(X, {})
            else:
                output = await self.predict(X, columns or None, {})
            return 200, JSON, seldon.dumps(self._odahu_answer(np.asarray(output)))
        except PayloadError as exc:
            return _seldon_error(exc.status, str(exc), exc.reason)
        except Exception as exc:
            return model_error(exc)

    def _odahu_answer(self, output: np.ndarray) -> dict[str, Any]:
        if output.ndim >= 2:
            return {
                "prediction": output,
                "columns": seldon.output_names(output, self.runtime.class_names),
            }
        return {"prediction": output, "columns": [self._output_name]}

    # ---- KServe V2 --------------------------------------------------------------------------

    async def _v2_table_infer(self, call: Call) -> Answer:
        """A V2 request for a table model: one input per column (MLServer's PandasCodec), or a
        single [N, columns] tensor of rows."""
        table = self._table
        assert table is not None
        try:
            body = await read_body(call, self.max_body_bytes)
            length = header_length(call.header_length)
            request = v2.decode_infer(body, length) if length is not None else None
            header = _v2_header(body) if request is None else request.header
            call.request_json_length = len(body) if length is None else length
            inputs = header.get("inputs")
            if not isinstance(inputs, list) or not inputs:
                raise PayloadError('the request needs a non-empty "inputs" list')
            if request is not None:  # binary tensor data: take the decoded arrays
                inputs = [_plain_input(t) for t in request.inputs]
            first = inputs[0] if isinstance(inputs[0], dict) else {}
            if len(inputs) == 1 and first.get("name") not in table.columns:
                rows = _v2_rows(first)
                frame = table.from_rows(None, rows, f"input {first.get('name')!r}")
            else:
                frame = table.from_v2(inputs)
            if request is None:
                request = v2.InferRequest(header, [], header.get("outputs"))
        except PayloadError as exc:
            return exc.status, JSON, v2.error_body(str(exc))
        return await self._v2_answer(call, request, lambda meta: self._predict_frame(frame, meta))


def _missing_values(frame: Any) -> str | None:
    """A message naming the columns with missing values, for a model that refused NaN."""
    columns = [str(name) for name in frame.columns if frame[name].isna().any()]
    if not columns:
        return None
    return f"column {columns[0]!r} has missing values (null), which the model does not take" + (
        f" (also {', '.join(map(repr, columns[1:]))})" if len(columns) > 1 else ""
    )


def _v2_header(body: bytes) -> dict[str, Any]:
    try:
        header = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"the inference request is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise PayloadError("the inference request must be a JSON object")
    if "id" in header and not isinstance(header["id"], str):
        raise PayloadError('"id" must be a string')
    if not isinstance(header.get("parameters") or {}, dict):
        raise PayloadError('"parameters" must be a JSON object')
    outputs = header.get("outputs")
    if outputs is not None and not (
        isinstance(outputs, list)
        and all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs)
    ):
        raise PayloadError('"outputs" must be a list of {"name": ...} objects')
    return header


def _plain_input(tensor: v2.InputTensor) -> dict[str, Any]:
    values = [
        v.decode("utf-8", "replace") if isinstance(v, bytes) else v
        for v in tensor.array.reshape(-1).tolist()
    ]
    return {"name": tensor.name, "data": values, "shape": tensor.shape, "parameters": {}}


def _v2_rows(raw: dict[str, Any]) -> list[Any]:
    """Rows of one [N, k] tensor sent to a table model (the V2 tensor form)."""
    shape = raw.get("shape")
    data = raw.get("data")
    if not isinstance(data, list) or not isinstance(shape, list) or len(shape) != 2:
        raise PayloadError(
            f"input {raw.get('name')!r}: send one input per column (MLServer's pandas encoding, "
            'parameters.content_type "pd") or one [N, columns] tensor'
        )
    flat = data if not data or not isinstance(data[0], list) else [v for row in data for v in row]
    width = shape[1] if isinstance(shape[1], int) and shape[1] > 0 else 1
    return [flat[i : i + width] for i in range(0, len(flat), width)]
