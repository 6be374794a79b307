"""Purge runs on the service side: one run with its metrics, audit event and checkpoint
(shared by the API, `tallenne purge` and the schedule), and the daily schedule itself,
which only one replica at a time carries out (a PostgreSQL advisory lock)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg
from aiohttp import web
from prometheus_client import Counter

from schemas.retention import PurgeReport
from service.audit.checkpoints import note_signer, opened_checkpoint_bucket
from service.http.keys import AUDIT_SIGNER, CHECKPOINTS, PURGE_TASKS, RESOURCES, SETTINGS
from service.keys.store import follow_erasures
from service.ops.tasks import stop_task
from service.resources import Resources
from storage import purge
from storage.audit import AuditEntry
from storage.checkpoints import CheckpointBucket, write_checkpoint
from storage.db import Scope
from storage.signed_note import NoteSigner

logger = logging.getLogger(__name__)

HELSINKI = ZoneInfo("Europe/Helsinki")
SCHEDULE_LOCK = 0x7A11E61
PURGED_ITEMS = Counter("tallenne_purged_items", "Items removed by purges", ["kind"])
PURGED_BYTES = Counter("tallenne_purged_bytes", "Object bytes removed by purges", ["kind"])


@dataclass(frozen=True)
class PurgeContext:
    """What a purge run works with: the resources, and the checkpoint bucket and signer of
    the audit checkpoint written after it."""

    resources: Resources
    checkpoints: CheckpointBucket
    signer: NoteSigner


def purge_context(app: web.Application) -> PurgeContext:
    return PurgeContext(app[RESOURCES], app[CHECKPOINTS], app[AUDIT_SIGNER])


@asynccontextmanager
async def one_off_purge_context(resources: Resources) -> AsyncIterator[PurgeContext]:
    """For a run outside the service (`tallenne purge`, benchmarks): the checkpoint bucket
    and signer built from the settings."""
    signer = note_signer(resources.settings)
    async with opened_checkpoint_bucket(resources.settings) as bucket:
        yield PurgeContext(resources, bucket, signer)


def purge_report(summary: purge.PurgeSummary) -> PurgeReport:
    """The API's form of a preview or a run."""
    return PurgeReport.model_validate(asdict(summary))


def _count(kind: str, company: str, items: int, size: int) -> None:
    PURGED_ITEMS.labels(kind=kind).inc(items)
    if size:
        PURGED_BYTES.labels(kind=kind).inc(size)


async def preview(resources: Resources, as_of: datetime, *, actor: str, actor_kind: str,
                  role: str | None, request_id: str | None = None,
                  scope: Scope | None = None) -> PurgeReport:
    """A dry run over the scope's companies (every company by default): counts only, one
    audit event."""
    async with resources.pool.acquire() as conn, conn.transaction(readonly=True):
        summary = await purge.preview(conn, as_of, scope)
    await resources.audit.append(AuditEntry(
        actor=actor, actor_kind=actor_kind, role=role, action="purge.preview",
        target_type="purge", request_id=request_id,
        company_ids=None if scope is None or scope.all_companies else sorted(scope.company_ids),
        detail={"as_of": as_of.isoformat(), "held_back": summary.held_back,
                "expired": [asdict(b) for b in summary.expired]},
    ))
    return purge_report(summary)


async def begin(
    pool: asyncpg.Pool, as_of: datetime, *, actor: str
) -> tuple[uuid.UUID, asyncpg.Connection]:
    """Register a run and hold its liveness lock on a connection of its own."""
    run_id = uuid.uuid4()
    conn = await pool.acquire()
    try:
        await purge.start_run(conn, run_id, as_of=as_of, started_by=actor, dry_run=False)
    except BaseException:
        await _give_back(pool, conn)
        raise
    return run_id, conn


async def _give_back(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    """Return a run's connection to the pool without any session lock it may still hold
    (the pool does not reset sessions: storage.db.create_pool)."""
    try:
        await purge.release_session_locks(conn)
    finally:
        await pool.release(conn)


async def carry_out(
    context: PurgeContext, run_id: uuid.UUID, conn: asyncpg.Connection, as_of: datetime, *,
    actor: str, actor_kind: str, role: str | None, request_id: str | None = None,
    on_progress: purge.Progress | None = None,
) -> PurgeReport:
    """Run the purge registered by `begin`; audit it and checkpoint the audit head."""
    def progress(kind: str, company: str, items: int, size: int) -> None:
        _count(kind, company, items, size)
        if on_progress is not None:
            on_progress(kind, company, items, size)

    resources = context.resources
    job = purge.PurgeJob(resources.pool, resources.objects, run_id, as_of,
                         batch_size=resources.settings.purge_batch_size, on_progress=progress)

    async def end(state: str, error: str | None) -> None:
        """The run's row, its connection given back and its audit event, however it ended."""
        counts = {"purged": [asdict(b) for b in job.tally.buckets()],
                  "partitions_dropped": job.dropped}
        try:
            await purge.finish_run(conn, run_id, state=state, counts=counts, error=error)
        finally:
            await _give_back(resources.pool, conn)
        await resources.audit.append(AuditEntry(
            actor=actor, actor_kind=actor_kind, role=role, action="purge.run",
            target_type="purge", target_id=str(run_id), request_id=request_id,
            outcome={"finished": "ok"}.get(state, state),
            detail={"as_of": as_of.isoformat(), "state": state, "items": job.tally.total,
                    **counts, **({"error": error} if error else {})},
        ))

    try:
        await job.run()
    except Exception as exc:
        error = f"{exc.__class__.__name__}: {getattr(exc, 'detail', exc)}"
        logger.error("purge failed", extra={"purge_id": str(run_id), "error": error})
        await end("failed", error)
    except BaseException as exc:
        # Stopped mid-run (shutdown, Ctrl-C, SIGTERM): recorded as interrupted, never as
        # finished, so that the schedule runs it again; then the stop goes on.
        logger.warning("purge interrupted", extra={"purge_id": str(run_id)})
        await end("interrupted", f"interrupted ({exc.__class__.__name__}) before it "
                  "finished; the next run purges the rest")
        await follow_erasures(resources)  # customers it erased leave the key snapshot
        raise
    else:
        await end("finished", None)
    try:
        await write_checkpoint(resources.pool, context.checkpoints, context.signer)
    except Exception as exc:
        logger.warning("audit checkpoint after purge failed", extra={"error": repr(exc)})
    await follow_erasures(resources)  # expired customers' keys leave the key snapshot too
    async with resources.pool.acquire() as reader:
        summary = await purge.run_report(reader, run_id)
    assert summary is not None
    return purge_report(summary)


async def run_now(context: PurgeContext, as_of: datetime | None = None, *, actor: str,
                  actor_kind: str = "system", role: str | None = None,
                  on_progress: purge.Progress | None = None) -> PurgeReport:
    moment = as_of or datetime.now(UTC)
    run_id, conn = await begin(context.resources.pool, moment, actor=actor)
    return await carry_out(context, run_id, conn, moment, actor=actor, actor_kind=actor_kind,
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


def _today_start() -> datetime:
    return datetime.combine(datetime.now(HELSINKI).date(), time(0), HELSINKI)


async def scheduled_once(context: PurgeContext) -> PurgeReport | None:
    """Run today's purge unless another replica holds the lock or already ran it today (a
    run that was interrupted or failed does not count)."""
    async with context.resources.pool.acquire() as conn:
        try:
            if not await purge.try_session_lock(conn, SCHEDULE_LOCK):
                return None
            if await purge.finished_run_since(conn, "scheduler", _today_start()):
                return None
            return await run_now(context, actor="scheduler")
        finally:
            await purge.release_session_locks(conn)


async def resume_interrupted(context: PurgeContext) -> PurgeReport | None:
    """At start-up: when today's scheduled run was cut short (a replica stopped or died
    mid-run) and none has finished since, run it now rather than tomorrow."""
    async with context.resources.pool.acquire() as conn:
        cut_short = await purge.interrupted_run_since(conn, "scheduler", _today_start())
    return await scheduled_once(context) if cut_short else None


async def _schedule_forever(context: PurgeContext, at: str) -> None:
    try:
        await resume_interrupted(context)
    except Exception as exc:
        logger.error("resuming an interrupted purge failed", extra={"error": repr(exc)})
    while True:
        due = next_run_after(datetime.now(UTC), at)
        await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
        try:
            await scheduled_once(context)
        except Exception as exc:
            logger.error("scheduled purge failed", extra={"error": repr(exc)})


async def purge_scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    """The daily purge task (when enabled) and the API's background runs."""
    settings = app[SETTINGS]
    app[PURGE_TASKS] = set()
    task = None
    if settings.purge_enabled and settings.purge_at:
        task = asyncio.create_task(_schedule_forever(purge_context(app), settings.purge_at),
                                   name="purge-schedule")
    yield
    running = [t for t in (task, *app[PURGE_TASKS]) if t is not None]
    await asyncio.gather(*(stop_task(t) for t in running))


