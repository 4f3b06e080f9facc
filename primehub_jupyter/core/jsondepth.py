"""How deeply a parsed JSON value nests: the one check the REST API and the model server share."""

from __future__ import annotations

from typing import Any


def too_deep(value: Any, limit: int) -> bool:
    """True when objects and lists in `value` nest more than `limit` levels deep (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False
