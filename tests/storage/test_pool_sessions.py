"""The pool hands connections back without a session reset (storage.db.create_pool): nothing a
caller did may reach the next one. Scope and transactions end with the transaction, and every
session lock of migrations, purges, the purge schedule and the reconciler is released."""

from __future__ import annotations

import asyncpg
import pytest

from service.recordings.reconciler import RECONCILE_LOCK, reconcile
from service.retention import scheduler as purge_scheduler
from service.settings import Settings
from storage.db import Scope, create_pool, scoped
from storage.migrate import migrate
from storage.objects import ObjectStore
from tests.helpers import Api
from tests.service.retention_factory import purge_context_of

HELD = ("SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
        " WHERE l.locktype = 'advisory' AND d.datname = current_database()")


async def test_a_failed_transaction_leaves_no_scope_behind(pool: asyncpg.Pool) -> None:
    with pytest.raises(RuntimeError):
        async with scoped(pool, Scope.everything()) as conn:
            assert await conn.fetchval("SELECT count(*) FROM companies") == 9
            raise RuntimeError("the handler failed mid-transaction")
    for _ in range(pool.get_size()):  # whichever connection comes next
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval(
                "SELECT coalesce(current_setting('tallenne.all_companies', true), '')") == ""
            assert await conn.fetchval("SELECT count(*) FROM recordings") == 0


async def test_session_locks_are_all_released(
    api: Api, pool: asyncpg.Pool, objects: ObjectStore, db: asyncpg.Connection,
    settings: Settings,
) -> None:
    # Migrations run on the owner role's pool; it stays open until the locks are counted.
    assert settings.database_owner_url is not None
    owner = await create_pool(settings.database_owner_url.get_secret_value(), max_size=1)
    try:
        async with owner.acquire() as conn:
            assert await migrate(conn) == []
        await reconcile(pool, objects)
        await db.execute("SELECT pg_advisory_lock($1)", RECONCILE_LOCK)
        assert (await reconcile(pool, objects, wait=False)).skipped
        await db.execute("SELECT pg_advisory_unlock($1)", RECONCILE_LOCK)
        context = purge_context_of(api)
        assert (await purge_scheduler.scheduled_once(context)) is not None
        assert await db.fetchval(HELD) == 0
    finally:
        await owner.close()
