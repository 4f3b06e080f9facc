"""Adaptive batching: stack the rows of concurrent requests and call the model once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson

Predict = Callable[[np.ndarray, "list[str] | None", "dict[str, Any]"], Any]
#: A request alone on an idle model is predicted on the event loop itself when model calls have
#: recently taken less than this (seconds): handing it to the worker thread and back costs
#: about 0.1 ms of wake-ups, more than such a call, and blocks the loop for no longer.
INLINE_SECONDS = 0.0005
_SMOOTHING = 0.2


class BatchShapeError(RuntimeError):
    """The model did not return one output row per input row, so rows cannot be handed back."""


class _Pending:
    __slots__ = ("X", "arrived", "future", "group", "meta", "names")

    def __init__(
        self,
        X: Any,  # an array, or a DataFrame (a table request)
        names: list[str] | None,
        meta: dict[str, Any],
        future: asyncio.Future[np.ndarray],
        group: Any,
    ) -> None:
        self.X = X
        self.names = names
        self.meta = meta
        self.future = future
        self.group = group
        self.arrived = time.monotonic()


class Batcher:
    """Collects requests while the model is busy and predicts them together.

    Requests arriving while a batch runs wait; when the model is free, everything waiting (up
    to `max_batch_size` rows) goes in one call. An idle model starts at once unless
    `max_wait` (seconds) is set, in which case the first request waits up to that long for
    company. Requests are only stacked with others of the same trailing shape, dtype, feature
    names and meta (for DataFrames: the same columns and dtypes, categories included), so the
    model sees exactly what each caller sent. The model runs in one
    worker thread, so the event loop keeps reading requests (and answering health checks)
    while it predicts; only a lone request to a fast model (calls under INLINE_SECONDS) is
    predicted on the loop, where it is quicker. A request with more rows than `max_batch_size`
    runs alone.
    """

    def __init__(
        self,
        predict: Predict,
        *,
        max_batch_size: int,
        max_wait: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self.on_batch = on_batch
        self._pending: list[_Pending] = []
        self._rows = 0
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None
        self._scheduled = False
        self._executor: ThreadPoolExecutor | None = None
        #: Smoothed seconds per model call; None until the first call (which uses the thread).
        self.call_seconds: float | None = None

    async def submit(self, X: Any, names: list[str] | None, meta: dict[str, Any]) -> np.ndarray:
        """Predict the rows of `X` (an array or a DataFrame; in a batch with others) and return
        this request's output."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        group: tuple[Any, ...]
        if isinstance(X, np.ndarray):
            group = (X.shape[1:], X.dtype.str, tuple(names) if names else None)
        else:  # a DataFrame: pandas dtypes compare (and hash) with their categories
            group = (tuple(X.columns), tuple(X.dtypes))
        if meta:
            group = (*group, orjson.dumps(meta, option=orjson.OPT_SORT_KEYS))
        self._pending.append(_Pending(X, names, meta, future, group))
        self._rows += len(X)
        if not self._busy:
            if self._rows >= self.max_batch_size:
                self._dispatch(loop)
            elif not self._scheduled:
                # call_soon runs after the callbacks already due in this loop iteration, so
                # requests read from other connections in the same iteration join the batch.
                self._scheduled = True
                if self.max_wait > 0:
                    self._timer = loop.call_later(self.max_wait, self._dispatch, loop)
                else:
                    loop.call_soon(self._dispatch, loop)
        return await future

    def close(self) -> None:
        """Stop the worker thread after the batch in flight."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._busy or not self._pending:
            return
        taken: list[_Pending] = []
        rows = 0
        for item in self._pending:
            if taken and rows + len(item.X) > self.max_batch_size:
                break
            taken.append(item)
            rows += len(item.X)
        del self._pending[: len(taken)]
        self._rows -= rows
        if len(taken) == 1 and self.call_seconds is not None and self.call_seconds < INLINE_SECONDS:
            self._deliver(loop, self._run(taken))
            return
        self._busy = True
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        task = loop.run_in_executor(self._executor, self._run, taken)
        task.add_done_callback(lambda done: self._finished(loop, taken, done))

    def _run(self, items: list[_Pending]) -> list[tuple[list[_Pending], Any, bool, int, float]]:
        """In the worker thread (or inline): one model call per compatible group."""
        groups: dict[Any, list[_Pending]] = {}
        for item in items:
            groups.setdefault(item.group, []).append(item)
        results: list[tuple[list[_Pending], Any, bool, int, float]] = []
        for members in groups.values():
            first = members[0]
            X = first.X if len(members) == 1 else _stack([m.X for m in members])
            started = time.perf_counter()
            output, ok = self._call(X, first, len(members))
            seconds = time.perf_counter() - started
            if not ok and len(members) > 1 and not isinstance(output, BatchShapeError):
                # One caller's bad rows (an unknown category, a NaN) must not fail the others:
                # each request of a failed batch gets its own call and its own answer.
                for member in members:
                    single, single_ok = self._call(member.X, member, 1)
                    results.append(([member], single, single_ok, len(member.X), 0.0))
                continue
            results.append((members, output, ok, len(X), seconds))
        return results

    def _call(self, X: Any, first: _Pending, requests: int) -> tuple[Any, bool]:
        try:
            output = np.asarray(self.predict(X, first.names, first.meta))
            if requests > 1 and (output.ndim == 0 or output.shape[0] != len(X)):
                raise BatchShapeError(
                    f"the model returned {output.shape[0] if output.ndim else 'a scalar'} "
                    f"rows for a batch of {len(X)} input rows, so the rows cannot be handed "
                    "back to each request; turn batching off for this model "
                    "(--max-batch-size 1) or make predict return one row per input row"
                )
            return output, True
        except BaseException as exc:
            return exc, False

    def _finished(self, loop: asyncio.AbstractEventLoop, taken: list[_Pending], done: Any) -> None:
        self._busy = False
        try:
            results = done.result()
        except BaseException as exc:  # the executor itself failed
            results = [(taken, exc, False, 0, 0.0)]
        self._deliver(loop, results)

    def _deliver(self, loop: asyncio.AbstractEventLoop, results: list[Any]) -> None:
        for members, value, ok, rows, seconds in results:
            if self.on_batch is not None and rows:
                self.on_batch(rows)  # on the loop thread: metrics are not shared with the worker
            if seconds:
                last = self.call_seconds
                self.call_seconds = (
                    seconds if last is None else last + _SMOOTHING * (seconds - last)
                )
            if not ok:
                for member in members:
                    if not member.future.done():
                        member.future.set_exception(value)
                continue
            start = 0
            for member in members:
                if member.future.done():  # the caller went away
                    start += len(member.X)
                    continue
                if len(members) == 1:
                    member.future.set_result(value)
                else:
                    end = start + len(member.X)
                    member.future.set_result(value[start:end])
                    start = end
        if self._pending:
            oldest = self._pending[0].arrived
            delay = self.max_wait - (time.monotonic() - oldest)
            if self._rows >= self.max_batch_size or delay <= 0:
                self._dispatch(loop)
            elif not self._scheduled:
                self._scheduled = True
                self._timer = loop.call_later(delay, self._dispatch, loop)


def _stack(parts: list[Any]) -> Any:
    """The rows of several requests as one input: arrays stacked, DataFrames concatenated."""
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    import pandas as pd

    return pd.concat(parts, ignore_index=True)
