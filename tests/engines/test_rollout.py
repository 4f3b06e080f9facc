"""The shared rollout-phase decision: the messages both engines show, pinned word for word."""

from __future__ import annotations

from primehub_jupyter.core.models import Phase
from primehub_jupyter.engines.rollout import Rollout, rollout_phase, stopped_phase


def test_a_complete_rollout_is_deployed_without_a_message():
    assert rollout_phase(Rollout(wanted=2, ready=2, complete=True, problem="x")) == (
        Phase.DEPLOYED,
        "",
    )


def test_progress_counts_ready_replicas_with_the_engines_hint():
    assert rollout_phase(Rollout(wanted=2, ready=1, complete=False)) == (
        Phase.DEPLOYING,
        "1 of 2 replicas ready",
    )
    kubernetes = Rollout(wanted=2, ready=0, complete=False, hint="loading the model")
    assert rollout_phase(kubernetes)[1] == "0 of 2 replicas ready; loading the model"
    local = Rollout(
        wanted=1, ready=0, complete=False, restarting="iris-0 exited with code 1, restart 2"
    )
    assert rollout_phase(local)[1] == "0 of 1 replicas ready; iris-0 exited with code 1, restart 2"


def test_a_problem_fails_at_once_and_says_when_the_previous_version_serves():
    failed = Rollout(wanted=1, ready=0, complete=False, problem="model failed to load: boom")
    assert rollout_phase(failed) == (Phase.FAILED, "model failed to load: boom")
    serving = Rollout(
        wanted=1, ready=0, complete=False, problem="model failed to load: boom", old_serving=True
    )
    assert rollout_phase(serving)[1] == (
        "model failed to load: boom; the previous version keeps serving"
    )


def test_a_timeout_names_the_limit_the_progress_and_the_last_exit():
    kubernetes = Rollout(
        wanted=2,
        ready=1,
        complete=False,
        timed_out=True,
        deploy_timeout=300,
        hint="waiting for a node",
        old_serving=True,
    )
    assert rollout_phase(kubernetes) == (
        Phase.FAILED,
        "not ready within the deploy timeout of 300 s (1 of 2 replicas ready; waiting for a "
        "node); the previous version keeps serving",
    )
    local = Rollout(
        wanted=1,
        ready=0,
        complete=False,
        timed_out=True,
        deploy_timeout=2.5,
        restarting="not shown once timed out",
        last_exit="exited with code 1",
    )
    assert rollout_phase(local)[1] == (
        "not ready within the deploy timeout of 2.5 s (0 of 1 replicas ready): exited with code 1"
    )


def test_stopping_until_no_replica_is_left():
    assert stopped_phase(1) == Phase.STOPPING and stopped_phase(0) == Phase.STOPPED
