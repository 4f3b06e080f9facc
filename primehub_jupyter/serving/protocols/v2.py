"""KServe V2 / Open Inference Protocol over HTTP: JSON tensors and the binary tensor extension."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson

from ..errors import PayloadError
from .shapes import MAX_DIMS, checked_shape, list_depth

#: Protocol extensions this server implements (reported by GET /v2).
EXTENSIONS = ["binary_tensor_data", "classification"]
HEADER_LENGTH = b"inference-header-content-length"

_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_BYTES = "BYTES"
_JSON_KINDS = {"b": "b", "u": "biu", "i": "biu", "f": "biuf"}
_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_HOW_TO = (
    'send {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", '
    '"data": [5.1, 3.5, 1.4, 0.2]}]}'
)


def datatype_name(array: np.ndarray) -> str:
    """The protocol datatype of an array; strings and objects are BYTES."""
    kind, size = array.dtype.kind, array.dtype.itemsize
    for name, dtype in _DTYPES.items():
        if dtype.kind == kind and dtype.itemsize == size:
            return name
    return _BYTES


def numpy_dtype(datatype: str) -> np.dtype[Any] | None:
    """The numpy dtype of a numeric protocol datatype (None for BYTES or unknown)."""
    return _DTYPES.get(datatype)


class InputTensor:
    """One decoded input: name, datatype, shape and the data as an array of that shape."""

    __slots__ = ("array", "datatype", "name", "parameters", "shape")

    def __init__(
        self,
        name: str,
        datatype: str,
        shape: list[int],
        array: np.ndarray,
        parameters: dict[str, Any],
    ) -> None:
        self.name = name
        self.datatype = datatype
        self.shape = shape
        self.array = array
        self.parameters = parameters


class InferRequest:
    """A decoded inference request."""

    __slots__ = ("header", "id", "inputs", "outputs", "parameters")

    def __init__(
        self,
        header: dict[str, Any],
        inputs: list[InputTensor],
        outputs: list[dict[str, Any]] | None,
    ) -> None:
        self.header = header
        self.id = header.get("id")
        self.parameters: dict[str, Any] = header.get("parameters") or {}
        self.inputs = inputs
        self.outputs = outputs


def decode_infer(body: bytes, header_length: int | None) -> InferRequest:
    """Parse an inference request (JSON, or a JSON header followed by binary tensor data)."""
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise PayloadError(
                f"Inference-Header-Content-Length is {header_length} but the body has "
                f"{len(body)} bytes"
            )
        header_bytes, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        header_bytes, binary = body, memoryview(b"")
    try:
        header = orjson.loads(header_bytes)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"the inference request is not valid JSON ({exc}); {_HOW_TO}") from None
    if not isinstance(header, dict):
        raise PayloadError(f"the inference request must be a JSON object; {_HOW_TO}")
    if "id" in header and not isinstance(header["id"], str):
        raise PayloadError('"id" must be a string')
    if not isinstance(header.get("parameters") or {}, dict):
        raise PayloadError('"parameters" must be a JSON object')
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise PayloadError(f'the request needs a non-empty "inputs" list; {_HOW_TO}')

    inputs = []
    offset = 0
    for index, raw in enumerate(raw_inputs):
        tensor, used = _input(raw, index, binary[offset:])
        offset += used
        inputs.append(tensor)
    if offset != len(binary):
        raise PayloadError(
            f"the body has {len(binary)} bytes of binary tensor data but the inputs' "
            f"binary_data_size add up to {offset}"
        )
    if len({t.name for t in inputs}) != len(inputs):
        raise PayloadError("input names must be unique")

    outputs = header.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
        ):
            raise PayloadError('"outputs" must be a list of {"name": ...} objects')
        for output in outputs:
            if not isinstance(output.get("parameters") or {}, dict):
                raise PayloadError(f'output {output["name"]!r}: "parameters" must be an object')
    return InferRequest(header, inputs, outputs)


def _input(raw: Any, index: int, binary: memoryview) -> tuple[InputTensor, int]:
    if not isinstance(raw, dict):
        raise PayloadError(f"inputs[{index}] must be a JSON object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise PayloadError(f'inputs[{index}] needs a "name"')
    where = f"input {name!r}"
    datatype = raw.get("datatype")
    if datatype != _BYTES and datatype not in _DTYPES:
        known = ", ".join([*_DTYPES, _BYTES])
        raise PayloadError(f"{where}: datatype {datatype!r} is not supported; use one of {known}")
    shape, count = checked_shape(raw.get("shape"), f'{where}: "inputs[{index}].shape"')
    parameters = raw.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise PayloadError(f'{where}: "parameters" must be a JSON object')

    size = parameters.get("binary_data_size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise PayloadError(f"{where}: binary_data_size must be a non-negative integer")
        if "data" in raw:
            raise PayloadError(f'{where}: has both "data" and binary_data_size')
        if size > len(binary):
            raise PayloadError(
                f"{where}: binary_data_size is {size} but only {len(binary)} bytes of binary "
                "data are left in the body"
            )
        array = _from_binary(bytes(binary[:size]), datatype, count, where)
        return InputTensor(name, datatype, shape, array.reshape(shape), parameters), size

    if "data" not in raw:
        raise PayloadError(f'{where}: needs "data" (or binary_data_size with binary data)')
    array = _from_json(raw["data"], datatype, count, where)
    return InputTensor(name, datatype, shape, array.reshape(shape), parameters), 0


def _from_json(data: Any, datatype: str, count: int, where: str) -> np.ndarray:
    if not isinstance(data, list):
        data = [data]
    if datatype == _BYTES:
        flat = _flatten(data)
        if len(flat) != count:
            raise PayloadError(f"{where}: the shape needs {count} elements, data has {len(flat)}")
        array = np.empty(count, dtype=object)
        for i, item in enumerate(flat):
            if isinstance(item, str):
                array[i] = item.encode()
            else:
                raise PayloadError(f"{where}: BYTES data must be strings in JSON")
        return array
    try:
        found = np.asarray(data)
    except ValueError:
        deep = list_depth(data, MAX_DIMS) > MAX_DIMS
        raise PayloadError(_too_deep(where) if deep else f"{where}: data is ragged") from None
    if found.ndim > MAX_DIMS:
        raise PayloadError(_too_deep(where))
    if found.dtype.kind not in _JSON_KINDS[_DTYPES[datatype].kind]:
        wanted = "true/false" if datatype == "BOOL" else "numbers"
        if _DTYPES[datatype].kind in "iu" and found.dtype.kind == "f":
            wanted = "integers"
        raise PayloadError(f"{where}: {datatype} data must hold only {wanted}")
    if found.size != count:
        raise PayloadError(f"{where}: the shape needs {count} values, data has {found.size}")
    try:
        return found.astype(_DTYPES[datatype]).ravel()
    except OverflowError:
        raise PayloadError(f"{where}: a value is out of range for {datatype}") from None


def _too_deep(where: str) -> str:
    return f"{where}: data nests lists more than {MAX_DIMS} levels deep"


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _from_binary(raw: bytes, datatype: str, count: int, where: str) -> np.ndarray:
    if datatype == _BYTES:
        items = []
        offset = 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise PayloadError(f"{where}: truncated BYTES element length")
            (length,) = struct.unpack_from("<I", raw, offset)
            offset += 4
            if offset + length > len(raw):
                raise PayloadError(f"{where}: a BYTES element runs past binary_data_size")
            items.append(raw[offset : offset + length])
            offset += length
        if len(items) != count:
            raise PayloadError(f"{where}: the shape needs {count} elements, got {len(items)}")
        array = np.empty(count, dtype=object)
        array[:] = items
        return array
    dtype = _DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise PayloadError(
            f"{where}: the shape needs {count * dtype.itemsize} bytes of {datatype}, "
            f"binary_data_size is {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype)


def model_input(request: InferRequest) -> tuple[np.ndarray, list[str] | None]:
    """The single array a runtime predicts on, and feature names when they come from inputs.

    One input is used as sent. Several inputs are columns, in request order (each shaped [N],
    [N, 1] or [N, k]); when each is one column, their names become the feature names, so a
    model fitted on a DataFrame gets its columns by name.
    """
    inputs = request.inputs
    if len(inputs) == 1:
        return inputs[0].array, None
    columns = []
    rows = None
    single = True
    for tensor in inputs:
        array = tensor.array
        if array.ndim == 1:
            array = array.reshape(-1, 1)
        if array.ndim != 2:
            raise PayloadError(
                f"input {tensor.name!r}: with several inputs each must be shaped [N] or [N, k], "
                f"got {tensor.shape}"
            )
        if rows is None:
            rows = array.shape[0]
        elif array.shape[0] != rows:
            raise PayloadError(
                f"inputs have different numbers of rows ({rows} and {array.shape[0]} in "
                f"{tensor.name!r})"
            )
        single = single and array.shape[1] == 1
        columns.append(array)
    kinds = {c.dtype.kind for c in columns}
    if "O" in kinds and len(kinds) > 1:
        columns = [c.astype(object) for c in columns]
    names = [t.name for t in inputs] if single else None
    return np.concatenate(columns, axis=1), names


# ---- responses --------------------------------------------------------------------------------


def _to_bytes(array: np.ndarray) -> bytes:
    if array.dtype.kind in "OSU":
        parts = []
        for item in array.ravel():
            raw = _element_bytes(item)
            parts.append(struct.pack("<I", len(raw)))
            parts.append(raw)
        return b"".join(parts)
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def _element_bytes(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode()
    return str(item.item() if isinstance(item, np.generic) else item).encode()


def _json_data(array: np.ndarray) -> Any:
    if array.dtype.kind in "OSU":
        return [
            item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
            for item in array.ravel().tolist()
        ]
    return np.ascontiguousarray(array).ravel()


def classify(array: np.ndarray, count: int, class_names: list[str] | None) -> np.ndarray:
    """The classification extension: the top `count` classes per row as "score:index[:label]"."""
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.dtype.kind not in "biuf":
        raise PayloadError("classification needs a numeric output")
    count = min(count, array.shape[-1])
    order = np.argsort(-array, axis=-1, kind="stable")[..., :count]
    result = np.empty(order.shape, dtype=object)
    for index in np.ndindex(order.shape):
        cls = int(order[index])
        score = float(array[(*index[:-1], cls)])
        label = f":{class_names[cls]}" if class_names and cls < len(class_names) else ""
        result[index] = f"{score:f}:{cls}{label}".encode()
    return result


def encode_infer(
    *,
    model_name: str,
    model_version: str,
    request: InferRequest,
    outputs: dict[str, np.ndarray],
    class_names: list[str] | None,
) -> tuple[bytes, int | None]:
    """Encode the response; returns (body, JSON header length when binary data follows)."""
    binary_default = bool(request.parameters.get("binary_data_output", False))
    if request.outputs is None:
        wanted: list[dict[str, Any]] = [{"name": name} for name in outputs]
    else:
        wanted = request.outputs
        for output in wanted:
            if output["name"] not in outputs:
                known = ", ".join(outputs)
                raise PayloadError(f"unknown output {output['name']!r}; this model has {known}")
    documents = []
    binaries: list[bytes] = []
    for output in wanted:
        params: dict[str, Any] = output.get("parameters") or {}
        array = outputs[output["name"]]
        top = params.get("classification")
        if top is not None:
            if isinstance(top, bool) or not isinstance(top, int) or top < 1:
                raise PayloadError("classification must be a positive integer")
            array = classify(array, top, class_names)
        document: dict[str, Any] = {
            "name": output["name"],
            "datatype": datatype_name(array),
            "shape": list(array.shape),
        }
        if params.get("binary_data", binary_default):
            raw = _to_bytes(array)
            binaries.append(raw)
            document["parameters"] = {"binary_data_size": len(raw)}
        else:
            document["data"] = _json_data(array)
        documents.append(document)
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        response["id"] = request.id
    response["outputs"] = documents
    header = orjson.dumps(response, option=_DUMP_OPTIONS)
    if not binaries:
        return header, None
    return b"".join([header, *binaries]), len(header)


def error_body(message: str) -> bytes:
    """The protocol's error document."""
    return orjson.dumps({"error": message})


def server_metadata(version: str) -> dict[str, Any]:
    """GET /v2."""
    return {"name": "primehub-model-server", "version": version, "extensions": EXTENSIONS}


def model_metadata(
    *,
    name: str,
    version: str,
    platform: str,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
) -> dict[str, Any]:
    """GET /v2/models/<name>."""
    return {
        "name": name,
        "versions": [version],
        "platform": platform,
        "inputs": inputs,
        "outputs": outputs,
    }
