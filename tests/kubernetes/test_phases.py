"""Phase rules for states the simulated cluster does not produce on its own."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from primehub_jupyter.core.models import Phase
from primehub_jupyter.engines.kubernetes.phases import (
    Observation,
    parse_time,
    pod_problem,
    rollout_complete,
    running_outcome,
)

NOW = datetime(2026, 11, 22, 13, 53, tzinfo=timezone.utc)


def deployment(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "iris", "uid": "d", "generation": 2},
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "model", "resources": {"limits": {"memory": "1Gi"}}}]
                }
            }
        },
        "status": {"observedGeneration": 2, **status},
    }


def pod(name: str = "iris-abc-12345", phase: str = "Pending", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"pod-template-hash": "abc"}},
        "status": {"phase": phase, **status},
    }


def test_parse_time_accepts_nanoseconds():
    assert parse_time("2026-11-22T13:53:00.123456789Z") == NOW.replace(microsecond=123456)
    assert parse_time("2026-11-22T13:53:00Z") == NOW and parse_time(None) is None


def test_rollout_is_complete_only_without_old_replicas():
    assert rollout_complete(deployment(updatedReplicas=2, replicas=2, availableReplicas=2), 2)
    assert not rollout_complete(deployment(updatedReplicas=2, replicas=3, availableReplicas=3), 2)
    stale = deployment(updatedReplicas=2, replicas=2, availableReplicas=2)
    stale["status"]["observedGeneration"] = 1
    assert not rollout_complete(stale, 2)


def test_a_volume_that_cannot_be_mounted():
    event = {
        "type": "Warning",
        "reason": "FailedMount",
        "involvedObject": {"name": "iris-abc-12345"},
        "message": 'MountVolume.SetUp failed for volume "model-source": secret "s3" not found',
    }
    assert pod_problem(pod(), [event]) == f"a volume cannot be mounted: {event['message']}"
    unbound = pod(
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": 'persistentvolumeclaim "data" not found',
            }
        ]
    )
    assert (
        pod_problem(unbound) == 'a volume cannot be mounted: persistentvolumeclaim "data" not found'
    )


def test_a_log_tail_as_termination_message_keeps_the_last_lines():
    crashed = pod(
        phase="Running",
        containerStatuses=[
            {
                "name": "model",
                "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {
                    "terminated": {
                        "exitCode": 1,
                        "message": "a\nb\nc\nImportError: no module named torch\n",
                    }
                },
            }
        ],
    )
    assert pod_problem(crashed) == (
        "the model container keeps crashing (exit code 1, 4 restarts): b c ImportError: no module "
        "named torch; see the logs"
    )
    # One crash that is restarting now is not a failure yet.
    once = pod(
        phase="Running",
        containerStatuses=[
            {
                "name": "model",
                "restartCount": 1,
                "state": {"running": {}},
                "lastState": {"terminated": {"exitCode": 1, "message": "boom"}},
            }
        ],
    )
    assert pod_problem(once) is None


def test_the_progress_deadline_of_the_deployment_counts_as_the_timeout():
    progressing = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    obs = Observation(
        wanted=1,
        deployment=deployment(conditions=[progressing]),
        pods=[pod(phase="Running")],
        rollout_started=NOW - timedelta(seconds=5),
        deploy_timeout=300,
        now=NOW,
    )
    outcome = running_outcome(obs)
    assert outcome.phase == Phase.FAILED
    assert outcome.message.startswith(
        "not ready within the deploy timeout of 300 s (0 of 1 replicas ready"
    )
    obs.deployment = deployment()
    assert running_outcome(obs).phase == Phase.DEPLOYING
