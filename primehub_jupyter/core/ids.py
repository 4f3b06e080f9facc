"""Full-match rules for ids, names and invoke paths, and id generation from a display name."""

from __future__ import annotations

import re
import secrets
import string

MAX_ID_LENGTH = 63
SUFFIX_LENGTH = 5
MAX_INVOKE_PATH = 1024
# Every pattern is used with re.fullmatch: `$` with re.match lets a trailing newline through.
DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
CLIENT_NAME = re.compile(r"[a-zA-Z0-9][-_.a-zA-Z0-9]{0,62}")
METADATA_KEY = re.compile(r"[a-zA-Z0-9]([-_./a-zA-Z0-9]{0,126}[a-zA-Z0-9])?")
# Groups, instance types and predictors: names people type, that also become labels and headers.
RESOURCE_NAME = re.compile(r"[a-zA-Z0-9]([-_.a-zA-Z0-9]{0,61}[a-zA-Z0-9])?")
PATH_SEGMENT = re.compile(r"[A-Za-z0-9_.-]+")
_ALPHABET = string.ascii_lowercase + string.digits


def id_problem(value: str) -> str | None:
    """Say what is wrong with `value` as a deployment id, or None when it is valid."""
    if not value:
        return "the id must not be empty"
    if len(value) > MAX_ID_LENGTH:
        return f"the id is {len(value)} characters long; at most {MAX_ID_LENGTH} are allowed"
    if not DNS1035.fullmatch(value):
        return (
            f"{value!r} is not a valid id: use lowercase letters, digits and '-', "
            "start with a letter and end with a letter or digit (a DNS-1035 label)"
        )
    return None


def name_problem(value: object, pattern: re.Pattern[str], what: str, rule: str) -> str | None:
    """Say what is wrong with `value` as a name of `pattern`, or None when it is valid.

    Names are never stripped: a name with whitespace is not the name a person types later
    (in `curl -u name:token`, a label or a header), so it is refused, not quietly changed.
    """
    if not isinstance(value, str):
        return f"{what} must be a string"
    if not pattern.fullmatch(value):
        return f"{value!r} is not a valid {what}: {rule}"
    return None


def invoke_path_problem(path: str) -> str | None:
    """Say why `path` cannot be sent to a deployment's endpoint, or None when it can.

    The path stays inside the deployment: relative segments of letters, digits, '-', '_' and
    '.', never '.' or '..', an empty segment, a percent-encoding, a backslash or a URL.
    """
    if not path:
        return "the invoke path must not be empty"
    if len(path) > MAX_INVOKE_PATH:
        return f"the invoke path is {len(path)} characters long; at most {MAX_INVOKE_PATH}"
    if "://" in path or re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", path):
        return "the invoke path must be a path of the deployment's endpoint, not a URL"
    if path.startswith("/"):
        return "the invoke path must be relative (e.g. api/v1.0/predictions), without a leading '/'"
    if "%" in path:
        return "the invoke path must not contain percent-encodings ('%')"
    if "\\" in path:
        return "the invoke path must not contain a backslash"
    for segment in path.split("/"):
        if segment in (".", ".."):
            return "the invoke path must not contain '.' or '..' segments"
        if not segment:
            return "the invoke path must not contain an empty segment ('//' or a trailing '/')"
        if not PATH_SEGMENT.fullmatch(segment):
            return (
                f"the invoke path segment {segment!r} is invalid: use letters, digits, "
                "'-', '_' and '.'"
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
