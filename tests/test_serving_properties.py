"""Property tests: the Seldon v1 and KServe V2 parsers answer any input with a request or a 4xx."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from primehub_jupyter.serving.errors import PayloadError
from primehub_jupyter.serving.http import decompress
from primehub_jupyter.serving.protocols import seldon, v2

# Deterministic and bounded: the same examples on every run, a few seconds in all.
BOUNDED = settings(
    max_examples=120,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SELDON_KINDS = frozenset({"ndarray", "tensor", "strData", "jsonData", "binData"})

# ---- strategies -------------------------------------------------------------------------------

# Integers of any size (JSON has no limit; orjson reads beyond 64 bits as floats), floats
# with the special values a Python caller could pass, text with odd characters.
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=24,
)
dims = (
    st.integers(min_value=0, max_value=4)
    | st.integers(min_value=-3, max_value=-1)
    | st.sampled_from([2**31, 2**32, 2**40, 2**62, 2**63, 2**64, 3037000500, 2**32 + 1])
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False, min_value=-4, max_value=4)
    | st.text(max_size=2)
    | st.none()
)
shapes = (
    st.lists(dims, max_size=5)
    | st.lists(st.just(1), min_size=30, max_size=70)
    | st.lists(st.sampled_from([0, 1, 2**32, 2**33]), min_size=2, max_size=4)
    | st.lists(st.integers(min_value=0, max_value=3), max_size=4)
    | json_values
)
numbers = st.integers(min_value=-1000, max_value=1000) | st.floats(width=32, allow_nan=False)
flat_values = st.lists(numbers | scalars, max_size=12)


def nested_lists(depth: int, leaf: Any = 1) -> list[Any]:
    value: Any = [leaf]
    for _ in range(depth - 1):
        value = [value]
    return value


deep_lists = st.builds(nested_lists, st.integers(min_value=30, max_value=120), scalars)
rectangular = st.builds(
    lambda rows, cols, value: [[value] * cols for _ in range(rows)],
    st.integers(0, 4),
    st.integers(0, 4),
    numbers | scalars,
)
array_data = flat_values | rectangular | deep_lists | json_values


def product(shape: Any) -> int:
    """The element count a shape would have, as numpy would compute it (wrapping at 64 bits)."""
    if not isinstance(shape, list):
        return 0
    count = 1
    for dim in shape:
        count = (count * dim) % 2**64 if isinstance(dim, int) else count
    return count


@st.composite
def consistent_tensor(draw: Any) -> tuple[Any, list[Any]]:
    """A shape and exactly as many values as its product (modulo 2**64) asks for, when few."""
    shape = draw(shapes)
    count = product(shape)
    value = draw(numbers | st.text(max_size=2))
    return shape, [value] * count if count <= 64 else []


metas = st.none() | json_values | st.fixed_dictionaries({"tags": json_values, "puid": scalars})

seldon_payloads = st.one_of(
    st.builds(
        lambda tensor, meta: {
            "data": {"tensor": {"shape": tensor[0], "values": tensor[1]}},
            **meta,
        },
        consistent_tensor(),
        st.just({}) | st.builds(lambda m: {"meta": m}, metas),
    ),
    st.fixed_dictionaries(
        {
            "data": st.fixed_dictionaries(
                {"tensor": st.fixed_dictionaries({"shape": shapes, "values": array_data})}
            )
        },
        optional={"meta": metas},
    ),
    st.fixed_dictionaries(
        {"data": st.fixed_dictionaries({"ndarray": array_data}, optional={"names": json_values})},
        optional={"meta": metas},
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "strData": json_values,
            "jsonData": json_values,
            "binData": json_values | st.text(alphabet="QUJDRA==+/", max_size=12),
            "meta": metas,
            "data": json_values,
        },
    ),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4),
)

datatypes = st.sampled_from(
    ["BOOL", "UINT8", "INT32", "INT64", "UINT64", "FP16", "FP32", "FP64", "BYTES"]
) | st.text(max_size=6)
parameters = (
    st.none()
    | json_values
    | st.fixed_dictionaries({"binary_data_size": st.integers(min_value=-2, max_value=64) | scalars})
)
v2_inputs = st.fixed_dictionaries(
    {"name": st.text(min_size=1, max_size=4) | scalars, "datatype": datatypes, "shape": shapes},
    optional={"data": array_data, "parameters": parameters},
)
consistent_v2_inputs = st.builds(
    lambda tensor, datatype, name: {
        "name": name,
        "datatype": datatype,
        "shape": tensor[0],
        "data": tensor[1],
    },
    consistent_tensor(),
    datatypes,
    st.sampled_from(["a", "b"]),
)
v2_documents = st.one_of(
    st.fixed_dictionaries({"inputs": st.lists(consistent_v2_inputs, min_size=1, max_size=3)}),
    st.fixed_dictionaries(
        {"inputs": st.lists(v2_inputs, max_size=3)},
        optional={"id": scalars, "parameters": parameters, "outputs": json_values},
    ),
    json_values,
)


# ---- properties -------------------------------------------------------------------------------


def decode_seldon(payload: Any, strict: bool) -> None:
    """Parse as the server does; only a result or a PayloadError (a 4xx) may come out."""
    try:
        body = orjson.dumps(payload)
    except (TypeError, orjson.JSONEncodeError):
        body = json.dumps(payload).encode()  # integers orjson cannot write, NaN
    try:
        document = seldon.load_json(body)
        request = seldon.decode_payload(
            document, kinds=SELDON_KINDS, dtype=np.dtype(np.float64), strict=strict
        )
    except PayloadError as exc:
        assert 400 <= exc.status < 500
        assert str(exc)
        return
    assert request.kind in SELDON_KINDS
    if request.kind in seldon.ARRAY_KINDS:
        assert isinstance(request.X, np.ndarray)
        assert request.X.ndim <= 32
    # The answer can be written: meta (echoed as tags) never breaks the encoder.
    seldon.encode_response([1.0], request.kind, None, {"tags": request.meta.get("tags")})


@BOUNDED
@given(payload=seldon_payloads, strict=st.booleans())
def test_seldon_payloads_parse_or_are_4xx(payload, strict):
    decode_seldon(payload, strict)


@BOUNDED
@given(payload=json_values, strict=st.booleans())
def test_any_json_is_a_seldon_request_or_4xx(payload, strict):
    decode_seldon(payload, strict)


@BOUNDED
@given(body=st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_any_bytes_are_a_seldon_request_or_4xx(body):
    try:
        seldon.decode_request(body, kinds=SELDON_KINDS)
    except PayloadError as exc:
        assert exc.status == 400


@BOUNDED
@given(payload=json_values | st.fixed_dictionaries({"request": json_values, "reward": scalars}))
def test_seldon_feedback_parses_or_is_4xx(payload):
    body = json.dumps(payload).encode()
    try:
        feedback = seldon.decode_feedback(body)
    except PayloadError as exc:
        assert exc.status == 400
        return
    seldon.dumps({"meta": {"tags": feedback.request.get("meta", {}).get("tags")}})


def decode_v2(body: bytes, header_length: int | None) -> None:
    try:
        request = v2.decode_infer(body, header_length)
        X, _names = v2.model_input(request)
    except PayloadError as exc:
        assert 400 <= exc.status < 500
        assert str(exc)
        return
    assert isinstance(X, np.ndarray)
    for tensor in request.inputs:
        assert list(tensor.array.shape) == tensor.shape
        assert len(tensor.shape) <= 32


@BOUNDED
@given(document=v2_documents)
def test_v2_requests_parse_or_are_4xx(document):
    decode_v2(json.dumps(document).encode(), None)


hostile_shapes = (
    st.lists(st.just(1), min_size=30, max_size=70)
    | st.lists(
        st.sampled_from([0, 1, 3, 2**32, 2**33, 2**62, 2**63, 2**64]), min_size=1, max_size=5
    )
    | st.lists(st.integers(min_value=-2, max_value=3), max_size=6)
)


@st.composite
def hostile_tensor(draw: Any) -> dict[str, Any]:
    """One well-formed input whose shape is the attack: many dims, huge or zero products."""
    shape = draw(hostile_shapes)
    count = product(shape)
    datatype = draw(st.sampled_from(["FP64", "FP32", "INT64", "UINT8", "BYTES"]))
    value = "x" if datatype == "BYTES" else 1
    data = [value] * count if count <= 64 else []
    return {"name": "x", "datatype": datatype, "shape": shape, "data": data}


@BOUNDED
@given(tensor=hostile_tensor())
def test_v2_hostile_shapes_parse_or_are_4xx(tensor):
    decode_v2(json.dumps({"inputs": [tensor]}).encode(), None)
    seldon_tensor = {"shape": tensor["shape"], "values": tensor["data"]}
    decode_seldon({"data": {"tensor": seldon_tensor}}, strict=True)


@BOUNDED
@given(document=v2_documents, binary=st.binary(max_size=80), cut=st.integers(-2, 400))
def test_v2_binary_requests_parse_or_are_4xx(document, binary, cut):
    header = json.dumps(document).encode()
    decode_v2(header + binary, len(header))
    decode_v2(header + binary, cut)  # a wrong Inference-Header-Content-Length


@BOUNDED
@given(
    count=st.integers(0, 6),
    lengths=st.lists(st.integers(0, 2**32 - 1), max_size=4),
    tail=st.binary(max_size=12),
)
def test_v2_binary_bytes_elements_parse_or_are_4xx(count, lengths, tail):
    raw = b"".join(struct.pack("<I", n) for n in lengths) + tail
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "s",
                    "shape": [count],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    decode_v2(header + raw, len(header))


@BOUNDED
@given(body=st.binary(max_size=96), coding=st.sampled_from([b"gzip", b"deflate"]))
def test_any_compressed_body_decodes_or_is_4xx(body, coding):
    try:
        data = decompress(body, coding, 1024)
    except PayloadError as exc:
        assert exc.status in (400, 413)
        return
    assert len(data) <= 1024


@pytest.mark.parametrize("depth", [31, 32, 33, 64, 65, 1000])
def test_nesting_at_the_dimension_limit(depth):
    payload = {"data": {"ndarray": nested_lists(depth, 1.5)}}
    if depth <= 32:
        assert seldon.decode_payload(payload).X.ndim == depth
    else:
        with pytest.raises(PayloadError, match="more than 32 levels deep"):
            seldon.decode_payload(payload)
        with pytest.raises(PayloadError, match="more than 32 levels deep"):
            seldon.decode_payload(payload, strict=False)
