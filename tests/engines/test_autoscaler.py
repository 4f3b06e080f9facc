"""The autoscaling policy alone: bounds, quick scale-up, stable scale-down, zero and wake."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from primehub_jupyter.core.models import Predictor
from primehub_jupyter.engines.local.autoscaler import (
    Autoscaler,
    Bounds,
    PredictorScaler,
    Sample,
    ScaleSettings,
)
from primehub_jupyter.engines.local.scaling import Load, parse_held, parse_load

FAST = ScaleSettings(concurrency_window=2.0, stable_window=30.0)


def run(
    scaler: PredictorScaler, start: float, loads: list[int], step: float = 1.0
) -> tuple[float, list[int]]:
    """Feed one sample per `step` seconds; the time after the last one and every decision."""
    now = start
    decisions = []
    for load in loads:
        now += step
        decisions.append(scaler.observe(now, Sample(in_flight=load)))
    return now, decisions


def test_bounds_follow_the_spec() -> None:
    fixed = Predictor(instanceType="cpu-1", modelURI="m", replicas=3)
    assert Bounds.of(fixed) == Bounds(lowest=3, highest=3, target=8, idle_seconds=None)
    zero = Predictor(
        instanceType="cpu-1",
        modelURI="m",
        minReplicas=0,
        maxReplicas=4,
        targetConcurrency=2,
        scaleToZeroAfterSeconds=60,
    )
    assert Bounds.of(zero) == Bounds(lowest=0, highest=4, target=2, idle_seconds=60.0)
    one = Predictor(instanceType="cpu-1", modelURI="m", minReplicas=1, maxReplicas=2)
    assert Bounds.of(one).idle_seconds is None


def test_a_load_step_scales_up_within_a_few_samples() -> None:
    scaler = PredictorScaler.start(Bounds(1, 5, target=4), FAST, now=0.0)
    now, decisions = run(scaler, 0.0, [0, 0, 16, 16, 16])
    # The first sample of 16 already averages above one replica's target over the window.
    assert decisions[:2] == [1, 1]
    assert decisions[2] > 1
    assert decisions[-1] == 4  # ceil(16 / 4)
    now, decisions = run(scaler, now, [100] * 3)
    assert decisions[-1] == 5  # never above maxReplicas


def test_scale_down_waits_for_the_stable_window() -> None:
    scaler = PredictorScaler.start(Bounds(1, 5, target=4), FAST, now=0.0)
    now, _ = run(scaler, 0.0, [16] * 5)
    assert scaler.replicas == 4
    _, decisions = run(scaler, now, [0] * 40)
    first_lower = next(i for i, d in enumerate(decisions) if d < 4)
    # Every sample within the stable window after the load still kept 4 replicas.
    assert first_lower + 1 > FAST.stable_window - FAST.concurrency_window
    assert decisions[-1] == 1  # back to the floor, never below minReplicas


def test_a_lull_shorter_than_the_window_keeps_the_replicas() -> None:
    scaler = PredictorScaler.start(Bounds(1, 5, target=4), FAST, now=0.0)
    now, _ = run(scaler, 0.0, [16] * 3)
    _, decisions = run(scaler, now, ([0] * 20 + [16] * 3) * 3)
    assert min(decisions) == 4


def test_scale_to_zero_after_the_idle_period_and_wake_on_a_held_request() -> None:
    scaler = PredictorScaler.start(Bounds(0, 3, target=2, idle_seconds=10.0), FAST, now=0.0)
    assert scaler.replicas == 1  # deployed with one replica, so the model is seen to load
    now, decisions = run(scaler, 0.0, [0] * 12)
    assert decisions[:9] == [1] * 9
    assert decisions[-1] == 0 and scaler.at_zero
    now += 1
    assert not scaler.woke
    assert scaler.observe(now, Sample(held=1)) == 1  # at once, not after averaging
    assert not scaler.at_zero and scaler.woke
    # Served, then idle again: back to zero after another idle period, not before.
    now, decisions = run(scaler, now, [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    assert decisions[:10] == [1] * 10
    assert decisions[-1] == 0


def test_wake_brings_a_replica_without_a_sample() -> None:
    scaler = PredictorScaler.start(Bounds(0, 3, target=2, idle_seconds=10.0), FAST, now=0.0)
    run(scaler, 0.0, [0] * 12)
    assert scaler.at_zero
    assert scaler.wake(20.0) == 1
    assert scaler.observe(21.0, Sample()) == 1


def test_requests_too_short_to_be_seen_in_flight_still_count_as_activity() -> None:
    scaler = PredictorScaler.start(Bounds(0, 3, target=2, idle_seconds=10.0), FAST, now=0.0)
    for second in range(1, 40):
        # In flight is never caught, but the counter moves: never idle.
        assert scaler.observe(float(second), Sample(requests=second)) == 1
    for second in range(40, 52):
        decision = scaler.observe(float(second), Sample(requests=39))
    assert decision == 0


def test_without_scale_to_zero_the_floor_is_one() -> None:
    scaler = PredictorScaler.start(Bounds(0, 3, target=2, idle_seconds=None), FAST, now=0.0)
    _, decisions = run(scaler, 0.0, [0] * 500)
    assert set(decisions) == {1}


def test_new_bounds_apply_at_once() -> None:
    scaler = PredictorScaler.start(Bounds(1, 5, target=1), FAST, now=0.0)
    now, _ = run(scaler, 0.0, [5] * 3)
    assert scaler.replicas == 5
    scaler.rebound(Bounds(1, 2, target=1))
    assert scaler.replicas == 2
    assert scaler.observe(now + 1, Sample(in_flight=5)) == 2
    scaler.rebound(Bounds(3, 4, target=1))
    assert scaler.replicas == 3
    # The stable window still remembers wanting 5: the new maximum, until the window passes.
    assert scaler.observe(now + 2, Sample()) == 4
    _, decisions = run(scaler, now + 2, [0] * 40)
    assert decisions[-1] == 3


def test_autoscaler_keeps_one_scaler_per_predictor() -> None:
    autoscaler = Autoscaler(FAST)
    a = autoscaler.scaler(("d", "a"), Bounds(1, 2), 0.0)
    assert autoscaler.scaler(("d", "a"), Bounds(1, 2), 1.0) is a
    b = autoscaler.scaler(("d", "b"), Bounds(0, 2, idle_seconds=10.0), 0.0)
    assert autoscaler.scaler(("d", "b"), Bounds(2, 3), 1.0) is b and b.replicas == 2
    autoscaler.forget({("d", "b")})
    assert set(autoscaler.scalers) == {("d", "b")}


# ---- properties over arbitrary load ---------------------------------------------------------

bounds_strategy = st.builds(
    lambda low, extra, target, idle: Bounds(
        low, max(low, 1) + extra, target, idle if low == 0 else None
    ),
    st.integers(0, 4),
    st.integers(0, 6),
    st.integers(1, 16),
    st.one_of(st.none(), st.floats(10.0, 120.0)),
)
windows = st.builds(
    ScaleSettings,
    concurrency_window=st.floats(0.5, 10.0),
    stable_window=st.floats(1.0, 90.0),
)
# (seconds since the previous sample, in flight, held, requests counter moved)
samples = st.lists(
    st.tuples(st.floats(0.05, 20.0), st.integers(0, 200), st.integers(0, 5), st.booleans()),
    min_size=1,
    max_size=120,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bounds=bounds_strategy, policy=windows, trace=samples)
def test_properties_of_every_decision(
    bounds: Bounds, policy: ScaleSettings, trace: list[tuple[float, int, int, bool]]
) -> None:
    scaler = PredictorScaler.start(bounds, policy, now=0.0)
    now = 0.0
    counter = 0
    # time, concurrency, active, lower bound of the count this sample wants
    history: list[tuple[float, int, bool, int]] = []
    for gap, in_flight, held, moved in trace:
        now += gap
        counter += moved
        decision = scaler.observe(now, Sample(in_flight=in_flight, held=held, requests=counter))
        load = in_flight + held
        active = load > 0 or (moved and bool(history))
        in_window = [h for h in history if h[0] >= now - policy.concurrency_window]
        # The window's average is at least this sample's share of it.
        least = math.ceil(load / (len(in_window) + 1) / bounds.target)
        history.append((now, load, active, min(least, bounds.highest)))
        assert decision <= bounds.highest
        if decision == 0:
            # Zero only for a predictor allowed to scale to zero, after an idle period with
            # no request at all (and never while a request is held).
            assert bounds.lowest == 0 and bounds.idle_seconds is not None
            assert now >= bounds.idle_seconds
            assert not any(a for t, _, a, _ in history if t > now - bounds.idle_seconds)
            assert held == 0
            continue
        assert decision >= max(bounds.lowest, 1)
        # Up at once: a window that saw only this load gets what the load needs.
        if all(c == load for _, c, _, _ in in_window):
            assert decision >= min(math.ceil(load / bounds.target), bounds.highest)
        # Down only after the stable window: no sample of the window wanted more.
        for t, _, _, wanted in history:
            if t >= now - policy.stable_window:
                assert decision >= wanted


@settings(max_examples=200, deadline=None)
@given(
    bounds=bounds_strategy,
    policy=windows,
    load=st.integers(1, 300),
    steps=st.integers(1, 5),
)
def test_steady_load_gets_its_replicas_within_the_concurrency_window(
    bounds: Bounds, policy: ScaleSettings, load: int, steps: int
) -> None:
    scaler = PredictorScaler.start(bounds, policy, now=0.0)
    now, _ = run(scaler, 0.0, [0] * steps)
    # Once the window holds only this load, the count is what the load needs (within bounds).
    seconds = math.ceil(policy.concurrency_window) + 1
    _, decisions = run(scaler, now, [load] * seconds)
    expected = min(max(math.ceil(load / bounds.target), bounds.lowest, 1), bounds.highest)
    assert decisions[-1] >= expected


@settings(max_examples=200, deadline=None)
@given(bounds=bounds_strategy, policy=windows, load=st.integers(0, 300))
def test_no_load_ends_at_the_floor(bounds: Bounds, policy: ScaleSettings, load: int) -> None:
    scaler = PredictorScaler.start(bounds, policy, now=0.0)
    now, _ = run(scaler, 0.0, [load] * 5)
    quiet = (
        math.ceil(max(policy.stable_window + policy.concurrency_window, bounds.idle_seconds or 0))
        + 3
    )
    _, decisions = run(scaler, now, [0] * quiet)
    floor = 0 if bounds.idle_seconds is not None else max(bounds.lowest, 1)
    assert decisions[-1] == floor
    # The count never rose while there was no load.
    assert all(b <= a for a, b in itertools.pairwise(decisions))


@pytest.mark.parametrize(("held", "expected"), [(1, 1), (3, 1), (50, 4)])
def test_held_requests_at_zero_wake_what_they_need(held: int, expected: int) -> None:
    scaler = PredictorScaler.start(Bounds(0, 4, target=8, idle_seconds=10.0), FAST, now=0.0)
    now, _ = run(scaler, 0.0, [0] * 12)
    assert scaler.at_zero
    # Held requests count whole, not averaged: 50 / 8 wants 7, so 4 (the most).
    assert scaler.observe(now + 1, Sample(held=held)) == expected


def test_a_moved_request_counter_wakes_a_predictor_at_zero() -> None:
    # A shadow at zero is never held for: its dropped copies move the counter instead.
    scaler = PredictorScaler.start(Bounds(0, 2, target=8, idle_seconds=10.0), FAST, now=0.0)
    for second in range(1, 13):
        scaler.observe(float(second), Sample(requests=5))
    assert scaler.at_zero
    assert scaler.observe(13.0, Sample(requests=6)) == 1 and scaler.woke


def test_gateway_documents_are_read_tolerantly() -> None:
    document = {
        "deployments": {
            "d": {
                "predictors": {
                    "main": {"inFlight": 3, "counters": {"requests": 10}, "shadowDropped": 0},
                    "shadow": {"inFlight": 0, "counters": {"requests": 4}, "shadowDropped": 2},
                    "odd": {"inFlight": "x", "counters": []},
                    "junk": 7,
                }
            },
            "e": "nonsense",
        }
    }
    assert parse_load(document) == {
        ("d", "main"): Load(in_flight=3, requests=10),
        ("d", "shadow"): Load(in_flight=0, requests=6),
        ("d", "odd"): Load(in_flight=0, requests=None),
    }
    assert parse_load([]) == {}
    assert parse_held({"version": 4, "held": {"d": {"main": 2, "x": 0, "y": "z"}}}) == (
        4,
        {("d", "main"): 2},
    )
    assert parse_held(None) == (-1, {})
