"""Seldon v1 prediction payloads: decode requests to arrays, encode outputs and errors."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import orjson

from ..errors import PayloadError

NDARRAY = "ndarray"
TENSOR = "tensor"

# Payload kinds Seldon defines outside data.ndarray/tensor; answered with a clear 400 until a
# runtime declares support for them.
_OTHER_KINDS = ("strData", "jsonData", "binData")

_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_NUMERIC_KINDS = frozenset("biuf")

_HOW_TO = (
    'send {"data": {"ndarray": [[...], ...]}} or '
    '{"data": {"tensor": {"shape": [...], "values": [...]}}}'
)


class SeldonRequest:
    """A decoded request: the input array, optional feature names, meta and the payload form."""

    __slots__ = ("X", "kind", "meta", "names")

    def __init__(
        self, X: np.ndarray, names: list[str] | None, meta: dict[str, Any], kind: str
    ) -> None:
        self.X = X
        self.names = names
        self.meta = meta
        self.kind = kind


def decode_request(body: bytes, *, runtime: str = "sklearn") -> SeldonRequest:
    """Parse a Seldon v1 JSON body into a float64 array; PayloadError says what is wrong."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"the request body is not valid JSON ({exc}); {_HOW_TO}") from None
    if not isinstance(payload, dict):
        raise PayloadError(f"the request body must be a JSON object; {_HOW_TO}")

    meta = payload.get("meta")
    if meta is None:
        meta = {}
    elif not isinstance(meta, dict):
        raise PayloadError('"meta" must be a JSON object')

    data = payload.get("data")
    if data is None:
        for kind in _OTHER_KINDS:
            if kind in payload:
                raise PayloadError(
                    f"{kind} payloads are not supported by the {runtime} runtime; {_HOW_TO}"
                )
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
        return SeldonRequest(_numbers(data[NDARRAY], "data.ndarray"), names, meta, NDARRAY)
    if TENSOR in data:
        return SeldonRequest(_tensor(data[TENSOR]), names, meta, TENSOR)
    raise PayloadError(f'"data" must hold "ndarray" or "tensor"; {_HOW_TO}')


def _numbers(value: Any, where: str) -> np.ndarray:
    if not isinstance(value, list):
        raise PayloadError(f'"{where}" must be a JSON array of numbers')
    try:
        # Without a dtype numpy reports what it found (strings, None, mixed), so one pass both
        # converts and type-checks; asking for float64 directly would silently parse "1.5".
        array = np.asarray(value)
    except ValueError:
        raise PayloadError(
            f'"{where}" is ragged: every row must have the same number of values'
        ) from None
    kind = array.dtype.kind
    if kind not in _NUMERIC_KINDS:
        found = "strings" if kind in "US" else "null, objects or out-of-range integers"
        raise PayloadError(f'"{where}" must hold only numbers, but it holds {found}')
    if array.dtype != np.float64:
        array = array.astype(np.float64)
    return array


def _tensor(tensor: Any) -> np.ndarray:
    if not isinstance(tensor, dict):
        raise PayloadError('"data.tensor" must be an object with "shape" and "values"')
    shape = tensor.get("shape")
    values = tensor.get("values")
    if not isinstance(shape, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise PayloadError('"data.tensor.shape" must be a list of non-negative integers')
    array = _numbers(values, "data.tensor.values")
    if array.ndim != 1:
        raise PayloadError('"data.tensor.values" must be a flat list of numbers')
    expected = int(np.prod(shape)) if shape else 1
    if array.size != expected:
        raise PayloadError(
            f'"data.tensor.shape" {shape} needs {expected} values but '
            f'"data.tensor.values" has {array.size}'
        )
    return array.reshape(shape)


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
    output: np.ndarray, kind: str, class_names: list[str] | None, meta: dict[str, Any]
) -> dict[str, Any]:
    """The response object, in the same form (ndarray or tensor) as the request."""
    names = output_names(output, class_names)
    if kind == TENSOR and output.dtype.kind in _NUMERIC_KINDS:
        # A tensor carries numbers only; labels such as strings fall back to ndarray below.
        tensor = {"shape": list(output.shape), "values": np.ascontiguousarray(output).ravel()}
        return {"data": {"names": names, TENSOR: tensor}, "meta": meta}
    return {"data": {"names": names, NDARRAY: output}, "meta": meta}


def _default(value: Any) -> Any:
    # orjson serializes contiguous numeric arrays itself; this handles the rest (string labels,
    # object arrays, non-contiguous views, numpy scalars).
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dumps(value: Any) -> bytes:
    """JSON-encode a response object that may contain numpy arrays."""
    return orjson.dumps(value, default=_default, option=_DUMP_OPTIONS)


def encode_response(
    output: np.ndarray, kind: str, class_names: list[str] | None, meta: dict[str, Any]
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
