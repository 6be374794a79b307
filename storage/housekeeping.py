"""Rows that expire by themselves and are removed on a schedule of their own: ended sessions,
login failures past the throttling window, idempotency keys past their lifetime, and what
export jobs that ended without a result to download left behind."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

import asyncpg

# A repeated Idempotency-Key is answered from memory for this long (README, web events).
IDEMPOTENCY_KEY_LIFETIME = timedelta(hours=24)
# Login failures count towards throttling for 15 minutes (service.identity.views); an hour more
# keeps them for anyone looking into a burst.
LOGIN_FAILURE_LIFETIME = timedelta(minutes=75)
# An export job (`j`) that ended without a result to download: failed, cancelled, or finished
# and past `expires_at` (the download answers 410). A cancelled job's worker may still be
# writing a call until its lease runs out.
_EXPORT_ENDED = (
    "(j.state IN ('failed', 'cancelled') OR (j.state = 'done' AND j.expires_at <= now()))"
    " AND (j.lease_until IS NULL OR j.lease_until < now())"
)
S3_EXPORT_BATCH = 100


@dataclass(frozen=True)
class Housekept:
    sessions: int
    login_failures: int
    idempotency_keys: int
    export_contents: int = 0
    export_prefixes: int = 0


async def _count(conn: asyncpg.Connection, sql: str, *args: object) -> int:
    return int(await conn.fetchval(f"WITH gone AS ({sql} RETURNING 1) SELECT count(*) FROM gone",
                                   *args))


async def purge_expired_access_rows(
    conn: asyncpg.Connection, *, session_idle: timedelta, session_absolute: timedelta,
    login_failures_after: timedelta = LOGIN_FAILURE_LIFETIME,
    idempotency_keys_after: timedelta = IDEMPOTENCY_KEY_LIFETIME,
) -> Housekept:
    """Delete sessions that ended (revoked, idle or past their absolute lifetime), login
    failures and idempotency keys older than their lifetime."""
    async with conn.transaction():
        sessions = await _count(
            conn, "DELETE FROM sessions WHERE revoked_at IS NOT NULL"
            " OR last_seen_at < now() - $1::interval OR created_at < now() - $2::interval",
            session_idle, session_absolute)
        failures = await _count(
            conn, "DELETE FROM login_failures WHERE at < now() - $1::interval",
            login_failures_after)
        keys = await _count(
            conn, "DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval",
            idempotency_keys_after)
    return Housekept(sessions, failures, keys)


async def clear_ended_exports(conn: asyncpg.Connection) -> int:
    """Drop the bytes of the small files (each call's metadata) of export jobs that ended;
    returns how many files held some. The connection must see every company."""
    return await _count(
        conn, "UPDATE export_files f SET content = NULL FROM export_jobs j"
        f" WHERE j.id = f.job_id AND f.content IS NOT NULL AND {_EXPORT_ENDED}")


async def ended_s3_exports(conn: asyncpg.Connection,
                           limit: int = S3_EXPORT_BATCH) -> list[tuple[UUID, str | None]]:
    """(job id, prefix) of `s3` jobs that ended and whose files in the export bucket are not
    yet removed, oldest first."""
    rows = await conn.fetch(
        "SELECT j.id, j.target_prefix FROM export_jobs j WHERE j.format = 's3'"
        f" AND j.objects_removed_at IS NULL AND {_EXPORT_ENDED} ORDER BY j.created_at LIMIT $1",
        limit)
    return [(r["id"], r["target_prefix"]) for r in rows]


async def note_s3_export_removed(conn: asyncpg.Connection, job_id: UUID) -> None:
    await conn.execute("UPDATE export_jobs SET objects_removed_at = now() WHERE id = $1",
                       job_id)
