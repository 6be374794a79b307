"""The scrub: re-reads the stored object of every recording, opens it segment by segment
(AES-GCM, as replay does) and verifies the SHA-256 of the whole plaintext against the one
recorded at ingest. What fails is marked `corrupt` and raises the integrity alarm.

Replay authenticates every segment it sends but does not re-hash whole files; the scrub is
what re-checks every object end to end, including ones nobody replays. Each recording is
re-verified at least every `scrub_every_hours`: the service looks for recordings due every
ten minutes and verifies them at no more than `scrub_rate_mb_s`, one replica at a time (a
PostgreSQL advisory lock, as the reconciler). A pass remembers its progress per recording
(recording_scrubs), so one cut short by a restart resumes where it stopped.
`tallenne scrub` runs one full pass at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
from aiohttp import web
from prometheus_client import Counter, Gauge

from service.http.keys import RESOURCES
from service.ops.tasks import stop_task
from service.recordings.integrity import ALARM_ACTION, raise_alarm
from service.resources import Resources
from storage import keys, session_locks
from storage import recordings as store
from storage import scrub as scrub_store
from storage.audit import AuditEntry
from storage.db import Scope, scoped_on
from storage.errors import IntegrityError, KeyDestroyed, NotFound, ObjectMissing, StorageError
from storage.recordings import Recording
from storage.sealed_audio import iter_plaintext

logger = logging.getLogger(__name__)

SCRUB_LOCK = 0x7A11E64  # its own: a scrub pass (hours) must hold up no other lock's holder
BATCH = 100
POLL = timedelta(minutes=10)  # how often a replica looks for recordings due
FIRST_LOOK = timedelta(minutes=1)  # after start-up, so a rolling restart settles first
PROGRESS_EVERY = 100  # objects between progress log lines

SCRUBBED_OBJECTS = Counter(
    "tallenne_scrub_objects", "Stored objects the scrub re-read, by outcome", ["outcome"])
SCRUBBED_BYTES = Counter("tallenne_scrub_bytes", "Audio bytes the scrub re-read and verified")
PASS_DUE = Gauge("tallenne_scrub_pass_due_objects",
                 "Objects due in the scrub pass under way here (0 when none runs)")
PASS_DONE = Gauge("tallenne_scrub_pass_done_objects",
                  "Objects the scrub pass under way here has re-read so far")
LAST_PASS_END = Gauge("tallenne_scrub_last_pass_end_seconds",
                      "Unix time the last scrub pass of this process ended")


@dataclass
class ScrubReport:
    due: int = 0
    due_bytes: int = 0
    checked: int = 0
    bytes: int = 0
    corrupt: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # stored, but no object in the bucket
    unreadable: list[str] = field(default_factory=list)  # the key is destroyed (erasure)
    stopped: str | None = None  # why the pass ended early (the object store went away)
    skipped: bool = False  # another instance was scrubbing

    @property
    def findings(self) -> bool:
        return bool(self.corrupt or self.missing)

    def summary(self) -> dict[str, object]:
        return {"due": self.due, "due_bytes": self.due_bytes, "checked": self.checked,
                "bytes": self.bytes, "corrupt": self.corrupt, "missing": self.missing,
                "unreadable": self.unreadable, "stopped": self.stopped}


class Pace:
    """Keeps the bytes read at or under `bytes_per_s` on average (None: no limit)."""

    def __init__(self, bytes_per_s: float | None) -> None:
        self.rate = bytes_per_s
        self.started = time.monotonic()
        self.spent = 0

    async def spend(self, n: int) -> None:
        if not self.rate:
            return
        self.spent += n
        ahead = self.spent / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            await asyncio.sleep(ahead)


Progress = Callable[[ScrubReport], None]


async def scrub(
    resources: Resources, *, verified_before: datetime, rate: float | None = None,
    wait: bool = True, actor: str = "scrub", on_start: Progress | None = None,
    on_progress: Progress | None = None, on_wait: Callable[[], None] | None = None,
) -> ScrubReport:
    """One pass over the stored recordings last verified (or stored) before
    `verified_before`, reading at most `rate` bytes per second. One instance at a time:
    the others wait (`on_wait` is told), or with `wait=False` skip this round."""
    async with resources.pool.acquire() as conn:
        try:
            if not await session_locks.try_lock(conn, SCRUB_LOCK):
                if not wait:
                    return ScrubReport(skipped=True)
                if on_wait is not None:
                    on_wait()
                await session_locks.lock(conn, SCRUB_LOCK)
            return await _scrub(resources, conn, verified_before, Pace(rate), actor,
                                on_start, on_progress)
        finally:
            # The pool keeps sessions as they are (storage.db.create_pool).
            await session_locks.unlock_all(conn)


async def _scrub(
    resources: Resources, conn: asyncpg.Connection, verified_before: datetime, pace: Pace,
    actor: str, on_start: Progress | None, on_progress: Progress | None,
) -> ScrubReport:
    """The pass, on the connection that holds the lock (its only connection)."""
    everything = Scope.everything()
    async with scoped_on(conn, everything):
        due = await scrub_store.due_totals(conn, verified_before)
    report = ScrubReport(due=due.objects, due_bytes=due.bytes)
    if not due.objects:
        return report
    logger.info("scrub pass started", extra={"due": due.objects, "due_bytes": due.bytes})
    PASS_DUE.set(due.objects)
    PASS_DONE.set(0)
    if on_start is not None:
        on_start(report)
    after: UUID | None = None
    try:
        while True:
            async with scoped_on(conn, everything):
                batch = await scrub_store.due(conn, verified_before, after, BATCH)
            if not batch:
                break
            for recording in batch:
                after = recording.id
                await _verify(resources, conn, recording, pace, actor, report)
                PASS_DONE.set(report.checked)
                if on_progress is not None:
                    on_progress(report)
                if report.checked % PROGRESS_EVERY == 0:
                    logger.info("scrub pass progress", extra={
                        "checked": report.checked, "due": report.due, "bytes": report.bytes})
    except StorageError as exc:  # the object store is unavailable: the next pass resumes
        report.stopped = exc.detail
        logger.warning("scrub pass stopped", extra={"error": exc.detail})
    finally:
        PASS_DUE.set(0)
        PASS_DONE.set(0)
        LAST_PASS_END.set(time.time())
    await resources.audit.append(AuditEntry(
        actor=actor, actor_kind="system", action="recording.scrub", target_type="scrub",
        outcome="failure" if report.findings else "ok",
        detail={"verified_before": verified_before.isoformat(), **report.summary()},
    ))
    log = logger.error if report.findings else logger.info
    log("scrub pass ended", extra={
        "checked": report.checked, "bytes": report.bytes, "corrupt": len(report.corrupt),
        "missing": len(report.missing), "stopped": report.stopped})
    return report


async def _verify(resources: Resources, conn: asyncpg.Connection, recording: Recording,
                  pace: Pace, actor: str, report: ScrubReport) -> None:
    """Re-read one recording's object and note what was found."""
    try:
        # The owner key as replay reads it (one self-scoping statement).
        _, kek_version, wrapped_owner = await store.get_for_replay(
            conn, Scope.everything(), recording.id)
        owner = keys.open_owner_key(resources.keyring.masters, recording.key_owner,
                                    recording.key_owner_id, kek_version, wrapped_owner)
    except NotFound:
        return  # erased or purged since the batch was read
    except KeyDestroyed:
        report.unreadable.append(str(recording.id))
        SCRUBBED_OBJECTS.labels(outcome="unreadable").inc()
        return
    read = 0
    try:
        data_key = keys.unwrap_data_key(owner, recording.id, recording.wrapped_key)
        async for piece in iter_plaintext(
            resources.objects, recording.object_key, data_key=data_key, object_id=recording.id,
            size=recording.size_bytes, start=0, end_inclusive=recording.size_bytes - 1,
            expected_sha256=recording.sha256,
        ):
            read += len(piece)
            await pace.spend(len(piece))
    except ObjectMissing as exc:
        if not await _still_stored(conn, recording.id):
            return  # erased or purged while it was read: its object went with it
        # Not marked: a bucket pointed at by mistake must not condemn every recording.
        report.missing.append(str(recording.id))
        SCRUBBED_OBJECTS.labels(outcome="missing").inc()
        raise_alarm(recording.id, exc.detail, found_by="scrub")
        await _audit_alarm(resources, recording, exc.detail, actor, marked=False)
        return
    except IntegrityError as exc:
        if not await _still_stored(conn, recording.id):
            return
        report.corrupt.append(str(recording.id))
        report.checked += 1
        SCRUBBED_OBJECTS.labels(outcome="corrupt").inc()
        raise_alarm(recording.id, exc.detail, found_by="scrub")
        async with scoped_on(conn, Scope.everything()):
            await store.mark_corrupt(conn, recording.id)
        await _audit_alarm(resources, recording, exc.detail, actor, marked=True)
        return
    finally:
        report.bytes += read
        SCRUBBED_BYTES.inc(read)
    report.checked += 1
    SCRUBBED_OBJECTS.labels(outcome="verified").inc()
    async with scoped_on(conn, Scope.everything()):
        await scrub_store.note_verified(conn, recording)


async def _still_stored(conn: asyncpg.Connection, recording_id: UUID) -> bool:
    try:
        recording, _, _ = await store.get_for_replay(conn, Scope.everything(), recording_id)
    except NotFound:
        return False
    return recording.state == "stored"


async def _audit_alarm(resources: Resources, recording: Recording, error: str, actor: str,
                       *, marked: bool) -> None:
    await resources.audit.append(AuditEntry(
        actor=actor, actor_kind="system", action=ALARM_ACTION, target_type="recording",
        target_id=str(recording.id), company=recording.company, outcome="failure",
        detail={"error": error, "found_by": "scrub", "marked_corrupt": marked},
    ))


# --- the schedule --------------------------------------------------------------------------


async def scheduled_once(resources: Resources) -> ScrubReport:
    """Verify what is due now, unless another replica is scrubbing."""
    settings = resources.settings
    return await scrub(
        resources, verified_before=datetime.now(UTC) - timedelta(hours=settings.scrub_every_hours),
        rate=settings.scrub_rate_mb_s * 1e6, wait=False)


async def _scrub_forever(resources: Resources) -> None:
    await asyncio.sleep(FIRST_LOOK.total_seconds())
    while True:
        try:
            await scheduled_once(resources)
        except (StorageError, asyncpg.PostgresError, OSError) as exc:
            logger.warning("scrub failed; retrying later", extra={"error": repr(exc)})
        await asyncio.sleep(POLL.total_seconds())


async def scrub_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the scheduled scrub, when enabled."""
    resources = app[RESOURCES]
    task = (asyncio.create_task(_scrub_forever(resources), name="scrub")
            if resources.settings.scrub_enabled else None)
    yield
    await stop_task(task)
