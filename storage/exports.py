"""SQL of export jobs: creating a job, claiming it under a lease (one replica at a time),
planning its calls, recording each call's files once, progress, cancellation and expiry.
Every function takes a scoped connection; the worker claims with the all-companies scope and
reads the calls in the scope the job was created with."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from storage.db import Scope
from storage.recordings import _COLUMNS, Evaluation, Recording, _evaluation, _recording

FILE_BATCH = 500


@dataclass(frozen=True)
class ExportRequest:
    """What a job was asked to do, by whom, and the scope it reads in."""

    id: UUID
    created_by: str
    created_by_kind: str
    created_by_role: str
    created_by_id: UUID | None
    scope: Scope
    filter: dict[str, Any]
    reason: str
    format: str
    recipient: str | None
    recipient_country: str | None
    legal_basis: str | None
    purpose: str | None
    recipient_public_key: str | None
    target_bucket: str | None
    target_prefix: str | None


@dataclass(frozen=True)
class ExportJob(ExportRequest):
    """A job row: its request and its progress."""

    state: str
    total: int | None
    done: int
    bytes: int
    held_back: int
    error: str | None
    audit_seq: int | None
    created_at: datetime
    finished_at: datetime | None
    expires_at: datetime

    @property
    def metadata(self) -> dict[str, Any]:
        """What the export says about itself in its manifest (no personal data)."""
        return {"export_id": str(self.id), "format": self.format, "reason": self.reason,
                "filter": self.filter, "created_by": self.created_by,
                "created_at": self.created_at.isoformat(), "recipient": self.recipient,
                "recipient_country": self.recipient_country, "legal_basis": self.legal_basis,
                "purpose": self.purpose if self.recipient else None,
                "calls": self.total, "held_back": self.held_back,
                "audit_event": self.audit_seq}


def _job(row: asyncpg.Record) -> ExportJob:
    data = dict(row)
    scope = Scope(company_ids=frozenset(data.pop("company_ids")),
                  all_companies=data.pop("all_companies"))
    for column in ("lease_owner", "lease_until", "attempts", "started_at",
                   "objects_removed_at"):
        data.pop(column, None)
    return ExportJob(scope=scope, **data)


@dataclass(frozen=True)
class NewExportJob(ExportRequest):
    """A job to create: its request and how long its result is kept."""

    keep_for: timedelta


async def create_job(conn: asyncpg.Connection, job: NewExportJob) -> ExportJob:
    row = await conn.fetchrow(
        "INSERT INTO export_jobs (id, created_by, created_by_kind, created_by_role,"
        " all_companies, company_ids, filter, reason, format, recipient, recipient_country,"
        " legal_basis, purpose, recipient_public_key, target_bucket, target_prefix, expires_at,"
        " created_by_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,"
        " $15, $16, now() + $17::interval, $18) RETURNING *",
        job.id, job.created_by, job.created_by_kind, job.created_by_role,
        job.scope.all_companies, sorted(job.scope.company_ids), job.filter, job.reason,
        job.format, job.recipient, job.recipient_country, job.legal_basis, job.purpose,
        job.recipient_public_key, job.target_bucket, job.target_prefix, job.keep_for,
        job.created_by_id,
    )
    return _job(row)


async def note_audit_event(conn: asyncpg.Connection, job_id: UUID, seq: int) -> None:
    """The sequence number of the export's own audit event, stated in its manifest."""
    await conn.execute("UPDATE export_jobs SET audit_seq = $2 WHERE id = $1", job_id, seq)


async def get_job(conn: asyncpg.Connection, job_id: UUID) -> ExportJob | None:
    row = await conn.fetchrow("SELECT * FROM export_jobs WHERE id = $1", job_id)
    return None if row is None else _job(row)


async def claim(conn: asyncpg.Connection, owner: str, lease: timedelta,
                job_id: UUID | None = None) -> ExportJob | None:
    """Take the oldest open job (or `job_id`) whose lease is free or ran out (a replica died
    holding it); a job another replica is claiming at this moment is skipped, not waited
    for."""
    row = await conn.fetchrow(
        "UPDATE export_jobs SET state = 'running', lease_owner = $1,"
        " lease_until = now() + $2::interval, attempts = attempts + 1,"
        " started_at = coalesce(started_at, now())"
        " WHERE id = (SELECT id FROM export_jobs WHERE state IN ('queued', 'running')"
        " AND (lease_until IS NULL OR lease_until < now())"
        " AND ($3::uuid IS NULL OR id = $3) ORDER BY created_at"
        " FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING *",
        owner, lease, job_id,
    )
    return None if row is None else _job(row)


async def renew(conn: asyncpg.Connection, job_id: UUID, owner: str,
                lease: timedelta) -> bool:
    """Extend the lease; False when the job is no longer this owner's to run (cancelled, or
    taken over after the lease ran out)."""
    renewed = await conn.fetchval(
        "UPDATE export_jobs SET lease_until = now() + $3::interval"
        " WHERE id = $1 AND lease_owner = $2 AND state = 'running' RETURNING true",
        job_id, owner, lease,
    )
    return bool(renewed)


@dataclass(frozen=True)
class PlannedCall:
    recording_id: UUID
    company_id: UUID
    customer_id: UUID | None
    held_back: bool


async def plan(conn: asyncpg.Connection, job_id: UUID, calls: Sequence[PlannedCall]) -> None:
    """Fix the job's calls (once: a planned job keeps its list when it is resumed)."""
    await conn.execute(
        "INSERT INTO export_items (job_id, seq, recording_id, company_id, state)"
        " SELECT $1, n, r, c, CASE WHEN h THEN 'held_back' ELSE 'pending' END"
        " FROM unnest($2::uuid[], $3::uuid[], $4::boolean[]) WITH ORDINALITY AS s(r, c, h, n)",
        job_id, [c.recording_id for c in calls], [c.company_id for c in calls],
        [c.held_back for c in calls],
    )
    held = sum(c.held_back for c in calls)
    await conn.execute(
        "UPDATE export_jobs SET total = $2, held_back = $3, done = $3 WHERE id = $1",
        job_id, len(calls), held,
    )


@dataclass(frozen=True)
class PendingCall:
    seq: int
    recording_id: UUID
    company_id: UUID


async def pending_calls(conn: asyncpg.Connection, job_id: UUID, limit: int) -> list[PendingCall]:
    rows = await conn.fetch(
        "SELECT seq, recording_id, company_id FROM export_items"
        " WHERE job_id = $1 AND state = 'pending' ORDER BY seq LIMIT $2",
        job_id, limit,
    )
    return [PendingCall(r["seq"], r["recording_id"], r["company_id"]) for r in rows]


@dataclass(frozen=True)
class ExportFile:
    name: str
    seq: int
    recording_id: UUID
    company_id: UUID
    kind: str
    size: int
    sha256: str
    content: bytes | None = None
    object_key: str | None = None


async def finish_call(conn: asyncpg.Connection, job_id: UUID, seq: int, state: str,
                      files: Sequence[ExportFile]) -> None:
    """Record a call's files and mark it handled, in the caller's transaction. A file
    recorded by an attempt that died before its commit is simply written again: names are
    fixed by the call, so nothing is listed twice."""
    for file in files:
        await conn.execute(
            "INSERT INTO export_files (job_id, name, seq, recording_id, company_id, kind, size,"
            " sha256, content, object_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            " ON CONFLICT (job_id, name) DO UPDATE SET size = EXCLUDED.size,"
            " sha256 = EXCLUDED.sha256, content = EXCLUDED.content,"
            " object_key = EXCLUDED.object_key",
            job_id, file.name, file.seq, file.recording_id, file.company_id, file.kind,
            file.size, file.sha256, file.content, file.object_key,
        )
    if not await conn.fetchval(
            "UPDATE export_items SET state = $3 WHERE job_id = $1 AND seq = $2"
            " AND state = 'pending' RETURNING true", job_id, seq, state):
        return  # a worker whose lease ran out finished it meanwhile: counted once
    await conn.execute(
        "UPDATE export_jobs SET done = done + 1, bytes = bytes + $2,"
        " held_back = held_back + $3 WHERE id = $1",
        job_id, sum(f.size for f in files), int(state == "held_back"),
    )


async def finish_job(conn: asyncpg.Connection, job_id: UUID, owner: str, state: str,
                     error: str | None = None) -> bool:
    done = await conn.fetchval(
        "UPDATE export_jobs SET state = $3, error = $4, finished_at = now(),"
        " expires_at = greatest(expires_at, now() + (expires_at - created_at)),"
        " lease_owner = NULL, lease_until = NULL"
        " WHERE id = $1 AND lease_owner = $2 AND state = 'running' RETURNING true",
        job_id, owner, state, error,
    )
    return bool(done)


async def being_written(conn: asyncpg.Connection, job_id: UUID) -> bool:
    """Whether a worker holds the job's lease now (it may be writing the job's files)."""
    return bool(await conn.fetchval(
        "SELECT lease_until > now() FROM export_jobs WHERE id = $1", job_id))


async def cancel(conn: asyncpg.Connection, job_id: UUID) -> ExportJob | None:
    """Stop a job (a running one stops after its current call) or withdraw a finished one's
    result; a job already cancelled stays so."""
    row = await conn.fetchrow(
        "UPDATE export_jobs SET state = 'cancelled', finished_at = coalesce(finished_at, now())"
        " WHERE id = $1 AND state <> 'cancelled' RETURNING *",
        job_id,
    )
    if row is None:
        return await get_job(conn, job_id)
    await conn.execute(
        "UPDATE export_files SET content = NULL WHERE job_id = $1 AND content IS NOT NULL",
        job_id)
    return _job(row)


async def iter_files(conn: asyncpg.Connection, job_id: UUID) -> AsyncIterator[list[ExportFile]]:
    """The job's files in the order they were planned, a batch at a time."""
    after: tuple[int, str] = (-1, "")
    while True:
        rows = await conn.fetch(
            "SELECT name, seq, recording_id, company_id, kind, size, sha256, content,"
            " object_key FROM export_files WHERE job_id = $1 AND (seq, name) > ($2, $3)"
            " ORDER BY seq, name LIMIT $4",
            job_id, after[0], after[1], FILE_BATCH,
        )
        if not rows:
            return
        batch = [ExportFile(r["name"], r["seq"], r["recording_id"], r["company_id"],
                            r["kind"], r["size"], r["sha256"],
                            None if r["content"] is None else bytes(r["content"]),
                            r["object_key"]) for r in rows]
        yield batch
        after = (batch[-1].seq, batch[-1].name)


async def customers_of(conn: asyncpg.Connection, job_id: UUID) -> dict[UUID, list[UUID]]:
    """Per company, the customers linked to the job's calls that are not held back."""
    rows = await conn.fetch(
        "SELECT i.company_id, array_agg(DISTINCT r.customer_id) AS customers"
        " FROM export_items i JOIN recordings r ON r.id = i.recording_id"
        " WHERE i.job_id = $1 AND i.state <> 'held_back' AND r.customer_id IS NOT NULL"
        " GROUP BY i.company_id",
        job_id,
    )
    return {r["company_id"]: list(r["customers"]) for r in rows}


async def subjects_of(conn: asyncpg.Connection, job_id: UUID) -> list[UUID]:
    """The calls a job exported and the customers linked to them: whose data it read, as its
    audit events name them."""
    rows = await conn.fetch(
        "SELECT i.recording_id, r.customer_id FROM export_items i"
        " LEFT JOIN recordings r ON r.id = i.recording_id"
        " WHERE i.job_id = $1 AND i.state = 'done' ORDER BY i.seq",
        job_id,
    )
    found = [r["recording_id"] for r in rows] + [r["customer_id"] for r in rows
                                                 if r["customer_id"] is not None]
    return list(dict.fromkeys(found))


async def companies_of(conn: asyncpg.Connection, job_id: UUID) -> list[UUID]:
    rows = await conn.fetch(
        "SELECT DISTINCT company_id FROM export_items WHERE job_id = $1 AND state <> 'held_back'",
        job_id)
    return [r["company_id"] for r in rows]


async def prohibited(conn: asyncpg.Connection, customer_ids: Sequence[UUID],
                     uses: Sequence[str]) -> set[UUID]:
    """Customers with a prohibition in force of any of `uses`."""
    if not customer_ids or not uses:
        return set()
    rows = await conn.fetch(
        "SELECT DISTINCT customer_id FROM customer_prohibitions WHERE withdrawn_at IS NULL"
        " AND customer_id = ANY($1::uuid[]) AND use = ANY($2::text[])",
        list(customer_ids), list(uses),
    )
    return {r["customer_id"] for r in rows}


async def recordings_by_ids(conn: asyncpg.Connection,
                            ids: Sequence[UUID]) -> dict[UUID, Recording]:
    """The stored calls among `ids` that the scope sees (erased ones are simply absent)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM recordings r JOIN companies c ON c.id = r.company_id"
        " WHERE r.id = ANY($1::uuid[]) AND r.state <> 'pending'",
        list(ids),
    )
    found = [_recording(r) for r in rows]
    return {r.id: r for r in found}


async def lock_calls(conn: asyncpg.Connection, ids: Sequence[UUID]) -> set[UUID]:
    """Hold the rows of the calls being written until the transaction ends (an erasure waits
    for them); returns the ids still there."""
    rows = await conn.fetch(
        "SELECT id FROM recordings WHERE id = ANY($1::uuid[]) AND state <> 'pending'"
        " ORDER BY id FOR SHARE",
        list(ids),
    )
    return {r["id"] for r in rows}


async def evaluations_by_call(conn: asyncpg.Connection,
                              ids: Sequence[UUID]) -> dict[UUID, list[Evaluation]]:
    rows = await conn.fetch(
        "SELECT * FROM recording_evaluations WHERE recording_id = ANY($1::uuid[])"
        " ORDER BY created_at, id",
        list(ids),
    )
    found: dict[UUID, list[Evaluation]] = {}
    for row in rows:
        found.setdefault(row["recording_id"], []).append(_evaluation(row))
    return found


async def finish_calls(conn: asyncpg.Connection, job_id: UUID,
                       handled: Sequence[tuple[int, str, Sequence[ExportFile]]]) -> None:
    """`finish_call` for many calls at once: (seq, state, files) each."""
    files = [f for _, _, fs in handled for f in fs]
    if files:
        await conn.executemany(
            "INSERT INTO export_files (job_id, name, seq, recording_id, company_id, kind, size,"
            " sha256, content, object_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            " ON CONFLICT (job_id, name) DO UPDATE SET size = EXCLUDED.size,"
            " sha256 = EXCLUDED.sha256, content = EXCLUDED.content,"
            " object_key = EXCLUDED.object_key",
            [(job_id, f.name, f.seq, f.recording_id, f.company_id, f.kind, f.size, f.sha256,
              f.content, f.object_key) for f in files],
        )
    changed = {r["seq"] for r in await conn.fetch(
        "UPDATE export_items i SET state = s.state FROM unnest($2::int[], $3::text[])"
        " AS s(seq, state) WHERE i.job_id = $1 AND i.seq = s.seq AND i.state = 'pending'"
        " RETURNING i.seq",
        job_id, [seq for seq, _, _ in handled], [state for _, state, _ in handled],
    )}
    # Calls a worker whose lease ran out finished meanwhile are counted once.
    counted = [(seq, state, fs) for seq, state, fs in handled if seq in changed]
    await conn.execute(
        "UPDATE export_jobs SET done = done + $2, bytes = bytes + $3,"
        " held_back = held_back + $4 WHERE id = $1",
        job_id, len(counted), sum(f.size for _, _, fs in counted for f in fs),
        sum(state == "held_back" for _, state, _ in counted),
    )
