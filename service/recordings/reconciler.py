"""Makes PostgreSQL and S3 agree after a crash: removes rows left `pending` past the grace
period (with whatever part of their object exists) and objects under recordings/ with no row.

The bucket is listed a page at a time, and each page's rows are read after the page is listed:
every row is inserted before its object is uploaded, so an object that is listed has its row
visible by the time the rows are read, unless that row is gone for good. One instance lists
at a time (a PostgreSQL advisory lock), so replicas do not all walk the bucket at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta

import asyncpg
from aiohttp import web

from service.http.keys import OBJECTS, POOL
from service.ops.tasks import stop_task
from service.recordings.ingest import PENDING_GRACE
from storage import recordings as store
from storage import session_locks
from storage.audit import AuditEntry, append_batch
from storage.db import Scope, scoped_on
from storage.errors import StorageError
from storage.objects import ObjectStore

logger = logging.getLogger(__name__)

PREFIX = "recordings/"
BATCH = 1000
RECONCILE_LOCK = 0x7A11E62
EVERY = timedelta(minutes=10)


@dataclass
class ReconcileReport:
    stale_pending_rows: list[str] = field(default_factory=list)
    orphan_objects: list[str] = field(default_factory=list)
    failed_deletes: list[str] = field(default_factory=list)
    skipped: bool = False  # another instance was reconciling

    @property
    def changed(self) -> bool:
        return bool(self.stale_pending_rows or self.orphan_objects)


async def reconcile(
    pool: asyncpg.Pool, objects: ObjectStore, *, grace: timedelta = PENDING_GRACE,
    wait: bool = True, on_checked: Callable[[int], None] | None = None,
) -> ReconcileReport:
    """One pass; safe to repeat. One instance at a time lists the bucket: the others wait
    for it, or with `wait=False` (the replicas' background passes) skip this round.
    `on_checked` is told how many objects each listed page held, as the pass goes."""
    async with pool.acquire() as lock_conn:
        try:
            if wait:
                await session_locks.lock(lock_conn, RECONCILE_LOCK)
            elif not await session_locks.try_lock(lock_conn, RECONCILE_LOCK):
                return ReconcileReport(skipped=True)
            return await _reconcile(lock_conn, objects, grace, on_checked)
        finally:
            # Also when the wait for the lock was cut short: the pool keeps sessions as
            # they are (storage.db.create_pool), so nothing may be left held.
            await session_locks.unlock_all(lock_conn)


async def _reconcile(
    conn: asyncpg.Connection, objects: ObjectStore, grace: timedelta,
    on_checked: Callable[[int], None] | None = None,
) -> ReconcileReport:
    """The pass itself, on the connection that holds the lock: it needs no second one, so it
    cannot wait on a pool it is itself holding a connection of."""
    report = ReconcileReport()
    everything = Scope.everything()

    async with scoped_on(conn, everything):
        stale = await store.stale_pending(conn, grace)
    stale_keys = {object_key for _, object_key in stale}
    async for batch in objects.iter_keys(PREFIX, BATCH):
        async with scoped_on(conn, everything):
            known = await store.known_object_keys(conn, batch)
        orphans = [key for key in batch if key not in known and key not in stale_keys]
        if orphans:
            report.failed_deletes += await objects.delete(orphans)
            report.orphan_objects += orphans
        if on_checked is not None:
            on_checked(len(batch))

    for recording_id, object_key in stale:
        # The row goes first, and only if it is still pending: an upload that completed
        # while the bucket was walked keeps its audio. A crash in between leaves an object
        # without a row, which the next pass removes as an orphan.
        async with scoped_on(conn, everything):
            if await store.delete_pending(conn, recording_id) is None:
                continue
        report.stale_pending_rows.append(str(recording_id))
        report.failed_deletes += await objects.delete([object_key])

    if report.changed:
        await append_batch(conn, [AuditEntry(
            actor="reconciler", actor_kind="system", action="recording.reconcile",
            detail={"stale_pending_rows": report.stale_pending_rows,
                    "orphan_objects": report.orphan_objects,
                    "failed_deletes": report.failed_deletes},
        )])
        logger.warning(
            "reconciled recordings",
            extra={"stale_pending_rows": len(report.stale_pending_rows),
                   "orphan_objects": len(report.orphan_objects)},
        )
    return report


async def reconcile_forever(pool: asyncpg.Pool, objects: ObjectStore, every: timedelta) -> None:
    while True:
        try:
            await reconcile(pool, objects, wait=False)
        except (StorageError, asyncpg.PostgresError, OSError) as exc:
            logger.warning("reconciliation failed; retrying later", extra={"error": repr(exc)})
        await asyncio.sleep(every.total_seconds())


async def reconciler_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: reconcile at start-up and then every ten minutes, in the background."""
    task = asyncio.create_task(
        reconcile_forever(app[POOL], app[OBJECTS], EVERY), name="recording-reconciler"
    )
    yield
    await stop_task(task)
