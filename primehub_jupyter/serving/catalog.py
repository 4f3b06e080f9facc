"""The service catalog: an OpenAPI 3 document per deployment, built from its bundle's signature."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from .descriptor import BundleDescriptor, Signature, TensorSpec
from .protocols import v2

#: Where the model server answers with the document (ODAHU's path and the usual one).
CATALOG_PATHS = ("/api/model/info", "/openapi.json")
#: ODAHU's table endpoint; listed when the server serves it.
INVOKE_PATH = "/api/model/invoke"
OPENAPI_VERSION = "3.0.3"

# A prefix the gateway or ingress says it strips (X-Forwarded-Prefix): plain path segments only,
# so a crafted header cannot point Swagger UI's "try it out" elsewhere.
_PREFIX = re.compile(r"(/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*")

_JSON_TYPES = {"BOOL": "boolean", "BYTES": "string"}


def server_url(forwarded_prefix: str | None) -> str:
    """The base URL the document's paths hang off: the proxy's prefix when valid, else "/"."""
    if forwarded_prefix and _PREFIX.fullmatch(forwarded_prefix):
        return forwarded_prefix
    return "/"


def _scalar(datatype: str) -> dict[str, Any]:
    upper = datatype.upper()
    if upper in _JSON_TYPES:
        return {"type": _JSON_TYPES[upper]}
    if upper.startswith(("INT", "UINT")):
        return {"type": "integer"}
    if upper.startswith(("FP", "FLOAT", "DOUBLE")):
        return {"type": "number"}
    return {}  # unknown datatype: any JSON value


def _nested(spec: TensorSpec, dims: list[int]) -> dict[str, Any]:
    """A JSON schema for nested arrays of `dims` (-1 = any length) of the spec's scalars."""
    schema = _scalar(spec.datatype)
    for size in reversed(dims):
        schema = {"type": "array", "items": schema}
        if size >= 0:
            schema.update(minItems=size, maxItems=size)
    return schema


def _tensor_row(signature: Signature) -> dict[str, Any]:
    """One row of a tensor signature: the first input without its batch dimension."""
    if not signature.inputs:
        return {}
    first = signature.inputs[0]
    return _nested(first, first.shape[1:])


def _is_table(signature: Signature | None) -> bool:
    # getattr: table signatures (contentType "pd", one input per column) are newer than tensors.
    return bool(getattr(signature, "is_table", False))


def _column(spec: TensorSpec) -> dict[str, Any]:
    """One column of a table signature: its wire type, pandas dtype and known categories."""
    schema = _scalar(spec.datatype)
    dtype = getattr(spec, "dtype", None)
    categories = getattr(spec, "categories", None)
    described = f"{spec.name} ({dtype or spec.datatype})"
    if categories:
        described += ": one of " + ", ".join(map(str, categories))
    schema["description"] = described
    schema["nullable"] = True  # a missing value (NaN, None) is sent as null
    return schema


def _table_row(signature: Signature) -> dict[str, Any]:
    """One row of a table signature: one value per column, in the signature's column order."""
    columns = [_column(spec) for spec in signature.inputs]
    # OpenAPI 3.0 has no tuple schema: the row is an array of the columns' types, in order.
    return {
        "type": "array",
        "minItems": len(columns),
        "maxItems": len(columns),
        "description": "values in the order " + ", ".join(s.name for s in signature.inputs),
        "items": {"anyOf": columns} if columns else {},
    }


def row_schema(signature: Signature | None) -> dict[str, Any]:
    """The schema of one request row (an `ndarray` item) for this signature."""
    if signature is None:
        return {}
    if _is_table(signature):
        return _table_row(signature)
    return _tensor_row(signature)


def _output_row(signature: Signature | None) -> dict[str, Any]:
    if signature is None or not signature.outputs:
        return {}
    first = signature.outputs[0]
    return _nested(first, first.shape[1:])


def _seldon_schema(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "data": {
                "type": "object",
                "properties": {
                    "names": {"type": "array", "items": {"type": "string"}},
                    "ndarray": {"type": "array", "items": row},
                },
            },
            "jsonData": {},
            "meta": {"type": "object"},
        },
    }


def _json(schema: dict[str, Any], example: Any = None) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {"application/json": content}


def _operation(
    summary: str,
    tag: str,
    response: dict[str, Any],
    request: dict[str, Any] | None = None,
    operation_id: str = "",
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "tags": [tag], "operationId": operation_id}
    if request is not None:
        operation["requestBody"] = {"required": True, "content": request}
    operation["responses"] = {
        "200": {"description": "OK", "content": response},
        "400": {"description": "The request does not fit the model", "content": _ERROR},
    }
    return operation


_ERROR = _json({"type": "object"})


def _sample_rows(sample: dict[str, Any] | None) -> tuple[list[str] | None, Any]:
    """(names, ndarray) of a Seldon v1 message's `data`, when it has them."""
    data = (sample or {}).get("data")
    if not isinstance(data, dict):
        return None, None
    names = data.get("names")
    return (names if isinstance(names, list) else None), data.get("ndarray")


def _shape(value: Any) -> list[int]:
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def _flat(value: Any) -> list[Any]:
    if not isinstance(value, list):
        return [value]
    return [item for part in value for item in _flat(part)]


def _v2_tensor(name: str, datatype: str, rows: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": _shape(rows), "data": _flat(rows)}


def _seldon_paths(descriptor: BundleDescriptor, served: Collection[str]) -> dict[str, Any]:
    sample = descriptor.sample
    request = sample.request if sample else None
    response = sample.response if sample else None
    row = row_schema(descriptor.signature)
    paths: dict[str, Any] = {}
    for path in ("/api/v1.0/predictions", "/api/v0.1/predictions"):
        if path in served:
            version = path.split("/")[2]
            paths[path] = {
                "post": _operation(
                    "Predict (Seldon v1)",
                    "Seldon v1",
                    _json(_seldon_schema(_output_row(descriptor.signature)), response),
                    _json(_seldon_schema(row), request),
                    f"seldonPredict_{version.replace('.', '_')}",
                )
            }
    if "/api/v1.0/feedback" in served:
        feedback = {"request": request, "response": response, "reward": 1} if request else None
        schema = {
            "type": "object",
            "properties": {
                "request": _seldon_schema(row),
                "response": {"type": "object"},
                "truth": {"type": "object"},
                "reward": {"type": "number"},
            },
        }
        paths["/api/v1.0/feedback"] = {
            "post": _operation(
                "Send feedback on a prediction (Seldon v1)",
                "Seldon v1",
                _json({"type": "object"}),
                _json(schema, feedback),
                "seldonFeedback",
            )
        }
    return paths


def _v2_paths(descriptor: BundleDescriptor, name: str, version: str) -> dict[str, Any]:
    signature = descriptor.signature
    sample = descriptor.sample
    inputs = signature.inputs if signature else []
    outputs = signature.outputs if signature else []
    _, rows = _sample_rows(sample.request if sample else None)
    _, out_rows = _sample_rows(sample.response if sample else None)
    request_example = response_example = None
    if inputs and isinstance(rows, list) and _is_table(signature):
        # One input per column, as MLServer's PandasCodec.encode_request(df) writes it.
        request_example = {
            "parameters": {"content_type": "pd"},
            "inputs": [
                _v2_tensor(spec.name, spec.datatype, [row[i] for row in rows])
                for i, spec in enumerate(inputs)
            ],
        }
    elif inputs and rows is not None:
        request_example = {"inputs": [_v2_tensor(inputs[0].name, inputs[0].datatype, rows)]}
    if outputs and out_rows is not None:
        output = _v2_tensor(outputs[0].name, outputs[0].datatype, out_rows)
        response_example = {"model_name": name, "model_version": version, "outputs": [output]}
    tensor = {
        "type": "object",
        "required": ["name", "datatype", "shape", "data"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "data": {"type": "array"},
            "parameters": {"type": "object"},
        },
    }
    infer = {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {"type": "array", "items": tensor},
            "outputs": {"type": "array", "items": {"type": "object"}},
        },
    }
    answer = {
        "type": "object",
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {"type": "array", "items": tensor},
        },
    }
    base = f"/v2/models/{name}"
    metadata = v2.model_metadata(
        name=name,
        version=version,
        platform=descriptor.runtime,
        inputs=[spec.v2_metadata() for spec in inputs],
        outputs=[spec.v2_metadata() for spec in outputs],
    )
    if _is_table(descriptor.signature):  # as the server's metadata route marks it
        metadata["parameters"] = {"content_type": "pd"}
    return {
        f"{base}/infer": {
            "post": _operation(
                "Infer (KServe V2)",
                "KServe V2",
                _json(answer, response_example),
                _json(infer, request_example),
                "v2Infer",
            )
        },
        f"{base}/ready": {
            "get": _operation(
                "Is the model ready (KServe V2)",
                "KServe V2",
                _json({"type": "object"}, {"name": name, "ready": True}),
                operation_id="v2Ready",
            )
        },
        base: {
            "get": _operation(
                "Model metadata (KServe V2)",
                "KServe V2",
                _json({"type": "object"}, metadata),
                operation_id="v2Metadata",
            )
        },
    }


def _invoke_paths(descriptor: BundleDescriptor) -> dict[str, Any]:
    sample = descriptor.sample
    names, rows = _sample_rows(sample.request if sample else None)
    out_names, out_rows = _sample_rows(sample.response if sample else None)
    signature = descriptor.signature
    # A tensor's input name is not a column name: columns only when the rows have them.
    columns = names or None
    if columns is None and signature is not None and _is_table(signature):
        columns = [spec.name for spec in signature.inputs]
    request_example: dict[str, Any] | None = None
    if rows is not None:
        request_example = {"data": rows} if columns is None else {"columns": columns, "data": rows}
    response_example = None
    if out_rows is not None:
        response_example = {"prediction": out_rows, "columns": out_names or descriptor.class_names}
    request = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "columns": {"type": "array", "items": {"type": "string"}},
            "data": {"type": "array", "items": row_schema(descriptor.signature)},
        },
    }
    answer = {
        "type": "object",
        "properties": {
            "prediction": {"type": "array"},
            "columns": {"type": "array", "items": {"type": "string"}},
        },
    }
    return {
        INVOKE_PATH: {
            "post": _operation(
                "Invoke the model on a table (ODAHU)",
                "ODAHU",
                _json(answer, response_example),
                _json(request, request_example),
                "odahuInvoke",
            )
        }
    }


def openapi_document(
    descriptor: BundleDescriptor | None,
    *,
    name: str,
    version: str,
    served: Collection[str],
    server: str = "/",
    deployment: str | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3 document for the routes in `served` that this bundle answers."""
    if descriptor is None:
        descriptor = BundleDescriptor(name=name, framework="custom", runtime="custom", artifact="-")
    paths = _seldon_paths(descriptor, served)
    paths.update(_v2_paths(descriptor, name, version))
    if INVOKE_PATH in served:
        paths.update(_invoke_paths(descriptor))
    framework = descriptor.framework
    if descriptor.framework_version:
        framework += f" {descriptor.framework_version}"
    title = f"Deployment {deployment}" if deployment else f"Model {name}"
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": title,
            "version": version or "1",
            "description": (
                f"Model {name} ({framework}, served by the {descriptor.runtime} runtime). "
                "The examples are the sample the model answered when it was packaged."
            ),
        },
        "servers": [{"url": server}],
        "paths": paths,
    }
