"""Tensor shapes and nesting from JSON, checked with Python ints before numpy sees them."""

from __future__ import annotations

from typing import Any

from ..errors import PayloadError

#: Most dimensions a tensor may have (numpy's own limit is 64; no model takes more than a few).
MAX_DIMS = 32
#: Most elements a shape may declare, counting only its non-zero dimensions: numpy refuses
#: shapes whose size overflows its index type even when a zero dimension makes them empty.
MAX_ELEMENTS = 2**40
#: Deepest JSON the server echoes back (meta tags): orjson refuses to write more than 255.
MAX_ECHO_DEPTH = 64


def _kind(value: Any) -> str:
    """How a JSON value is named in a message."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    if isinstance(value, float):
        return repr(value)
    return _KIND_NAMES.get(type(value), type(value).__name__)


_KIND_NAMES: dict[type, str] = {str: "a string", list: "a list", dict: "an object"}


def checked_shape(shape: Any, field: str) -> tuple[list[int], int]:
    """A JSON `shape` and its element count; PayloadError naming `field` if it is not one.

    A shape is a list of at most MAX_DIMS non-negative integers (booleans are not integers)
    whose product stays within MAX_ELEMENTS; the product is computed with Python ints, so an
    overflow of int64 is impossible.
    """
    if not isinstance(shape, list):
        raise PayloadError(f"{field} must be a list of non-negative integers, got {_kind(shape)}")
    if len(shape) > MAX_DIMS:
        raise PayloadError(f"{field} has {len(shape)} dimensions; at most {MAX_DIMS} are supported")
    count = 1
    declared = 1
    for index, dim in enumerate(shape):
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise PayloadError(f"{field}[{index}] must be a non-negative integer, got {_kind(dim)}")
        if dim < 0:
            raise PayloadError(f"{field}[{index}] is {dim}; dimensions cannot be negative")
        count *= dim
        if dim:
            declared *= dim
            if declared > MAX_ELEMENTS:
                raise PayloadError(
                    f"{field} declares more than {MAX_ELEMENTS} elements; no request can "
                    "carry that many"
                )
    return shape, count


def list_depth(value: Any, limit: int) -> int:
    """How deeply lists nest along the first element (stops counting past `limit`)."""
    depth = 0
    while isinstance(value, list) and depth <= limit:
        depth += 1
        value = value[0] if value else None
    return depth
