"""The rollout-phase decision and its messages, shared by the local and the Kubernetes engines."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.models import Phase

# The model server's exit code when the model cannot load (serving/server.py
# EXIT_MODEL_LOAD_FAILED); kept here so an engine need not import the model server.
LOAD_FAILURE_EXIT_CODE = 3
# Appended to a Failed message while replicas of the previous template still take traffic.
PREVIOUS_KEEPS_SERVING = "; the previous version keeps serving"
# Appended when a change cannot be admitted and the running version goes on serving.
RUNNING_KEEPS_SERVING = "; the running version keeps serving"


@dataclass(frozen=True)
class Rollout:
    """What an engine saw of a deployment that should run: its current template's progress."""

    wanted: int
    ready: int  # replicas of the current template that are ready
    complete: bool  # every wanted replica of the current template ready, no old one routed
    old_serving: bool = False  # replicas of the previous template still answer
    problem: str = ""  # why a current replica cannot become ready: Failed at once
    timed_out: bool = False  # the rollout has taken longer than deploy_timeout
    deploy_timeout: float = 300.0
    hint: str = ""  # what the rollout is doing now ("loading the model")
    restarting: str = ""  # a crashed replica waiting for its restart (Deploying only)
    last_exit: str = ""  # why the latest replica ended (after the timeout message)


def rollout_phase(rollout: Rollout) -> tuple[Phase, str]:
    """Deployed, Failed (with why) or Deploying (with progress) for a deployment that runs."""
    if rollout.complete:
        return Phase.DEPLOYED, ""
    keeps = PREVIOUS_KEEPS_SERVING if rollout.old_serving else ""
    if rollout.problem:
        return Phase.FAILED, rollout.problem + keeps
    progress = f"{rollout.ready} of {rollout.wanted} replicas ready"
    hint = f"; {rollout.hint}" if rollout.hint else ""
    if rollout.timed_out:
        cause = f": {rollout.last_exit}" if rollout.last_exit else ""
        return (
            Phase.FAILED,
            f"not ready within the deploy timeout of {rollout.deploy_timeout:g} s "
            f"({progress}{hint}){cause}{keeps}",
        )
    restarting = f"; {rollout.restarting}" if rollout.restarting else ""
    return Phase.DEPLOYING, f"{progress}{hint}{restarting}"


def stopped_phase(left: int) -> Phase:
    """Stopping while `left` replicas are still running, then Stopped."""
    return Phase.STOPPING if left else Phase.STOPPED
