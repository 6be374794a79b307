"""Applies the numbered SQL files in storage/migrations in order, once, under an advisory lock."""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg

logger = logging.getLogger(__name__)

MIGRATION_LOCK = 0x7A11E5E  # any constant; shared by every instance of the service


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("storage") / "migrations"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), (folder / name).read_text()) for name in names]


async def migrate(conn: asyncpg.Connection, *, until: str | None = None) -> list[str]:
    """Apply pending migrations (up to and including `until`, if given); returns the versions
    applied now. Safe to run concurrently."""
    applied_now: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migration_files():
            if until is not None and version > until:
                break
            if version in done:
                continue
            async with conn.transaction():
                # A data migration sees every company's rows: row-level security is forced
                # on the owner too, and would otherwise hide them from back-fills.
                await conn.execute("SELECT set_config('tallenne.all_companies', 'on', true)")
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)", version
                )
            logger.info("applied migration", extra={"migration": version})
            applied_now.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied_now


async def migrate_url(dsn: str) -> list[str]:
    """Apply pending migrations on a connection of its own to `dsn` (the owner role's URL)."""
    from storage.errors import Unavailable

    try:
        conn = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise Unavailable(f"PostgreSQL is not reachable: {exc.__class__.__name__}") from exc
    try:
        return await migrate(conn)
    finally:
        await conn.close()
