"""Session-level PostgreSQL advisory locks: one instance at a time of a background pass
(reconciler, scrub). A holder releases them in a `finally`, since the pool keeps sessions as
they are (storage.db.create_pool)."""

from __future__ import annotations

import asyncpg


async def try_lock(conn: asyncpg.Connection, key: int) -> bool:
    """Take the lock `key` if no other session holds it; True once held."""
    taken: bool = await conn.fetchval("SELECT pg_try_advisory_lock($1)", key)
    return taken


async def lock(conn: asyncpg.Connection, key: int) -> None:
    """Take the lock `key`, waiting for whichever session holds it."""
    await conn.execute("SELECT pg_advisory_lock($1)", key)


async def unlock_all(conn: asyncpg.Connection) -> None:
    """Release every session advisory lock this connection holds (or was waiting for)."""
    await conn.execute("SELECT pg_advisory_unlock_all()")
