"""Deployment metadata keys that tune the model server, and the flags they become."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

#: Rows stacked into one model call (adaptive batching); 1 turns batching off.
MAX_BATCH_SIZE = "primehub.io/max-batch-size"
#: How long the first request of a batch may wait for company, in milliseconds.
MAX_BATCH_WAIT_MS = "primehub.io/max-batch-wait-ms"
#: "true" logs every request and response (and feedback) of the deployment.
REQUEST_LOG = "primehub.io/request-log"

METADATA_KEYS = {
    MAX_BATCH_SIZE: "adaptive batching: most rows per model call (1-4096; 1 = off)",
    MAX_BATCH_WAIT_MS: "adaptive batching: most milliseconds a request waits for a batch (0-1000)",
    REQUEST_LOG: "true/false: log requests, responses and feedback (JSON lines)",
}

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0", ""})


def model_server_args(
    metadata: Mapping[str, str], *, request_log_dir: str | Path | None = None
) -> list[str]:
    """Model-server flags for a predictor's metadata; ValueError names a key with a bad value.

    `request_log_dir` is where the engine keeps request logs; it is passed only when the
    metadata turns the request log on. Keys this server does not know are left alone.
    """
    args: list[str] = []
    size = metadata.get(MAX_BATCH_SIZE)
    if size is not None:
        args += ["--max-batch-size", str(_integer(MAX_BATCH_SIZE, size, 1, 4096))]
    wait = metadata.get(MAX_BATCH_WAIT_MS)
    if wait is not None:
        args += ["--max-batch-wait-ms", _milliseconds(wait)]
    if request_log_enabled(metadata):
        if request_log_dir is None:
            raise ValueError(f"{REQUEST_LOG} is on but no request log directory is configured")
        args += ["--request-log-dir", str(request_log_dir)]
    return args


def request_log_enabled(metadata: Mapping[str, str]) -> bool:
    """Whether the metadata turns the request log on (ValueError for a value that is no bool)."""
    value = metadata.get(REQUEST_LOG)
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{REQUEST_LOG} must be true or false, not {value!r}")


def _integer(key: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        message = f"{key} must be a whole number from {low} to {high}, not {value!r}"
        raise ValueError(message) from None
    if not low <= number <= high:
        raise ValueError(f"{key} must be from {low} to {high}, not {number}")
    return number


def _milliseconds(value: str) -> str:
    try:
        number = float(value.strip())
    except ValueError:
        number = float("nan")
    if not 0 <= number <= 1000:  # also false for NaN
        raise ValueError(
            f"{MAX_BATCH_WAIT_MS} must be a number of milliseconds from 0 to 1000, not {value!r}"
        )
    return f"{number:g}"
