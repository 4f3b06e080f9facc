"""Client: the one Python door to the REST API, for the CLI, the magics and the widgets."""

from __future__ import annotations

import builtins
import json
import os
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

API_PATH = "primehub/api/"
TERMINAL_PHASES = ("Deployed", "Failed", "Stopped")
# A job's phases after which it changes no more (core/jobs.py JobPhase.finished).
JOB_FINISHED = ("Succeeded", "Failed", "Cancelled")


class PrimeHubError(Exception):
    """An answer from the API that is not a success; `message` is for the user."""

    def __init__(self, message: str, status: int | None = None, details: list | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.details = details or []


class ServerNotFound(PrimeHubError):
    """No PrimeHub server could be found or reached."""


class DeploymentFailed(PrimeHubError):
    """A deployment reached Failed while we waited for it."""


class WaitTimeout(PrimeHubError):
    """A deployment (or a job) did not reach the wanted phase in time."""


class JobFailed(PrimeHubError):
    """A batch job ended Failed or Cancelled; `job` is its last record."""

    def __init__(self, message: str, job: dict[str, Any]) -> None:
        super().__init__(message)
        self.job = job


def _runtime_servers() -> list[dict[str, Any]]:
    """Running Jupyter servers, from their runtime files, newest first."""
    try:
        from jupyter_core.paths import jupyter_runtime_dir
    except ImportError:  # pragma: no cover - jupyter_core comes with any kernel
        return []
    servers = []
    for path in Path(jupyter_runtime_dir()).glob("jpserver-*.json"):
        try:
            info = json.loads(path.read_text())
            os.kill(int(info["pid"]), 0)
        except (OSError, ValueError, KeyError):
            continue
        info["_mtime"] = path.stat().st_mtime
        servers.append(info)
    servers.sort(key=lambda s: s["_mtime"], reverse=True)
    cwd = os.getcwd()
    # A kernel runs under its server's root dir: prefer servers whose root holds the cwd.
    servers.sort(key=lambda s: not cwd.startswith(str(s.get("root_dir", "/"))))
    return servers


def discover(url: str | None = None, token: str | None = None) -> tuple[str, str]:
    """The server URL and token: arguments, then PRIMEHUB_API_URL/TOKEN, then running servers."""
    url = url or os.environ.get("PRIMEHUB_API_URL")
    token = token if token is not None else os.environ.get("PRIMEHUB_API_TOKEN")
    if url:
        return _base(url), token or ""
    for info in _runtime_servers():
        candidate = _base(info.get("url", ""))
        found_token = info.get("token", "")
        try:
            response = requests.get(
                candidate + API_PATH + "me",
                headers={"Authorization": f"token {found_token}"} if found_token else {},
                timeout=3,
            )
        except requests.RequestException:
            continue
        if response.status_code == 200:
            return candidate, token or found_token
    raise ServerNotFound(
        "no PrimeHub server found: start JupyterLab (or `primehub-deploy serve`) with the "
        "primehub-jupyter extension, or set PRIMEHUB_API_URL and PRIMEHUB_API_TOKEN"
    )


def _base(url: str) -> str:
    url = url.strip()
    if API_PATH in url:
        url = url.split(API_PATH)[0]
    return url.rstrip("/") + "/"


class Client:
    """Deployments, groups, logs, history and clients over the PrimeHub REST API.

    >>> client = Client()                      # finds the server this kernel runs under
    >>> d = client.create({"displayName": "iris", "groupName": "default",
    ...                    "predictors": [{"instanceType": "cpu-1", "modelURI": "./iris"}]})
    >>> client.wait(d["id"])["status"]["endpoint"]
    """

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 60):
        self.base_url, self.token = discover(url, token)
        self.api_url = self.base_url + API_PATH
        self.timeout = timeout
        self.session = requests.Session()
        if self.token:
            self.session.headers["Authorization"] = f"token {self.token}"

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    # ---- plumbing ---------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send a request; raise PrimeHubError with the server's message on failure."""
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, self.api_url + path, **kwargs)
        except requests.ConnectionError:
            raise ServerNotFound(
                f"cannot reach the PrimeHub server at {self.base_url}: is it running?"
            ) from None
        if response.status_code >= 400:
            raise self._error(response)
        return response

    @staticmethod
    def _error(response: requests.Response) -> PrimeHubError:
        # Imported here: the models cost an import a kernel that never sees an error skips.
        from pydantic import ValidationError

        from ..core.bodies import ErrorBody

        try:
            body = response.json()
        except ValueError:
            body = None
        details: list = []
        try:
            error = ErrorBody.model_validate(body)
            message, details = error.message or response.reason, error.details
        except ValidationError:
            # Not one of ours (Jupyter's own 403, a proxy's page): say what there is.
            if isinstance(body, dict):
                found = body.get("message")
                message = found if isinstance(found, str) and found else response.reason
            else:
                message = response.text.strip() or response.reason
        if response.status_code in (401, 403) and not message:
            message = "not authorized: check the token"
        return PrimeHubError(message, response.status_code, details)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        return None if response.status_code == 204 else response.json()

    # ---- users and groups -------------------------------------------------------------

    def me(self) -> dict[str, Any]:
        return self._json("GET", "me")

    def groups(self) -> list[dict[str, Any]]:
        return self._json("GET", "groups")["groups"]

    def set_group_enabled(self, group: str, enabled: bool) -> dict[str, Any]:
        """Admins: turn model deployment on or off for a group (off fails its deployments)."""
        return self._json(
            "PATCH", f"groups/{quote(group)}", json={"enabledDeployment": bool(enabled)}
        )

    def instance_types(self, group: str | None = None) -> list[dict[str, Any]]:
        params = {"group": group} if group else {}
        return self._json("GET", "instance-types", params=params)["instanceTypes"]

    # ---- deployments ------------------------------------------------------------------

    def list(
        self, *, name: str | None = None, mine: bool = False, group: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Deployments of your groups, newest update first."""
        params: dict[str, str] = {}
        if name:
            params["name"] = name
        if mine:
            params["mine"] = "1"
        if group:
            params["group"] = group
        return self._json("GET", "deployments", params=params)["deployments"]

    def get(self, deployment_id: str) -> dict[str, Any]:
        return self._json("GET", f"deployments/{quote(deployment_id)}")

    def create(self, spec: dict[str, Any], *, id: str | None = None) -> dict[str, Any]:
        """Create from a spec (or a whole `{"id", "spec"}` / custom resource document)."""
        body = spec if "spec" in spec else {"spec": spec}
        if id:
            body = {**body, "id": id}
        return self._json("POST", "deployments", json=body)

    def update(
        self,
        deployment_id: str,
        spec: dict[str, Any],
        *,
        update_message: str | None = None,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """Merge `spec` into the deployment's spec (a rolling update when the model changes)."""
        patch = dict(spec)
        if update_message is not None:
            patch["updateMessage"] = update_message
        body: dict[str, Any] = {"spec": patch}
        if resource_version is not None:
            body["resourceVersion"] = resource_version
        return self._json("PATCH", f"deployments/{quote(deployment_id)}", json=body)

    def stop(self, deployment_id: str, update_message: str | None = None) -> dict[str, Any]:
        body = {"updateMessage": update_message} if update_message else {}
        return self._json("POST", f"deployments/{quote(deployment_id)}/stop", json=body)

    def start(self, deployment_id: str, update_message: str | None = None) -> dict[str, Any]:
        body = {"updateMessage": update_message} if update_message else {}
        return self._json("POST", f"deployments/{quote(deployment_id)}/start", json=body)

    def delete(self, deployment_id: str) -> None:
        self.request("DELETE", f"deployments/{quote(deployment_id)}")

    def wait(
        self,
        deployment_id: str,
        *,
        phase: str | tuple[str, ...] = "Deployed",
        timeout: float = 600,
        interval: float = 0.5,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the deployment reaches `phase`; DeploymentFailed if it fails instead.

        Polls every 0.1 s at first, slowing down to every `interval` seconds after ~40 s.
        """
        wanted = (phase,) if isinstance(phase, str) else tuple(phase)
        started = time.monotonic()
        deadline = started + timeout
        last: dict[str, Any] = {}
        while True:
            last = self.get(deployment_id)
            status = last.get("status", {})
            if on_progress is not None:
                on_progress(last)
            if status.get("phase") in wanted:
                return last
            if status.get("phase") == "Failed" and "Failed" not in wanted:
                raise DeploymentFailed(
                    f"deployment {deployment_id} failed: {status.get('message', '')}"
                )
            if time.monotonic() > deadline:
                raise WaitTimeout(
                    f"deployment {deployment_id} is {status.get('phase')} after {timeout:g} s "
                    f"({status.get('message', '')})"
                )
            # Most deployments are ready within seconds: a fixed 0.5 s poll returned 0.25 s
            # after the phase changed on average; poll often at first, then back off.
            time.sleep(min(interval, 0.1 + (time.monotonic() - started) / 100))

    def rollback(
        self, deployment_id: str, revision: int, update_message: str | None = None
    ) -> dict[str, Any]:
        """Re-apply an earlier history entry's spec as a new update."""
        body: dict[str, Any] = {"revision": int(revision)}
        if update_message:
            body["updateMessage"] = update_message
        return self._json("POST", f"deployments/{quote(deployment_id)}/rollback", json=body)

    def compare(self, deployment_id: str) -> dict[str, Any]:
        """Per-predictor counts and each challenger's significance test (a ComparisonReport)."""
        return self._json("GET", f"deployments/{quote(deployment_id)}/compare")

    def promote(
        self, deployment_id: str, predictor: str, update_message: str | None = None
    ) -> dict[str, Any]:
        """Send every request to `predictor` and remove the others (an update)."""
        body: dict[str, Any] = {"predictor": predictor}
        if update_message:
            body["updateMessage"] = update_message
        return self._json("POST", f"deployments/{quote(deployment_id)}/promote", json=body)

    def metrics(self, deployment_id: str, *, window: float = 900, step: float = 5) -> dict:
        """Traffic, errors, latency, reward and replica usage over time."""
        params = {"window": str(window), "step": str(step)}
        return self._json("GET", f"deployments/{quote(deployment_id)}/metrics", params=params)

    def events(self, *, heartbeat: int = 5) -> EventStream:
        """The change stream of the user's groups (GET events): iterate for its events."""
        response = self.request(
            "GET",
            "events",
            params={"heartbeat": str(heartbeat)},
            stream=True,
            # A stream that stays silent for three heartbeats is dead: let the read fail.
            timeout=(self.timeout, heartbeat * 3),
        )
        return EventStream(response)

    # ---- batch jobs -------------------------------------------------------------------

    def create_job(
        self,
        deployment_id: str,
        input: str,
        output: str,
        *,
        format: str | None = None,
        predictor: str | None = None,
        chunk_rows: int | None = None,
        output_columns: str = "all",
        overwrite: bool = False,
        max_failed_share: float | None = None,
    ) -> dict[str, Any]:
        """Start a job scoring `input` into `output` (paths as the server sees them); its record."""
        body: dict[str, Any] = {
            "input": input,
            "output": output,
            "outputColumns": output_columns,
            "overwrite": bool(overwrite),
        }
        optional = {
            "format": format,
            "predictor": predictor,
            "chunkRows": chunk_rows,
            "maxFailedShare": max_failed_share,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        return self._json("POST", f"deployments/{quote(deployment_id)}/jobs", json=body)

    def list_jobs(self, deployment_id: str) -> builtins.list[dict[str, Any]]:
        """The deployment's jobs, newest first (the last 50)."""
        return self._json("GET", f"deployments/{quote(deployment_id)}/jobs")["jobs"]

    def get_job(self, deployment_id: str, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"deployments/{quote(deployment_id)}/jobs/{quote(job_id)}")

    def cancel_job(self, deployment_id: str, job_id: str) -> dict[str, Any] | None:
        """Cancel a live job (its record, phase Cancelled) or remove a finished one (None)."""
        return self._json("DELETE", f"deployments/{quote(deployment_id)}/jobs/{quote(job_id)}")

    def job_logs(self, deployment_id: str, job_id: str, *, tail: int | None = 2000) -> str:
        """The job process's last `tail` log lines (None: all), newest last."""
        params = {"tail": "all" if tail is None else str(tail)}
        answer = self._json(
            "GET", f"deployments/{quote(deployment_id)}/jobs/{quote(job_id)}/logs", params=params
        )
        lines = answer.get("lines", []) if isinstance(answer, dict) else []
        return "".join(line if line.endswith("\n") else line + "\n" for line in lines)

    def wait_job(
        self,
        deployment_id: str,
        job_id: str,
        *,
        timeout: float | None = None,
        interval: float = 1.0,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the job has finished (Succeeded, Failed or Cancelled); its last record.

        `on_progress` sees every record fetched; WaitTimeout after `timeout` seconds (None:
        no limit). Polls every 0.2 s at first, backing off to every `interval` seconds.
        """
        started = time.monotonic()
        while True:
            job = self.get_job(deployment_id, job_id)
            if on_progress is not None:
                on_progress(job)
            if job.get("phase") in JOB_FINISHED:
                return job
            if timeout is not None and time.monotonic() - started > timeout:
                raise WaitTimeout(
                    f"job {job_id} is {job.get('phase')} after {timeout:g} s "
                    f"({job.get('rowsRead', 0)} rows read)"
                )
            time.sleep(min(interval, 0.2 + (time.monotonic() - started) / 50))

    # ---- history, logs, clients, invoke -----------------------------------------------

    def history(self, deployment_id: str) -> builtins.list[dict[str, Any]]:
        return self._json("GET", f"deployments/{quote(deployment_id)}/history")["history"]

    def history_entry(self, deployment_id: str, revision: int) -> dict[str, Any]:
        return self._json("GET", f"deployments/{quote(deployment_id)}/history/{int(revision)}")

    def replicas(self, deployment_id: str) -> builtins.list[str]:
        return self._json("GET", f"deployments/{quote(deployment_id)}/replicas")["replicas"]

    def logs(
        self, deployment_id: str, *, replica: str | int | None = None, tail: int | None = 2000
    ) -> str:
        """The last `tail` lines (None: all), newest last, with UTC timestamps."""
        params = {"tail": "all" if tail is None else str(tail)}
        if replica is not None:
            params["replica"] = str(replica)
        return self.request("GET", f"deployments/{quote(deployment_id)}/logs", params=params).text

    def follow_logs(
        self, deployment_id: str, *, replica: str | int | None = None, tail: int = 0
    ) -> Generator[str, None, None]:
        """Yield log lines as they are written; closing the generator closes the connection."""
        params = {"follow": "1", "tail": str(tail)}
        if replica is not None:
            params["replica"] = str(replica)
        response = self.request(
            "GET",
            f"deployments/{quote(deployment_id)}/logs",
            params=params,
            stream=True,
            timeout=(self.timeout, None),
        )
        try:
            yield from response.iter_lines(decode_unicode=True)
        finally:
            response.close()

    def download_logs(
        self, deployment_id: str, path: str | os.PathLike[str], *, replica: str | None = None
    ) -> Path:
        """Save the whole log to `path`."""
        params = {"download": "1"}
        if replica is not None:
            params["replica"] = str(replica)
        response = self.request(
            "GET", f"deployments/{quote(deployment_id)}/logs", params=params, stream=True
        )
        target = Path(path)
        with open(target, "wb") as f:
            for chunk in response.iter_content(65536):
                f.write(chunk)
        return target

    def clients(self, deployment_id: str) -> builtins.list[dict[str, str]]:
        return self._json("GET", f"deployments/{quote(deployment_id)}/clients")["clients"]

    def add_client(self, deployment_id: str, name: str) -> dict[str, str]:
        """Add (or replace) a client; the returned token is shown this once only."""
        from ..core.bodies import ClientCreated

        answer = self._json(
            "POST", f"deployments/{quote(deployment_id)}/clients", json={"name": name}
        )
        # The one answer that must hold a token: say so now, not when the token is used.
        return ClientCreated.model_validate(answer).to_json()

    def delete_client(self, deployment_id: str, name: str) -> None:
        self.request("DELETE", f"deployments/{quote(deployment_id)}/clients/{quote(name)}")

    def invoke(
        self, deployment_id: str, payload: Any, *, path: str = "api/v1.0/predictions"
    ) -> Any:
        """Send a request to the model as you (private endpoints included); the JSON answer."""
        body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
        response = self.session.post(
            self.api_url + f"deployments/{quote(deployment_id)}/invoke/{path.lstrip('/')}",
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=self.timeout,
        )
        if response.status_code >= 400:
            raise self._error(response)
        try:
            return response.json()
        except ValueError:
            return response.text


class EventStream:
    """Server-sent events as dicts ({"type": "ready" | "deployment" | "groups" ...});
    heartbeats come as {"type": "heartbeat"}. `close()` ends it from any thread."""

    def __init__(self, response: requests.Response) -> None:
        self.response = response

    def __iter__(self) -> Generator[dict[str, Any], None, None]:
        data: list[str] = []
        with self.response:
            for line in self.response.iter_lines(decode_unicode=True):
                if line is None:
                    continue
                if line.startswith(":"):
                    yield {"type": "heartbeat"}
                elif line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif line == "" and data:
                    try:
                        event = json.loads("\n".join(data))
                    except ValueError:
                        event = None
                    data = []
                    if isinstance(event, dict) and isinstance(event.get("type"), str):
                        yield event

    def close(self) -> None:
        self.response.close()
