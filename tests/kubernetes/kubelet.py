"""The simulated kubelet: image pulls, the real model initializer, container behaviours, logs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from .controllers import _condition
from .store import ApiError, now_text

MODEL_SERVER_IMAGE = "ghcr.io/primehub-io/primehub-model-server:test"
BEHAVIOURS = ("ok", "crash", "load-fail", "oom", "never-ready")


def stamp() -> str:
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}000Z"


@dataclass
class ContainerRun:
    """The kubelet's memory of one container of one pod."""

    name: str
    restarts: int = 0
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last: dict[str, Any] | None = None
    ready: bool = False
    next_start: float = 0.0
    started_at: float = 0.0
    process: asyncio.Task | None = None
    instance: int = 0


@dataclass
class PodRun:
    uid: str
    name: str
    directory: Path
    init: ContainerRun | None
    model: ContainerRun
    ip: str
    behaviour: str = "ok"
    #: The bundle the model container mounts (its catalog answers from it), if any.
    bundle: Path | None = None
    requests: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


class Kubelet:
    """Mixed into Cluster: runs the pods scheduled on the node and keeps their logs."""

    # ---- the kubelet ----------------------------------------------------------------

    def _kubelet(self) -> None:
        now = time.monotonic()
        live = {p["metadata"]["uid"]: p for p in self._list("/pods")}
        for uid in [u for u in self.pods if u not in live]:
            run = self.pods.pop(uid)
            for c in (run.init, run.model):
                if c is not None and c.process is not None:
                    c.process.cancel()
                    # Awaited by Cluster.stop: the task still kills and reaps its process.
                    self.stopping.add(c.process)
                    c.process.add_done_callback(self.stopping.discard)
        for pod in live.values():
            if pod["metadata"].get("deletionTimestamp"):
                # A terminating pod goes after a short grace period (long enough to be seen).
                since = self._terminating.setdefault(pod["metadata"]["uid"], now)
                if now - since >= self.termination_seconds:
                    self._terminating.pop(pod["metadata"]["uid"], None)
                    self.store.delete(self._type("/pods"), self.namespace, pod["metadata"]["name"])
                else:
                    self._wake_later(self.termination_seconds)
                continue
            if not pod["spec"].get("nodeName"):
                continue
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue  # a finished job pod: its containers ran to completion
            run = self.pods.get(pod["metadata"]["uid"]) or self._admit(pod)
            self._step(pod, run, now)

    def _admit(self, pod: dict[str, Any]) -> PodRun:
        spec = pod["spec"]
        directory = self.workdir / "pods" / pod["metadata"]["name"]
        directory.mkdir(parents=True, exist_ok=True)
        self._next_ip += 1
        init = next((c for c in spec.get("initContainers") or []), None)
        run = PodRun(
            uid=pod["metadata"]["uid"],
            name=pod["metadata"]["name"],
            directory=directory,
            init=ContainerRun(init["name"]) if init else None,
            model=ContainerRun(spec["containers"][0]["name"]),
            ip=f"10.244.0.{self._next_ip % 250 + 2}",
        )
        self.pods[run.uid] = run
        return run

    def _secret_value(self, name: str, key: str | None) -> dict[str, str] | None:
        secret = self.store.find(self._type("/secrets"), self.namespace, name)
        if secret is None:
            return None
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        return data if key is None else ({key: data[key]} if key in data else None)

    def _environment(self, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str] | str:
        """The container's environment, or why it cannot be made (CreateContainerConfigError)."""
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            ref = source.get("secretRef")
            if ref:
                values = self._secret_value(ref["name"], None)
                if values is None:
                    if not ref.get("optional"):
                        return f'secret "{ref["name"]}" not found'
                    continue
                env.update(values)
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = re.sub(
                    r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"]
                )
                continue
            source = item.get("valueFrom") or {}
            if "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                env[item["name"]] = pod["metadata"]["name"] if path == "metadata.name" else ""
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                values = self._secret_value(ref["name"], ref["key"])
                if values is None:
                    if ref.get("optional"):
                        continue
                    return f'secret "{ref["name"]}" not found'
                env[item["name"]] = values[ref["key"]]
        return env

    def _mounts(
        self, pod: dict[str, Any], run: PodRun, container: dict[str, Any]
    ) -> dict[str, Path]:
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        mounts = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            if "emptyDir" in volume:
                path = run.directory / "volumes" / mount["name"]
            else:
                path = self.pvcs[volume["persistentVolumeClaim"]["claimName"]]
            path.mkdir(parents=True, exist_ok=True)
            mounts[mount["mountPath"]] = path
        return mounts

    def _pull(self, pod: dict[str, Any], container: dict[str, Any], state: ContainerRun) -> bool:
        image = container["image"]
        if image in self.images:
            return True
        reason = (
            "ErrImagePull"
            if state.state.get("waiting", {}).get("reason") != "ErrImagePull"
            else "ImagePullBackOff"
        )
        message = f'failed to pull and unpack image "{image}": not found'
        if reason == "ImagePullBackOff":
            message = f'Back-off pulling image "{image}"'
        state.state = {"waiting": {"reason": reason, "message": message}}
        self.event(pod, "Failed", f'Failed to pull image "{image}": not found')
        return False

    def _step(self, pod: dict[str, Any], run: PodRun, now: float) -> None:
        spec = pod["spec"]
        init_spec = next((c for c in spec.get("initContainers") or []), None)
        model_spec = spec["containers"][0]
        init_done = run.init is None or run.init.state.get("terminated", {}).get("exitCode") == 0
        init_failed = run.init is not None and run.init.state.get("terminated", {}).get("exitCode")
        if init_failed:
            pass  # restartPolicy Never: the pod has failed
        elif not init_done and init_spec is not None:
            self._step_init(pod, run, init_spec, now)
        elif spec.get("restartPolicy") == "Never":
            self._step_job(pod, run, model_spec)
        else:
            self._step_model(pod, run, model_spec, now)
        self._write_status(pod, run, now)

    def _step_init(
        self, pod: dict[str, Any], run: PodRun, container: dict[str, Any], now: float
    ) -> None:
        state = run.init
        assert state is not None
        if state.process is not None:
            return
        if now < state.next_start:
            return
        self._launch(pod, run, container, state)

    def _step_job(self, pod: dict[str, Any], run: PodRun, container: dict[str, Any]) -> None:
        """A job pod's container runs for real (its command, mounts and env mapped here)."""
        state = run.model
        if state.process is not None or "terminated" in state.state:
            return
        self._launch(pod, run, container, state)

    def _launch(
        self, pod: dict[str, Any], run: PodRun, container: dict[str, Any], state: ContainerRun
    ) -> None:
        """Pull the image, map the environment and start the container's process."""
        if not self._pull(pod, container, state):
            return
        env = self._environment(pod, container)
        if isinstance(env, str):
            state.state = {"waiting": {"reason": "CreateContainerConfigError", "message": env}}
            return
        state.state = {"running": {"startedAt": now_text()}}
        state.instance += 1
        state.process = asyncio.create_task(self._run_process(pod, run, container, env, state))

    def _argv(self, arguments: list[str], host: Any) -> list[str]:
        """`python` is this interpreter; modules in `module_overrides` run a test's script."""
        overrides: dict[str, str] = getattr(self, "module_overrides", {})
        argv: list[str] = []
        skip = False
        for i, arg in enumerate(arguments):
            if skip:
                skip = False
                continue
            if arg == "-m" and i + 1 < len(arguments) and arguments[i + 1] in overrides:
                argv.append(overrides[arguments[i + 1]])
                skip = True
            else:
                argv.append(sys.executable if arg == "python" else host(arg))
        return argv

    async def _run_process(
        self,
        pod: dict[str, Any],
        run: PodRun,
        container: dict[str, Any],
        env: dict[str, str],
        state: ContainerRun,
    ) -> None:
        never = pod["spec"].get("restartPolicy") == "Never"
        mounts = self._mounts(pod, run, container)
        termination = run.directory / f"{container['name']}.termination-log"
        termination.unlink(missing_ok=True)

        def host(arg: str) -> str:
            if arg == container.get("terminationMessagePath", "/dev/termination-log"):
                return str(termination)
            for mount_path, path in sorted(mounts.items(), key=lambda m: -len(m[0])):
                for prefix in ("file://", ""):
                    if arg.startswith(prefix + mount_path):
                        return prefix + str(path) + arg[len(prefix + mount_path) :]
            return arg

        argv = self._argv([*container["command"], *(container.get("args") or [])], host)
        environment = {**os.environ, **env}
        # Its own process group: a container's end kills every process in it (jobrun's runner).
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
        assert process.stdout is not None
        try:
            async for raw in process.stdout:
                self._log(
                    run.name,
                    container["name"],
                    state.instance,
                    raw.decode(errors="replace").rstrip("\n"),
                )
            code = await process.wait()
        finally:
            if process.returncode is None:  # the pod went away (or the cluster stops)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        message = termination.read_text() if termination.exists() else ""
        if not message and code != 0:  # FallbackToLogsOnError
            message = "\n".join(
                t for _, _, t in self.logs.get((run.name, container["name"]), [])[-5:]
            )
        finished = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "message": message,
            "startedAt": now_text(),
            "finishedAt": now_text(),
        }
        if code == 0 or never:
            state.state = {"terminated": finished}
        else:
            state.restarts += 1
            state.last = {"terminated": finished}
            state.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": "back-off restarting failed container",
                }
            }
            state.next_start = time.monotonic() + self.backoff
        state.process = None
        self._wake.set()

    def _step_model(
        self, pod: dict[str, Any], run: PodRun, container: dict[str, Any], now: float
    ) -> None:
        state = run.model
        if "running" in state.state:
            if not state.ready and now - state.started_at >= self.startup_seconds:
                if run.behaviour == "ok":
                    state.ready = True
                    self._log(
                        run.name, state.name, state.instance, "model server ready on port 9000"
                    )
                elif run.behaviour in ("crash", "load-fail", "oom"):
                    self._crash(run, state, now)
            return
        if now < state.next_start:
            return
        if not self._pull(pod, container, state):
            return
        env = self._environment(pod, container)
        if isinstance(env, str):
            state.state = {"waiting": {"reason": "CreateContainerConfigError", "message": env}}
            return
        run.behaviour = self._behaviour(pod, run, container)
        state.instance += 1
        state.state = {"running": {"startedAt": now_text()}}
        state.started_at = now
        state.ready = False
        self._log(
            run.name,
            state.name,
            state.instance,
            f"starting {container['image']} (instance {state.instance})",
        )

    def _behaviour(self, pod: dict[str, Any], run: PodRun, container: dict[str, Any]) -> str:
        image = container["image"]
        if image != MODEL_SERVER_IMAGE:
            return self.images[image]
        mounts = self._mounts(pod, run, container)
        bundle = mounts.get("/mnt/models")
        descriptor = bundle / "bundle.yaml" if bundle else None
        if descriptor is None or not descriptor.exists():
            run.metrics["load_error"] = 1
            return "load-fail"
        data = yaml.safe_load(descriptor.read_text()) or {}
        if data.get("runtime") == "broken":
            return "load-fail"
        run.bundle = bundle
        return "ok"

    def _crash(self, run: PodRun, state: ContainerRun, now: float) -> None:
        if run.behaviour == "load-fail":
            code, reason, message = (
                3,
                "Error",
                "model failed to load: ValueError: the artifact is not a joblib file",
            )
            if run.metrics.get("load_error"):
                message = "model failed to load: bundle.yaml not found in /mnt/models"
        elif run.behaviour == "oom":
            code, reason, message = 137, "OOMKilled", ""
        else:
            code, reason, message = (
                1,
                "Error",
                "Traceback (most recent call last):\nRuntimeError: boom",
            )
        self._log(run.name, state.name, state.instance, message or "killed")
        state.restarts += 1
        state.last = {
            "terminated": {
                "exitCode": code,
                "reason": reason,
                "message": message,
                "startedAt": now_text(),
                "finishedAt": now_text(),
            }
        }
        state.state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": "back-off restarting failed container",
            }
        }
        state.next_start = now + self.backoff

    def _write_status(self, pod: dict[str, Any], run: PodRun, now: float) -> None:
        status = copy.deepcopy(pod.get("status") or {})
        conditions = [c for c in status.get("conditions") or [] if c["type"] == "PodScheduled"]
        initialized = run.init is None or (
            "terminated" in run.init.state and run.init.state["terminated"]["exitCode"] == 0
        )
        conditions.append(_condition("Initialized", initialized))
        conditions.append(_condition("ContainersReady", run.model.ready))
        conditions.append(_condition("Ready", run.model.ready))
        status["conditions"] = conditions
        status["phase"] = (
            "Running" if "running" in run.model.state or run.model.restarts else "Pending"
        )
        ended = [c.state.get("terminated") for c in (run.init, run.model) if c is not None]
        if pod["spec"].get("restartPolicy") == "Never":
            if any(t and t["exitCode"] for t in ended):
                status["phase"] = "Failed"
            elif ended[-1] and ended[-1]["exitCode"] == 0:
                status["phase"] = "Succeeded"
        status["podIP"] = run.ip
        status.setdefault("startTime", now_text())

        def container_status(c: ContainerRun, spec: dict[str, Any]) -> dict[str, Any]:
            result = {
                "name": c.name,
                "image": spec["image"],
                "imageID": "",
                "ready": c.ready,
                "restartCount": c.restarts,
                "started": "running" in c.state,
                "state": c.state,
            }
            if c.last:
                result["lastState"] = c.last
            return result

        if run.init is not None:
            status["initContainerStatuses"] = [
                container_status(run.init, pod["spec"]["initContainers"][0])
            ]
        status["containerStatuses"] = [container_status(run.model, pod["spec"]["containers"][0])]
        if not initialized:
            status["containerStatuses"][0]["state"] = {"waiting": {"reason": "PodInitializing"}}
        old = pod.get("status") or {}

        def strip(s: dict[str, Any]) -> str:
            return json.dumps(
                {k: v for k, v in s.items() if k != "conditions"}, sort_keys=True
            ) + json.dumps(
                [
                    (c["type"], c["status"], c.get("reason"), c.get("message"))
                    for c in s.get("conditions") or []
                ]
            )

        if strip(old) != strip(status):
            changed = copy.deepcopy(pod)
            changed["status"] = status
            self._update("/pods", changed)

    # ---- logs (LogSource) -----------------------------------------------------------

    def _log(self, pod: str, container: str, instance: int, text: str) -> None:
        for line in text.splitlines() or [""]:
            self.logs.setdefault((pod, container), []).append((instance, stamp(), line))
        self.log_changed.set()
        self.log_changed = asyncio.Event()

    def _instance_lines(self, pod: str, container: str, previous: bool) -> list[tuple[str, str]]:
        lines = self.logs.get((pod, container), [])
        if not lines:
            return []
        last = lines[-1][0]
        wanted = last - 1 if previous else last
        return [(s, t) for i, s, t in lines if i == wanted]

    def _container_started(self, pod: str, container: str) -> bool:
        run = next((r for r in self.pods.values() if r.name == pod), None)
        if run is None:
            return False
        state = run.model if run.model.name == container else run.init
        return state is not None and state.instance > 0

    def lines(
        self, namespace: str, pod: str, container: str, previous: bool
    ) -> list[tuple[str, str]]:
        if not self._container_started(pod, container):
            raise ApiError(
                400,
                "BadRequest",
                f'container "{container}" in pod "{pod}" is waiting to start: PodInitializing',
            )
        return self._instance_lines(pod, container, previous)

    async def follow(
        self, namespace: str, pod: str, container: str
    ) -> AsyncIterator[tuple[str, str]]:
        if not self._container_started(pod, container):
            raise ApiError(
                400,
                "BadRequest",
                f'container "{container}" in pod "{pod}" is waiting to start: PodInitializing',
            )
        seen = len(self.logs.get((pod, container), []))
        while any(r.name == pod for r in self.pods.values()):
            changed = self.log_changed
            lines = self.logs.get((pod, container), [])
            for _, s, t in lines[seen:]:
                yield s, t
            seen = len(lines)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), 0.5)
