"""SQLite (WAL) persistence of the local engine's desired state, replicas and secrets."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ...core.errors import Conflict, NotFound
from ...core.models import Deployment, DeploymentSpec, HistoryEntry
from .files import private_dir, restrict

T = TypeVar("T")
WAL = ("-wal", "-shm", "-journal")

SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    history TEXT NOT NULL,
    creation_time TEXT NOT NULL,
    last_updated TEXT NOT NULL,
    version INTEGER NOT NULL,
    phase TEXT NOT NULL DEFAULT 'Deploying',
    message TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS clients (
    deployment_id TEXT NOT NULL,
    name TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (deployment_id, name)
);
CREATE TABLE IF NOT EXISTS replicas (
    name TEXT PRIMARY KEY,
    deployment_id TEXT NOT NULL,
    slot INTEGER NOT NULL,
    template TEXT NOT NULL,
    pid INTEGER NOT NULL,
    create_time REAL NOT NULL,
    port INTEGER NOT NULL,
    restarts INTEGER NOT NULL DEFAULT 0,
    start_time TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass
class StoredDeployment:
    """A row of the deployments table, decoded."""

    seq: int
    deployment: Deployment
    phase: str
    message: str


@dataclass
class ReplicaRecord:
    """Where a replica process was running, so a restarted server can adopt it."""

    name: str
    deployment_id: str
    slot: int
    template: str
    pid: int
    create_time: float
    port: int
    restarts: int
    start_time: str | None


class Store:
    """All SQLite access, serialized on one thread so the event loop never blocks on it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="primehub-sqlite")
        self._conn: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            private_dir(self.path.parent)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            # Client hashes live here: 0600, which SQLite copies to the -wal and -shm files.
            for path in (self.path, *(self.path.with_name(self.path.name + s) for s in WAL)):
                restrict(path)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(SCHEMA)
            self._conn = conn
        return self._conn

    async def open(self) -> None:
        await self._run(self._db)

    async def close(self) -> None:
        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await self._run(_close)
        self._executor.shutdown(wait=True)

    # ---- deployments ------------------------------------------------------------------

    @staticmethod
    def _decode(row: tuple) -> StoredDeployment:
        seq, id_, spec, history, created, updated, version, phase, message = row
        deployment = Deployment(
            id=id_,
            spec=DeploymentSpec.model_validate_json(spec),
            resource_version=str(version),
        )
        deployment.status.history = [HistoryEntry.model_validate(h) for h in json.loads(history)]
        deployment.status.creation_time = created
        deployment.status.last_updated = updated
        return StoredDeployment(seq, deployment, phase, message)

    _COLUMNS = "seq, id, spec, history, creation_time, last_updated, version, phase, message"

    async def load_all(self) -> list[StoredDeployment]:
        """Every deployment in creation order."""

        def _load() -> list[StoredDeployment]:
            rows = self._db().execute(f"SELECT {self._COLUMNS} FROM deployments ORDER BY seq")
            return [self._decode(r) for r in rows.fetchall()]

        return await self._run(_load)

    async def insert(self, deployment: Deployment) -> int:
        """Insert a new deployment (version 1); Conflict if the id exists. Returns its seq."""

        def _insert() -> int:
            db = self._db()
            try:
                cursor = db.execute(
                    "INSERT INTO deployments (id, spec, history, creation_time, last_updated,"
                    " version, phase, message) VALUES (?, ?, ?, ?, ?, 1, ?, '')",
                    (
                        deployment.id,
                        json.dumps(deployment.spec.to_json()),
                        json.dumps([h.to_json() for h in deployment.status.history]),
                        deployment.status.creation_time,
                        deployment.status.last_updated,
                        deployment.status.phase.value,
                    ),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"deployment '{deployment.id}' already exists") from None
            assert cursor.lastrowid is not None
            return cursor.lastrowid

        return await self._run(_insert)

    async def update(
        self,
        deployment: Deployment,
        expected_version: int,
        client_secret: tuple[str, str] | None,
    ) -> int:
        """Store a new spec and history if the version matches; returns the new version."""

        def _update() -> int:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT version FROM deployments WHERE id = ?", (deployment.id,)
                ).fetchone()
                if row is None:
                    raise NotFound(f"deployment '{deployment.id}' not found")
                if row[0] != expected_version:
                    raise Conflict(
                        f"deployment '{deployment.id}' was changed by someone else "
                        f"(resourceVersion {expected_version} is stale, current is {row[0]}); "
                        "reload it and apply your change again"
                    )
                db.execute(
                    "UPDATE deployments SET spec = ?, history = ?, last_updated = ?, version = ?"
                    " WHERE id = ?",
                    (
                        json.dumps(deployment.spec.to_json()),
                        json.dumps([h.to_json() for h in deployment.status.history]),
                        deployment.status.last_updated,
                        expected_version + 1,
                        deployment.id,
                    ),
                )
                if client_secret is not None:
                    db.execute(
                        "INSERT OR REPLACE INTO clients (deployment_id, name, hash)"
                        " VALUES (?, ?, ?)",
                        (deployment.id, *client_secret),
                    )
                names = [c.name for c in deployment.spec.endpoint.clients]
                placeholders = ",".join("?" * len(names)) or "''"
                db.execute(
                    f"DELETE FROM clients WHERE deployment_id = ? AND name NOT IN ({placeholders})",
                    (deployment.id, *names),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return expected_version + 1

        return await self._run(_update)

    async def save_phase(self, deployment_id: str, phase: str, message: str) -> None:
        """Remember the last observed phase, shown until the reconciler knows better."""

        def _save() -> None:
            self._db().execute(
                "UPDATE deployments SET phase = ?, message = ? WHERE id = ?",
                (phase, message, deployment_id),
            )

        await self._run(_save)

    async def delete(self, deployment_id: str) -> None:
        def _delete() -> None:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM deployments WHERE id = ?", (deployment_id,))
            db.execute("DELETE FROM clients WHERE deployment_id = ?", (deployment_id,))
            db.execute("DELETE FROM replicas WHERE deployment_id = ?", (deployment_id,))
            db.execute("COMMIT")

        await self._run(_delete)

    async def client_hashes(self, deployment_id: str) -> dict[str, str]:
        def _hashes() -> dict[str, str]:
            rows = self._db().execute(
                "SELECT name, hash FROM clients WHERE deployment_id = ?", (deployment_id,)
            )
            return dict(rows.fetchall())

        return await self._run(_hashes)

    # ---- replicas and meta ------------------------------------------------------------

    async def replicas(self) -> list[ReplicaRecord]:
        def _all() -> list[ReplicaRecord]:
            rows = self._db().execute(
                "SELECT name, deployment_id, slot, template, pid, create_time, port, restarts,"
                " start_time FROM replicas"
            )
            return [ReplicaRecord(*r) for r in rows.fetchall()]

        return await self._run(_all)

    async def save_replica(self, record: ReplicaRecord) -> None:
        def _save() -> None:
            self._db().execute(
                "INSERT OR REPLACE INTO replicas (name, deployment_id, slot, template, pid,"
                " create_time, port, restarts, start_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.name,
                    record.deployment_id,
                    record.slot,
                    record.template,
                    record.pid,
                    record.create_time,
                    record.port,
                    record.restarts,
                    record.start_time,
                ),
            )

        await self._run(_save)

    async def forget_replica(self, name: str) -> None:
        await self._run(lambda: self._db().execute("DELETE FROM replicas WHERE name = ?", (name,)))

    async def get_meta(self, key: str) -> str | None:
        def _get() -> str | None:
            row = self._db().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return None if row is None else row[0]

        return await self._run(_get)

    async def set_meta(self, key: str, value: str) -> None:
        await self._run(
            lambda: self._db().execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value)
            )
        )
