"""Shared fixtures: iris bundles, a configured server, and helpers for real HTTP traffic."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import yaml

pytest_plugins = ["pytest_jupyter.jupyter_server"]

OWNER = "alice"

GROUPS = {
    "admins": [OWNER],
    "instanceTypes": [
        {"name": "cpu-0.5", "cpu": 0.5, "memory": "512Mi"},
        {"name": "cpu-1", "cpu": 1, "memory": "1Gi"},
        {"name": "cpu-2", "cpu": 2, "memory": "2Gi"},
    ],
    "groups": [
        {"name": "everyone", "instanceTypes": ["cpu-0.5", "cpu-1"]},
        {
            "name": "default",
            "enabledDeployment": True,
            "members": [OWNER, "bob"],
            "quota": {"cpu": 4, "memory": "8Gi", "maxDeployments": 10},
            "instanceTypes": ["cpu-2"],
        },
        {
            "name": "small",
            "enabledDeployment": True,
            "members": [OWNER],
            "quota": {"cpu": 1, "memory": "4Gi"},
        },
        {"name": "research", "enabledDeployment": False, "members": [OWNER]},
        {"name": "team-c", "enabledDeployment": True, "members": ["carol"]},
    ],
}


@pytest.fixture(scope="session")
def iris() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    return load_iris(return_X_y=True)


@pytest.fixture(scope="session")
def models(iris: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Two different fitted iris classifiers: a version 1 and a version 2."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    X, y = iris
    return {
        "v1": LogisticRegression(max_iter=1000).fit(X, y),
        "v2": DecisionTreeClassifier(max_depth=2, random_state=0).fit(X, y),
    }


@pytest.fixture(scope="session")
def bundles(models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bundles of both models, plus one whose artifact is corrupt (loads fail)."""
    from primehub_jupyter.serving.packaging import package

    root = tmp_path_factory.mktemp("bundles")
    made = {
        name: Path(package(model, root / name, name=f"iris-{name}"))
        for name, model in models.items()
    }
    broken = Path(package(models["v1"], root / "broken", name="iris-broken"))
    (broken / "model.joblib").write_bytes(b"this is not a joblib file")
    made["broken"] = broken
    return made


@pytest.fixture
def groups_file(tmp_path: Path) -> Path:
    path = tmp_path / "groups.yaml"
    path.write_text(yaml.safe_dump(GROUPS, sort_keys=False))
    return path


@pytest.fixture
def engine_config() -> dict[str, Any]:
    """LocalEngine settings; tests override entries to reach particular phases."""
    return {"drain_seconds": 0.5, "stop_grace_seconds": 5.0, "restart_backoff_max": 2.0}


@pytest.fixture
def jp_server_config(tmp_path: Path, groups_file: Path, engine_config: dict[str, Any]) -> dict:
    return {
        "ServerApp": {
            "jpserver_extensions": {"primehub_jupyter": True},
            "identity_provider_class": "tests.users.NamedTokenIdentityProvider",
        },
        "NamedTokenIdentityProvider": {"users": [OWNER, "bob", "carol", "dave"]},
        "PrimeHubApp": {
            "data_dir": str(tmp_path / "primehub-data"),
            "groups_file": str(groups_file),
            "bcrypt_rounds": 4,
        },
        "LocalEngine": dict(engine_config),
    }


@pytest.fixture
def jp_auth_header() -> dict[str, str]:
    return {"Authorization": f"token {OWNER}"}


class API:
    """Calls the REST API through jp_fetch as a given user; JSON in, (status, JSON) out."""

    def __init__(self, fetch: Callable[..., Any], user: str = OWNER) -> None:
        self.fetch = fetch
        self.user = user

    def as_user(self, user: str) -> API:
        return API(self.fetch, user)

    async def call(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None, **params: str
    ) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {
            "method": method,
            "raise_error": False,
            "headers": {"Authorization": f"token {self.user}"},
        }
        if params:
            kwargs["params"] = params
        if raw is not None:
            kwargs["body"] = raw
        elif body is not None:
            kwargs["body"] = json.dumps(body)
        elif method in ("POST", "PATCH", "PUT"):
            kwargs["body"] = b""
            kwargs["allow_nonstandard_methods"] = True
        response = await self.fetch("primehub", "api", *path.strip("/").split("/"), **kwargs)
        text = response.body.decode() if response.body else ""
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = text
        return response.code, data

    async def ok(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        code, data = await self.call(method, path, body, **params)
        assert code < 300, f"{method} {path} -> {code}: {data}"
        return data

    async def wait_phase(self, deployment_id: str, phase: str, limit: float = 60) -> dict:
        """Poll until the phase is reached; the limit only bounds a hang, it measures nothing."""
        deadline = time.monotonic() + limit
        while True:
            d = await self.ok("GET", f"deployments/{deployment_id}")
            if d["status"]["phase"] == phase:
                return d
            if time.monotonic() > deadline:
                raise AssertionError(f"{deployment_id} never reached {phase}: {d['status']}")
            await asyncio.sleep(0.2)


@pytest.fixture
def api(jp_fetch: Callable[..., Any]) -> API:
    return API(jp_fetch)


def spec(bundle: Path, **overrides: Any) -> dict[str, Any]:
    """A deployment spec for a bundle, with predictor fields overridable."""
    predictor = {"instanceType": "cpu-0.5", "replicas": 1, "modelURI": str(bundle)}
    top = {"displayName": "Iris classifier", "groupName": "default"}
    for key, value in overrides.items():
        (
            top
            if key
            in ("displayName", "groupName", "description", "endpoint", "env", "updateMessage")
            else predictor
        )[key] = value
    return {**top, "predictors": [predictor]}


@dataclass
class RequestLoop:
    """Concurrent prediction requests in threads, bounded in count and time (loopback only)."""

    url: str
    payload: dict[str, Any]
    concurrency: int = 4
    max_requests: int = 5000
    auth: tuple[str, str] | None = None
    statuses: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    bodies: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        assert self.url.startswith("http://127.0.0.1:"), "load only targets loopback"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, daemon=True) for _ in range(self.concurrency)
        ]

    def _work(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            with self._lock:
                if len(self.statuses) + len(self.errors) >= self.max_requests:
                    return
            try:
                r = session.post(self.url, json=self.payload, auth=self.auth, timeout=30)
                with self._lock:
                    self.statuses.append(r.status_code)
                    if r.status_code == 200:
                        self.bodies.append(r.json())
                    else:
                        self.errors.append(f"{r.status_code}: {r.text[:200]}")
            except requests.RequestException as error:
                with self._lock:
                    self.errors.append(repr(error))

    def __enter__(self) -> RequestLoop:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    @property
    def count(self) -> int:
        return len(self.statuses)


async def wait_until(
    predicate: Callable[[], Any], limit: float = 60, what: str = "condition"
) -> Any:
    """Poll an (a)sync predicate until truthy; the limit only bounds a hang."""
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


os.environ.setdefault("PYTHONUNBUFFERED", "1")
