"""Rows that expire by themselves and are removed on a schedule of their own: ended sessions,
login failures past the throttling window, and idempotency keys past their lifetime."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import asyncpg

# A repeated Idempotency-Key is answered from memory for this long (README, web events).
IDEMPOTENCY_KEY_LIFETIME = timedelta(hours=24)
# Login failures count towards throttling for 15 minutes (service.identity.views); an hour more
# keeps them for anyone looking into a burst.
LOGIN_FAILURE_LIFETIME = timedelta(minutes=75)


@dataclass(frozen=True)
class Housekept:
    sessions: int
    login_failures: int
    idempotency_keys: int


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
