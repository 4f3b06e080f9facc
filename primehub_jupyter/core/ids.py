"""Deployment id rules (DNS-1035 labels) and id generation from a display name."""

from __future__ import annotations

import re
import secrets
import string

MAX_ID_LENGTH = 63
SUFFIX_LENGTH = 5
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_ALPHABET = string.ascii_lowercase + string.digits


def id_problem(value: str) -> str | None:
    """Say what is wrong with `value` as a deployment id, or None when it is valid."""
    if not value:
        return "the id must not be empty"
    if len(value) > MAX_ID_LENGTH:
        return f"the id is {len(value)} characters long; at most {MAX_ID_LENGTH} are allowed"
    if not _DNS1035.match(value):
        return (
            f"'{value}' is not a valid id: use lowercase letters, digits and '-', "
            "start with a letter and end with a letter or digit (a DNS-1035 label)"
        )
    return None


def normalize_name(name: str) -> str:
    """Turn a display name into the longest valid id prefix it allows."""
    lowered = re.sub(r"[^a-z0-9]+", "-", name.lower())
    lowered = re.sub(r"^[^a-z]+", "", lowered).strip("-")
    return lowered or "deployment"


def generate_id(name: str) -> str:
    """`normalized name` + '-' + 5 random characters, always a valid id."""
    suffix = "".join(secrets.choice(_ALPHABET) for _ in range(SUFFIX_LENGTH))
    prefix = normalize_name(name)[: MAX_ID_LENGTH - SUFFIX_LENGTH - 1].rstrip("-")
    return f"{prefix}-{suffix}"
