"""SQLite (WAL) persistence of the local engine's desired state, replicas, jobs and secrets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError as PydanticError

from ...core.errors import Conflict, NotFound, StorageUnavailable
from ...core.ids import id_problem
from ...core.jobs import MAX_JOBS_KEPT, JobRecord
from ...core.models import (
    DeploymentRecord,
    DeploymentSpec,
    HistoryEntry,
    Phase,
    describe_problems,
    pydantic_problems,
)
from .files import private_dir, restrict

T = TypeVar("T")
WAL = ("-wal", "-shm", "-journal")
log = logging.getLogger(__name__)

# A busy database (another connection writing) or a passing I/O error may clear up: such a
# write is tried again with a doubling pause, at most this many times in all (SQLite's own
# busy timeout of 2 s comes on top for a locked database).
WRITE_ATTEMPTS = 4
FIRST_RETRY_PAUSE = 0.05

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
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    deployment_id TEXT NOT NULL,
    record TEXT NOT NULL,
    pid INTEGER NOT NULL DEFAULT 0,
    create_time REAL NOT NULL DEFAULT 0,
    restarts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_deployment ON jobs (deployment_id, seq);
"""


@dataclass
class StoredDeployment:
    """A row of the deployments table, decoded.

    `problem` is set when the row no longer validates (written by another version, or
    damaged): `deployment` is then a placeholder built from what can be read, and the
    engine quarantines it (Failed, nothing runs) rather than refusing to start.
    """

    seq: int
    deployment: DeploymentRecord
    phase: str
    message: str
    problem: str = ""


@dataclass
class StoredJob:
    """A row of the jobs table: the job, and the process running it (pid 0: none)."""

    seq: int
    job: JobRecord
    pid: int = 0
    create_time: float = 0.0
    restarts: int = 0


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
        """Run `fn` on the SQLite thread; storage failures become StorageUnavailable.

        Transient failures (busy, locked, I/O error) are retried with bounded backoff; a full
        disk or a read-only database is reported at once (waiting would not help the caller).
        """
        loop = asyncio.get_running_loop()
        pause = FIRST_RETRY_PAUSE
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                return await loop.run_in_executor(self._executor, fn, *args)
            except (sqlite3.IntegrityError, sqlite3.ProgrammingError):
                raise  # a constraint or a bug in our SQL, not the storage
            except sqlite3.DatabaseError as error:
                text = str(error)
                if attempt == WRITE_ATTEMPTS or not _transient(text):
                    log.error("the state database %s failed: %s", self.path, text)
                    raise StorageUnavailable(_storage_message(self.path, text)) from None
                log.warning("the state database %s failed (%s); retrying", self.path, text)
            await asyncio.sleep(pause)
            pause *= 2
        raise AssertionError("unreachable")

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
            conn.execute("PRAGMA busy_timeout=2000")
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
    def _decode(row: tuple) -> StoredDeployment | None:
        seq, id_, spec, history, created, updated, version, phase, message = row
        try:
            try:
                parsed = DeploymentSpec.model_validate_json(spec)
            except PydanticError as error:
                problems = pydantic_problems(error)
                for p in problems:
                    p["field"] = f"spec.{p['field']}" if p["field"] else "spec"
                raise ValueError(describe_problems(problems)) from None
            deployment = DeploymentRecord(id=id_, spec=parsed, resource_version=str(version))
            entries = json.loads(history)
            if not isinstance(entries, list):
                raise ValueError("history: not a list")
            for index, entry in enumerate(entries):
                try:
                    deployment.status.history.append(HistoryEntry.model_validate(entry))
                except PydanticError as error:
                    raise ValueError(f"history entry {index + 1}: {_reason(error)}") from None
            deployment.status.creation_time = created
            deployment.status.last_updated = updated
        except (PydanticError, ValueError, TypeError) as error:
            return _quarantined(row, _reason(error))
        return StoredDeployment(seq, deployment, phase, message)

    _COLUMNS = "seq, id, spec, history, creation_time, last_updated, version, phase, message"

    async def load_all(self) -> list[StoredDeployment]:
        """Every deployment in creation order."""

        def _load() -> list[StoredDeployment]:
            rows = self._db().execute(f"SELECT {self._COLUMNS} FROM deployments ORDER BY seq")
            decoded = [self._decode(r) for r in rows.fetchall()]
            return [d for d in decoded if d is not None]

        return await self._run(_load)

    async def insert(self, deployment: DeploymentRecord) -> int:
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
        deployment: DeploymentRecord,
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
                _rollback(db)
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
            try:
                db.execute("DELETE FROM deployments WHERE id = ?", (deployment_id,))
                db.execute("DELETE FROM clients WHERE deployment_id = ?", (deployment_id,))
                db.execute("DELETE FROM replicas WHERE deployment_id = ?", (deployment_id,))
                db.execute("DELETE FROM jobs WHERE deployment_id = ?", (deployment_id,))
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise

        await self._run(_delete)

    async def client_hashes(self, deployment_id: str) -> dict[str, str]:
        def _hashes() -> dict[str, str]:
            rows = self._db().execute(
                "SELECT name, hash FROM clients WHERE deployment_id = ?", (deployment_id,)
            )
            return dict(rows.fetchall())

        return await self._run(_hashes)

    # ---- replicas ---------------------------------------------------------------------

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

    # ---- jobs -------------------------------------------------------------------------

    async def jobs(self) -> list[StoredJob]:
        """Every job, oldest first; rows that no longer validate are dropped (and logged)."""

        def _all() -> list[StoredJob]:
            rows = self._db().execute(
                "SELECT seq, id, record, pid, create_time, restarts FROM jobs ORDER BY seq"
            )
            found = []
            for seq, id_, record, pid, created, restarts in rows.fetchall():
                try:
                    job = JobRecord.model_validate_json(record)
                except PydanticError as error:
                    log.error("job %r in the state database cannot be read: %s", id_, error)
                    continue
                found.append(StoredJob(seq, job, pid, created, restarts))
            return found

        return await self._run(_all)

    async def insert_job(self, job: JobRecord) -> tuple[int, list[str]]:
        """Store a new job; returns its seq and the ids of the deployment's finished jobs
        beyond the newest MAX_JOBS_KEPT, which are removed in the same transaction."""

        def _insert() -> tuple[int, list[str]]:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                cursor = db.execute(
                    "INSERT INTO jobs (id, deployment_id, record) VALUES (?, ?, ?)",
                    (job.id, job.deployment_id, job.model_dump_json(by_alias=True)),
                )
                rows = db.execute(
                    "SELECT id, record FROM jobs WHERE deployment_id = ? ORDER BY seq DESC"
                    " LIMIT -1 OFFSET ?",
                    (job.deployment_id, MAX_JOBS_KEPT),
                ).fetchall()
                removed = [id_ for id_, record in rows if _finished(record)]
                db.executemany("DELETE FROM jobs WHERE id = ?", [(id_,) for id_ in removed])
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
            assert cursor.lastrowid is not None
            return cursor.lastrowid, removed

        return await self._run(_insert)

    async def save_job(self, stored: StoredJob) -> None:
        """Write a job's record and process (a row removed meanwhile stays removed)."""

        def _save() -> None:
            self._db().execute(
                "UPDATE jobs SET record = ?, pid = ?, create_time = ?, restarts = ? WHERE id = ?",
                (
                    stored.job.model_dump_json(by_alias=True),
                    stored.pid,
                    stored.create_time,
                    stored.restarts,
                    stored.job.id,
                ),
            )

        await self._run(_save)

    async def delete_job(self, job_id: str) -> None:
        await self._run(lambda: self._db().execute("DELETE FROM jobs WHERE id = ?", (job_id,)))


# ---- failures and quarantine --------------------------------------------------------------

_TRANSIENT = ("locked", "busy", "disk i/o error")


def _finished(record: str) -> bool:
    """Whether a stored job record is finished (an unreadable one counts as finished)."""
    try:
        return JobRecord.model_validate_json(record).phase.finished
    except PydanticError:
        return True


def _transient(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in _TRANSIENT)


def _storage_message(path: Path, text: str) -> str:
    return (
        f"the deployment state cannot be saved ({text}): check free space and permissions "
        f"of {path.parent}, then try again; running deployments keep serving meanwhile"
    )


def _rollback(db: sqlite3.Connection) -> None:
    # A failed write may have ended the transaction already (SQLite rolls back on a full disk).
    with contextlib.suppress(sqlite3.Error):
        db.execute("ROLLBACK")


def _reason(error: Exception) -> str:
    if isinstance(error, PydanticError):
        return describe_problems(pydantic_problems(error))
    return str(error) or type(error).__name__


def _quarantined(row: tuple, reason: str) -> StoredDeployment | None:
    """A placeholder for a row that does not validate, from whatever fields can be read."""
    seq, id_, spec, history, created, updated, version, _phase, _message = row
    if not isinstance(id_, str) or id_problem(id_):
        log.error("the state database holds a deployment with an unusable id %r: ignored", id_)
        return None
    raw = _json_object(spec)
    predictors = raw.get("predictors")
    first = predictors[0] if isinstance(predictors, list) and predictors else {}
    first = first if isinstance(first, dict) else {}
    readable = {
        "displayName": _text(raw.get("displayName"), id_),
        "groupName": _text(raw.get("groupName"), "unknown"),
        "userName": _text(raw.get("userName"), ""),
        "description": _text(raw.get("description"), ""),
        "predictors": [
            {
                "name": _text(first.get("name"), "predictor1"),
                "instanceType": _text(first.get("instanceType"), "unknown"),
                "modelURI": _text(first.get("modelURI"), "unreadable"),
            }
        ],
    }
    try:
        placeholder = DeploymentSpec.model_validate(readable)
    except PydanticError:
        placeholder = DeploymentSpec.model_validate(
            {
                "displayName": id_,
                "groupName": readable["groupName"],
                "predictors": [{"instanceType": "unknown", "modelURI": "unreadable"}],
            }
        )
    deployment = DeploymentRecord(id=id_, spec=placeholder, resource_version=str(version))
    entries = _json_list(history)
    for entry in entries:  # keep the history that still reads: it holds the user's specs
        with contextlib.suppress(PydanticError, ValueError, TypeError):
            deployment.status.history.append(HistoryEntry.model_validate(entry))
    deployment.status.creation_time = created if isinstance(created, str) else None
    deployment.status.last_updated = updated if isinstance(updated, str) else None
    message = (
        f"the stored deployment cannot be read ({reason}); nothing runs for it: "
        "delete it and create it again"
    )
    log.error("deployment %s is quarantined: %s", id_, reason)
    return StoredDeployment(seq, deployment, Phase.FAILED.value, message, problem=reason)


def _json_object(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _json_list(text: Any) -> list[Any]:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return []
    return value if isinstance(value, list) else []


def _text(value: Any, default: str) -> str:
    return value.strip() if isinstance(value, str) and 0 < len(value.strip()) <= 255 else default
