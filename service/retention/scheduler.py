"""Purge runs on the service side: one run with its metrics, audit event and checkpoint
(shared by the API, `tallenne purge` and the schedule), and the daily schedule itself,
which only one replica at a time carries out (a PostgreSQL advisory lock)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg
from aiohttp import web
from prometheus_client import Counter

from schemas.retention import PurgeReport
from service.http.keys import (
    AUDIT,
    AUDIT_SIGNER,
    CHECKPOINTS,
    OBJECTS,
    POOL,
    PURGE_TASKS,
    SETTINGS,
)
from service.keys.store import follow_erasures
from service.ops.tasks import stop_task
from storage import purge
from storage.audit import AuditEntry
from storage.checkpoints import write_checkpoint
from storage.db import Scope

logger = logging.getLogger(__name__)

HELSINKI = ZoneInfo("Europe/Helsinki")
SCHEDULE_LOCK = 0x7A11E61
PURGED_ITEMS = Counter("tallenne_purged_items", "Items removed by purges", ["kind"])
PURGED_BYTES = Counter("tallenne_purged_bytes", "Object bytes removed by purges", ["kind"])


def _count(kind: str, company: str, items: int, size: int) -> None:
    PURGED_ITEMS.labels(kind=kind).inc(items)
    if size:
        PURGED_BYTES.labels(kind=kind).inc(size)


async def preview(app: web.Application, as_of: datetime, *, actor: str, actor_kind: str,
                  role: str | None, request_id: str | None = None,
                  scope: Scope | None = None) -> PurgeReport:
    """A dry run over the scope's companies (every company by default): counts only, one
    audit event."""
    async with app[POOL].acquire() as conn, conn.transaction(readonly=True):
        report = await purge.preview(conn, as_of, scope)
    await app[AUDIT].append(AuditEntry(
        actor=actor, actor_kind=actor_kind, role=role, action="purge.preview",
        target_type="purge", request_id=request_id,
        company_ids=None if scope is None or scope.all_companies else sorted(scope.company_ids),
        detail={"as_of": as_of.isoformat(), "held_back": report.held_back,
                "expired": [b.model_dump() for b in report.expired]},
    ))
    return report


async def begin(
    app: web.Application, as_of: datetime, *, actor: str
) -> tuple[uuid.UUID, asyncpg.Connection]:
    """Register a run and hold its liveness lock on a connection of its own."""
    run_id = uuid.uuid4()
    conn = await app[POOL].acquire()
    try:
        await purge.start_run(conn, run_id, as_of=as_of, started_by=actor, dry_run=False)
    except BaseException:
        await _give_back(app, conn)
        raise
    return run_id, conn


async def _give_back(app: web.Application, conn: asyncpg.Connection) -> None:
    """Return a run's connection to the pool without any session lock it may still hold
    (the pool does not reset sessions: storage.db.create_pool)."""
    try:
        await conn.execute("SELECT pg_advisory_unlock_all()")
    finally:
        await app[POOL].release(conn)


async def carry_out(
    app: web.Application, run_id: uuid.UUID, conn: asyncpg.Connection, as_of: datetime, *,
    actor: str, actor_kind: str, role: str | None, request_id: str | None = None,
    on_progress: purge.Progress | None = None,
) -> PurgeReport:
    """Run the purge registered by `begin`; audit it and checkpoint the audit head."""
    def progress(kind: str, company: str, items: int, size: int) -> None:
        _count(kind, company, items, size)
        if on_progress is not None:
            on_progress(kind, company, items, size)

    job = purge.PurgeJob(app[POOL], app[OBJECTS], run_id, as_of,
                         batch_size=app[SETTINGS].purge_batch_size, on_progress=progress)
    state, error = "finished", None
    try:
        await job.run()
    except Exception as exc:
        state, error = "failed", f"{exc.__class__.__name__}: {getattr(exc, 'detail', exc)}"
        logger.error("purge failed", extra={"purge_id": str(run_id), "error": error})
    finally:
        counts = {"purged": [b.model_dump() for b in job.tally.buckets()],
                  "partitions_dropped": job.dropped}
        try:
            await purge.finish_run(conn, run_id, state=state, counts=counts, error=error)
        finally:
            await _give_back(app, conn)
    await app[AUDIT].append(AuditEntry(
        actor=actor, actor_kind=actor_kind, role=role, action="purge.run",
        target_type="purge", target_id=str(run_id), request_id=request_id,
        outcome="ok" if state == "finished" else "failed",
        detail={"as_of": as_of.isoformat(), "items": job.tally.total, **counts,
                **({"error": error} if error else {})},
    ))
    try:
        await write_checkpoint(app[POOL], app[CHECKPOINTS], app[AUDIT_SIGNER])
    except Exception as exc:  # noqa: BLE001 - the purge is done; the periodic task retries
        logger.warning("audit checkpoint after purge failed", extra={"error": repr(exc)})
    await follow_erasures(app)  # expired customers' keys leave the key snapshot too
    async with app[POOL].acquire() as reader:
        report = await purge.run_report(reader, run_id)
    assert report is not None
    return report


async def run_now(app: web.Application, as_of: datetime | None = None, *, actor: str,
                  actor_kind: str = "system", role: str | None = None,
                  on_progress: purge.Progress | None = None) -> PurgeReport:
    moment = as_of or datetime.now(UTC)
    run_id, conn = await begin(app, moment, actor=actor)
    return await carry_out(app, run_id, conn, moment, actor=actor, actor_kind=actor_kind,
                           role=role, on_progress=on_progress)


# --- the daily schedule --------------------------------------------------------------------


def next_run_after(now: datetime, at: str) -> datetime:
    hour, minute = (int(x) for x in at.split(":"))
    local = now.astimezone(HELSINKI)
    candidate = datetime.combine(local.date(), time(hour, minute), HELSINKI)
    if candidate <= local:
        candidate = datetime.combine(local.date() + timedelta(days=1), time(hour, minute),
                                     HELSINKI)
    return candidate.astimezone(UTC)


async def scheduled_once(app: web.Application) -> PurgeReport | None:
    """Run today's purge unless another replica holds the lock or already ran it today."""
    async with app[POOL].acquire() as conn:
        try:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", SCHEDULE_LOCK):
                return None
            today = datetime.now(HELSINKI).date()
            start = datetime.combine(today, time(0), HELSINKI)
            if await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM purge_runs WHERE started_by = 'scheduler'"
                " AND NOT dry_run AND state = 'finished' AND started_at >= $1)", start
            ):
                return None
            return await run_now(app, actor="scheduler")
        finally:
            await conn.execute("SELECT pg_advisory_unlock_all()")


async def _schedule_forever(app: web.Application, at: str) -> None:
    while True:
        due = next_run_after(datetime.now(UTC), at)
        await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
        try:
            await scheduled_once(app)
        except Exception as exc:  # noqa: BLE001 - tomorrow's run must still happen
            logger.error("scheduled purge failed", extra={"error": repr(exc)})


async def purge_scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    """The daily purge task (when enabled) and the API's background runs."""
    settings = app[SETTINGS]
    app[PURGE_TASKS] = set()
    task = None
    if settings.purge_enabled and settings.purge_at:
        task = asyncio.create_task(_schedule_forever(app, settings.purge_at),
                                   name="purge-schedule")
    yield
    running = [t for t in (task, *app[PURGE_TASKS]) if t is not None]
    await asyncio.gather(*(stop_task(t) for t in running))


