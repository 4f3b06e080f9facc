"""Replica rows and saved phases: written with retries, kept in memory while storage fails."""

from __future__ import annotations

import logging
from typing import Any

from ...core.errors import StorageUnavailable
from .replica import DeploymentState, Replica
from .store import ReplicaRecord, Store


class ReplicaRows:
    """What the reconciler persists: a row per replica process and each deployment's phase.

    The processes themselves are known in memory and carry their mark, so a failed write
    loses nothing: a row only speeds up adoption after a restart. A failed write waits in
    `pending` for the next tick's `flush()`.
    """

    def __init__(self, store: Store, log: Any = None) -> None:
        self.store = store
        self.log = log or logging.getLogger(__name__)
        self.pending: dict[str, ReplicaRecord | None] = {}
        self.failing = False

    @staticmethod
    def record_of(replica: Replica) -> ReplicaRecord:
        """The row of a replica as it is now."""
        handle = replica.handle
        return ReplicaRecord(
            name=replica.name,
            deployment_id=replica.deployment_id,
            slot=replica.slot,
            template=replica.template,
            # pid 0: the intent to start it (written before the spawn), completed after.
            pid=handle.pid if handle is not None else 0,
            create_time=handle.create_time if handle is not None else 0.0,
            port=replica.port,
            restarts=replica.restarts,
            start_time=replica.start_time,
        )

    async def write(self, name: str, record: ReplicaRecord | None) -> bool:
        """Store (or with None forget) a replica's row; False when storage failed (retried)."""
        self.pending.pop(name, None)
        try:
            if record is None:
                await self.store.forget_replica(name)
            else:
                await self.store.save_replica(record)
        except StorageUnavailable as error:
            self._failed(error)
            self.pending.setdefault(name, record)
            return False
        self._ok()
        return True

    async def flush(self) -> None:
        """Retry the writes that failed, in order, until one fails again."""
        for name, record in list(self.pending.items()):
            if not await self.write(name, record):
                return  # still failing: the rest waits for the next tick

    def discard(self, name: str) -> None:
        """Drop a pending write (its deployment's rows are gone)."""
        self.pending.pop(name, None)

    async def save_phase(self, state: DeploymentState) -> None:
        """Save a deployment's phase and message when they changed (kept in memory if not)."""
        current = (state.phase.value, state.message)
        if current != state.saved_phase and not state.deleted:
            try:
                await self.store.save_phase(state.id, *current)
            except StorageUnavailable as error:
                self._failed(error)  # kept in memory; saved by a later tick
                return
            self._ok()
            state.saved_phase = current

    def _failed(self, error: StorageUnavailable) -> None:
        if not self.failing:
            self.log.error("PrimeHub state is not being saved: %s", error.message)
        self.failing = True

    def _ok(self) -> None:
        if self.failing:
            self.log.warning("PrimeHub state is saved again")
        self.failing = False
