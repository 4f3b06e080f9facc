"""Test-only runtimes for the model server, and an entry point that registers them.

`python tests/serving_models.py BUNDLE --port 0 ...` runs the real model server
(`primehub_jupyter.serving.server.main`) after registering:

- `test-hooks`: a Seldon-style model with every optional hook (strData, jsonData, binData,
  tags, custom metrics, predict_raw, send_feedback, health_status);
- `test-doubler`: returns 2 * X after sleeping `SLEEP_SECONDS`, so concurrent requests queue
  up and adaptive batching has something to stack; each row's answer is its own input doubled.
- `test-doubler-unbatched`: the same with supports_batching = False.
- `test-aggregate`: returns one row whatever it gets (cannot be batched safely).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from primehub_jupyter.serving.registry import register_runtime
from primehub_jupyter.serving.runtimes.base import Runtime

#: How long one test-doubler model call takes: long enough that 16 concurrent callers pile up.
SLEEP_SECONDS = 0.03
#: Present in the bundle directory: health_status raises.
UNHEALTHY_FLAG = "unhealthy"


class HooksRuntime(Runtime):
    """Answers every Seldon payload kind and implements every optional hook."""

    name = "test-hooks"
    payload_kinds = frozenset({"ndarray", "tensor", "strData", "jsonData", "binData"})
    numeric_input = False
    supports_batching = False

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.feedback: list[dict[str, Any]] = []
        self.bundle_dir: Path | None = None

    def load(self, bundle_dir: Path, descriptor: Any) -> None:
        """Nothing to load."""
        self.bundle_dir = bundle_dir

    def predict(self, X: Any, names: list[str] | None, meta: dict[str, Any]) -> Any:
        """str -> upper case, bytes -> reversed, JSON -> echoed with what was seen, arrays."""
        self.calls += 1
        if isinstance(X, str):
            if X == "raise":
                raise RuntimeError("HooksRuntime was told to raise")
            if X == "break metrics":
                self.break_metrics = True
            return X.upper()
        if isinstance(X, bytes):
            return X[::-1]
        if isinstance(X, (dict, list)) and not isinstance(X, np.ndarray):
            return {"seen": X, "names": names, "tags": (meta or {}).get("tags")}
        array = np.asarray(X)
        if array.dtype.kind in "US":
            return np.char.upper(array)
        return array * 2

    @property
    def class_names(self) -> list[str] | None:
        """Two named columns."""
        return ["left", "right"]

    def predict_raw(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """Answers requests with meta.tags.raw itself; everything else goes to predict()."""
        tags = (request.get("meta") or {}).get("tags") or {}
        if not tags.get("raw"):
            return None
        return {
            "jsonData": {"raw": True, "keys": sorted(request)},
            "meta": {"metrics": [{"type": "COUNTER", "key": "raw_calls", "value": 1}]},
        }

    def send_feedback(
        self, request: dict[str, Any], response: dict[str, Any], reward: float, truth: Any
    ) -> dict[str, Any] | None:
        """Remember feedback and answer a Seldon message; a truth of "boom" raises."""
        if truth == "boom":
            raise ValueError("feedback hook exploded")
        self.feedback.append({"reward": reward, "truth": truth})
        return {"jsonData": {"feedback": len(self.feedback)}, "meta": {"tags": {"fb": "yes"}}}

    def metrics(self) -> list[dict[str, Any]]:
        """One of each custom metric type, plus an invalid one that must be skipped.

        After a "break metrics" request it raises once, as a buggy model would.
        """
        if getattr(self, "break_metrics", False):
            self.break_metrics = False
            raise RuntimeError("metrics() exploded")
        return [
            {"type": "COUNTER", "key": "hooks_calls", "value": 1, "tags": {"flavour": "test"}},
            {"type": "GAUGE", "key": "hooks_last_calls", "value": self.calls},
            {"type": "TIMER", "key": "hooks_work_time", "value": 20.0},
            {"type": "COUNTER", "key": "bad name!", "value": 1},
        ]

    def tags(self) -> dict[str, Any]:
        """Merged into every response's meta.tags."""
        return {"model-tag": "t1", "calls": self.calls}

    def health_status(self) -> Any:
        """Healthy until the bundle holds a file named UNHEALTHY_FLAG."""
        if self.bundle_dir is not None and (self.bundle_dir / UNHEALTHY_FLAG).exists():
            raise RuntimeError("the model's database is unreachable")
        return {"healthy": True, "calls": self.calls}


class DoublerRuntime(Runtime):
    """2 * X, slowly; predictable per-row answers for batching tests."""

    name = "test-doubler"

    def load(self, bundle_dir: Path, descriptor: Any) -> None:
        """Nothing to load."""

    def predict(self, X: np.ndarray, names: list[str] | None, meta: dict[str, Any]) -> Any:
        """Sleep, then double every value."""
        time.sleep(SLEEP_SECONDS)
        return np.asarray(X) * 2


class UnbatchedDoublerRuntime(DoublerRuntime):
    """The doubler, for a model that must see one request at a time."""

    name = "test-doubler-unbatched"
    supports_batching = False


class AggregateRuntime(Runtime):
    """Sums all rows into one: batching it would mix callers, so the server must refuse."""

    name = "test-aggregate"

    def load(self, bundle_dir: Path, descriptor: Any) -> None:
        """Nothing to load."""

    def predict(self, X: np.ndarray, names: list[str] | None, meta: dict[str, Any]) -> Any:
        """One row: the column sums."""
        time.sleep(SLEEP_SECONDS)
        return np.asarray(X).sum(axis=0, keepdims=True)


RUNTIMES = (HooksRuntime, DoublerRuntime, UnbatchedDoublerRuntime, AggregateRuntime)


def register() -> None:
    """Make the test runtimes loadable by name in this process."""
    for cls in RUNTIMES:
        register_runtime(cls.name, cls)


def write_bundle(
    path: Path,
    runtime: str,
    *,
    features: int = 2,
    datatype: str = "FP64",
    sample: dict[str, Any] | None = None,
) -> Path:
    """A hand-written bundle for a test runtime (the artifact is an empty placeholder)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.txt").write_text("placeholder\n")
    descriptor = {
        "formatVersion": 1,
        "name": runtime,
        "framework": "custom",
        "runtime": runtime,
        "artifact": "model.txt",
        "signature": {
            "inputs": [{"name": "input-0", "datatype": datatype, "shape": [-1, features]}],
            "outputs": [{"name": "output-0", "datatype": datatype, "shape": [-1, features]}],
        },
        "sample": {"request": sample or {"data": {"ndarray": [[1.0] * features]}}},
    }
    (path / "bundle.yaml").write_text(yaml.safe_dump(descriptor, sort_keys=False))
    return path


if __name__ == "__main__":
    from primehub_jupyter.serving.server import main

    register()
    sys.exit(main(sys.argv[1:]))
