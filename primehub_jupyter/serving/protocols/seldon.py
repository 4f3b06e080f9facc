"""Seldon v1 payloads: decode requests and feedback, encode outputs, metadata and errors."""

from __future__ import annotations

import base64
import binascii
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import orjson

from ...core.jsondepth import too_deep
from ..errors import PayloadError
from .shapes import MAX_DIMS, MAX_ECHO_DEPTH, checked_shape, list_depth

NDARRAY = "ndarray"
TENSOR = "tensor"
STR_DATA = "strData"
JSON_DATA = "jsonData"
BIN_DATA = "binData"
#: Payload kinds that carry arrays; only these can be batched and checked against a signature.
ARRAY_KINDS = frozenset({NDARRAY, TENSOR})
_TOP_LEVEL_KINDS = (STR_DATA, JSON_DATA, BIN_DATA)
_DEFAULT_KINDS = frozenset({NDARRAY, TENSOR})

_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_NUMERIC_KINDS = frozenset("biuf")
_FLOAT64 = np.dtype(np.float64)

_HOW_TO = (
    'send {"data": {"ndarray": [[...], ...]}} or '
    '{"data": {"tensor": {"shape": [...], "values": [...]}}}'
)


class SeldonRequest:
    """A decoded request: the model input, feature names, meta, the payload kind and document.

    `X` is an array for ndarray/tensor, a str for strData, bytes for binData and any JSON
    value for jsonData.
    """

    __slots__ = ("X", "kind", "meta", "names", "payload")

    def __init__(
        self,
        X: Any,
        names: list[str] | None,
        meta: dict[str, Any],
        kind: str,
        payload: dict[str, Any] | None = None,
    ) -> None:
        self.X = X
        self.names = names
        self.meta = meta
        self.kind = kind
        self.payload = payload if payload is not None else {}


def form_json(body: bytes, content_type: bytes | None, query: bytes) -> bytes:
    """The JSON document of a request, also when sent the Seldon microservice way.

    Seldon's Python wrapper (and SeldonClient's microservice calls) post the document as a
    form field `json=...` or pass it in the query string; plain JSON bodies pass through.
    """
    if content_type is not None and content_type.startswith(b"application/x-www-form-urlencoded"):
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        if "json" in fields:
            return fields["json"][0].encode()
    if not body and query:
        fields = parse_qs(query.decode("utf-8", "replace"))
        if "json" in fields:
            return fields["json"][0].encode()
    return body


def load_json(body: bytes, how_to: str = _HOW_TO) -> dict[str, Any]:
    """Parse a JSON object body; PayloadError says what is wrong."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"the request body is not valid JSON ({exc}); {how_to}") from None
    if not isinstance(payload, dict):
        raise PayloadError(f"the request body must be a JSON object; {how_to}")
    return payload


def decode_request(
    body: bytes,
    *,
    runtime: str = "sklearn",
    kinds: frozenset[str] = _DEFAULT_KINDS,
    dtype: np.dtype[Any] = _FLOAT64,
    strict: bool = True,
) -> SeldonRequest:
    """Parse a Seldon v1 JSON body; PayloadError says what is wrong.

    `kinds` are the payload kinds the runtime accepts (others get a 400 naming the runtime).
    Numeric arrays are converted to `dtype`; with `strict` an ndarray of anything else (strings,
    null, ragged rows) is a 400, without it such arrays reach the model as numpy made them.
    """
    return decode_payload(load_json(body), runtime=runtime, kinds=kinds, dtype=dtype, strict=strict)


def decode_payload(
    payload: dict[str, Any],
    *,
    runtime: str = "sklearn",
    kinds: frozenset[str] = _DEFAULT_KINDS,
    dtype: np.dtype[Any] = _FLOAT64,
    strict: bool = True,
) -> SeldonRequest:
    """Like `decode_request`, for an already parsed document."""
    meta = check_meta(payload.get("meta"), "meta")

    data = payload.get("data")
    if data is None:
        for kind in _TOP_LEVEL_KINDS:
            if kind in payload:
                _check_kind(kind, kinds, runtime)
                return SeldonRequest(_top_level(kind, payload[kind]), None, meta, kind, payload)
        raise PayloadError(f'the request has no "data"; {_HOW_TO}')
    if not isinstance(data, dict):
        raise PayloadError(f'"data" must be a JSON object; {_HOW_TO}')

    names = data.get("names")
    if names is not None and (
        not isinstance(names, list) or not all(isinstance(n, str) for n in names)
    ):
        raise PayloadError('"data.names" must be a list of strings')
    if not names:
        names = None

    if NDARRAY in data:
        _check_kind(NDARRAY, kinds, runtime)
        X = _numbers(data[NDARRAY], "data.ndarray", dtype, strict)
        return SeldonRequest(X, names, meta, NDARRAY, payload)
    if TENSOR in data:
        _check_kind(TENSOR, kinds, runtime)
        return SeldonRequest(_tensor(data[TENSOR], dtype), names, meta, TENSOR, payload)
    raise PayloadError(f'"data" must hold "ndarray" or "tensor"; {_HOW_TO}')


def check_meta(meta: Any, field: str) -> dict[str, Any]:
    """A message's meta ({} when absent); PayloadError when it cannot be answered with.

    The server echoes meta's tags in its answer, so meta may nest at most MAX_ECHO_DEPTH
    levels (a JSON writer refuses deeper documents, which would turn into a 500).
    """
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise PayloadError(f'"{field}" must be a JSON object')
    if too_deep(meta, MAX_ECHO_DEPTH):
        raise PayloadError(f'"{field}" nests more than {MAX_ECHO_DEPTH} levels deep')
    return meta


def _check_kind(kind: str, kinds: frozenset[str], runtime: str) -> None:
    if kind not in kinds:
        accepted = ", ".join(sorted(kinds)) or "nothing"
        raise PayloadError(
            f"{kind} payloads are not supported by the {runtime} runtime (it accepts "
            f"{accepted}); {_HOW_TO}"
        )


def _top_level(kind: str, value: Any) -> Any:
    if kind == STR_DATA:
        if not isinstance(value, str):
            raise PayloadError('"strData" must be a JSON string')
        return value
    if kind == BIN_DATA:
        if not isinstance(value, str):
            raise PayloadError('"binData" must be a base64 string')
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise PayloadError('"binData" is not valid base64') from None
    return value  # jsonData: any JSON value


def _numbers(value: Any, where: str, dtype: np.dtype[Any], strict: bool = True) -> np.ndarray:
    if not isinstance(value, list):
        raise PayloadError(f'"{where}" must be a JSON array')
    try:
        # Without a dtype numpy reports what it found (strings, None, mixed), so one pass both
        # converts and type-checks; asking for float64 directly would silently parse "1.5".
        array = np.asarray(value)
    except ValueError:
        _check_depth(value, where)
        if not strict:  # a runtime that takes anything gets ragged rows as objects
            array = np.empty(len(value), dtype=object)
            array[:] = value
            return array
        raise PayloadError(
            f'"{where}" is ragged: every row must have the same number of values'
        ) from None
    if array.ndim > MAX_DIMS:
        _check_depth(value, where)
    kind = array.dtype.kind
    if kind not in _NUMERIC_KINDS:
        if not strict:
            return array
        found = "strings" if kind in "US" else "null, objects or out-of-range integers"
        raise PayloadError(f'"{where}" must hold only numbers, but it holds {found}')
    if array.dtype != dtype:
        array = array.astype(dtype)
    return array


def _check_depth(value: Any, where: str) -> None:
    """A 400 for arrays nested deeper than MAX_DIMS (numpy itself stops at 64)."""
    depth = list_depth(value, MAX_DIMS)
    if depth > MAX_DIMS:
        raise PayloadError(
            f'"{where}" nests lists more than {MAX_DIMS} levels deep; at most {MAX_DIMS} '
            "dimensions are supported"
        )


def _tensor(tensor: Any, dtype: np.dtype[Any]) -> np.ndarray:
    if not isinstance(tensor, dict):
        raise PayloadError('"data.tensor" must be an object with "shape" and "values"')
    shape = tensor.get("shape")
    values = tensor.get("values")
    shape, expected = checked_shape(shape, '"data.tensor.shape"')
    array = _numbers(values, "data.tensor.values", dtype)
    if array.ndim != 1:
        raise PayloadError('"data.tensor.values" must be a flat list of numbers')
    if array.size != expected:
        raise PayloadError(
            f'"data.tensor.shape" {shape} needs {expected} values but '
            f'"data.tensor.values" has {array.size}'
        )
    return array.reshape(shape)


# ---- responses --------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _positional_names(count: int) -> list[str]:
    return [f"t:{i}" for i in range(count)]


def output_names(output: np.ndarray, class_names: list[str] | None) -> list[str]:
    """Column names for a response: classNames when they fit, else t:0..t:n-1 ([] for 1-D)."""
    if output.ndim < 2:
        return []
    columns = output.shape[1]
    if class_names is not None and len(class_names) == columns:
        return class_names
    return _positional_names(columns)


def response_dict(
    output: Any, kind: str, class_names: list[str] | None, meta: dict[str, Any]
) -> dict[str, Any]:
    """The response document for a model output, following Seldon's rules.

    dict -> jsonData, bytes -> binData (base64), str -> strData; arrays (and lists) -> data in
    the request's form (tensor or ndarray); numbers answer a non-array request as a tensor,
    anything else as an ndarray.
    """
    if isinstance(output, dict):
        return {JSON_DATA: output, "meta": meta}
    if isinstance(output, (bytes, bytearray)):
        return {BIN_DATA: base64.b64encode(output).decode("ascii"), "meta": meta}
    if isinstance(output, str):
        return {STR_DATA: output, "meta": meta}
    array = output if isinstance(output, np.ndarray) else np.asarray(output)
    names = output_names(array, class_names)
    numeric = array.dtype.kind in _NUMERIC_KINDS
    if numeric and (kind == TENSOR or kind not in ARRAY_KINDS):
        # A tensor carries numbers only; labels such as strings fall back to ndarray below.
        tensor = {"shape": list(array.shape), "values": np.ascontiguousarray(array).ravel()}
        return {"data": {"names": names, TENSOR: tensor}, "meta": meta}
    return {"data": {"names": names, NDARRAY: array}, "meta": meta}


def _default(value: Any) -> Any:
    # orjson serializes contiguous numeric arrays itself; this handles the rest (string labels,
    # object arrays, non-contiguous views, numpy scalars, bytes).
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dumps(value: Any) -> bytes:
    """JSON-encode a response object that may contain numpy arrays."""
    return orjson.dumps(value, default=_default, option=_DUMP_OPTIONS)


def encode_response(
    output: Any, kind: str, class_names: list[str] | None, meta: dict[str, Any]
) -> bytes:
    """Encode a model output as a Seldon v1 response body."""
    return dumps(response_dict(output, kind, class_names, meta))


def error_body(status: int, message: str, reason: str) -> bytes:
    """A Seldon-style error body, with `message` repeated at the top for simple clients."""
    return orjson.dumps(
        {
            "status": {"code": status, "info": message, "reason": reason, "status": "FAILURE"},
            "message": message,
        }
    )


# ---- feedback and metadata ------------------------------------------------------------------


class Feedback:
    """A Seldon feedback document: the earlier request and response, a reward and the truth."""

    __slots__ = ("request", "request_id", "response", "reward", "truth")

    def __init__(self, payload: dict[str, Any]) -> None:
        request = payload.get("request")
        response = payload.get("response")
        for field, value in (("request", request), ("response", response)):
            if value is not None and not isinstance(value, dict):
                raise PayloadError(f'feedback "{field}" must be a Seldon message (a JSON object)')
        reward = payload.get("reward")
        numeric = isinstance(reward, (int, float)) and not isinstance(reward, bool)
        if reward is not None and not numeric:
            raise PayloadError('feedback "reward" must be a number')
        if request is not None:
            check_meta(request.get("meta"), "request.meta")
        self.request: dict[str, Any] = request or {}
        self.response: dict[str, Any] = response or {}
        self.reward: float | None = float(reward) if reward is not None else None
        self.truth: Any = payload.get("truth")
        self.request_id: str | None = None
        for message in (self.response, self.request):
            meta = message.get("meta")
            puid = meta.get("puid") if isinstance(meta, dict) else None
            if isinstance(puid, str) and puid:
                self.request_id = puid
                break


def decode_feedback(body: bytes) -> Feedback:
    """Parse `{"request", "response", "reward", "truth"}`; PayloadError says what is wrong."""
    how_to = 'send {"request": {...}, "response": {...}, "reward": 1, "truth": {...}}'
    return Feedback(load_json(body, how_to))


def metadata(
    *,
    name: str,
    version: str,
    platform: str,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    feature_names: list[str] | None,
    class_names: list[str] | None,
    custom: dict[str, Any],
) -> dict[str, Any]:
    """Model metadata in Seldon's format (the shapes leave out the batch dimension)."""

    def tensors(specs: list[dict[str, Any]], names: list[str] | None) -> list[dict[str, Any]]:
        return [
            {
                "messagetype": "tensor",
                "schema": {
                    "names": names if names and index == 0 else [],
                    "shape": [n for n in spec.get("shape", [])[1:]],
                },
            }
            for index, spec in enumerate(specs)
        ]

    return {
        "name": name,
        "versions": [version],
        "platform": platform,
        "inputs": tensors(inputs, feature_names),
        "outputs": tensors(outputs, class_names),
        "custom": {k: str(v) for k, v in custom.items() if v is not None},
    }
