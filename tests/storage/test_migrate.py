"""Data migrations against a database that already holds rows of several companies."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from storage.migrate import migrate
from tests.conftest import Stack, drop_database


@pytest.fixture
def empty_database(stack: Stack) -> Iterator[str]:
    name = "t_mig_" + uuid.uuid4().hex[:10]

    async def create() -> None:
        admin = await asyncpg.connect(stack.superuser_url("postgres"))
        await admin.execute(f"CREATE DATABASE {name} OWNER tallenne_owner")
        await admin.close()

    asyncio.run(create())
    yield name
    drop_database(stack, name)


async def test_retention_back_fill_reaches_every_companys_recordings(
    stack: Stack, empty_database: str
) -> None:
    conn = await asyncpg.connect(stack.owner_url(empty_database))
    try:
        await migrate(conn, until="008_recording_key_owner_default")
        companies = [r["id"] for r in await conn.fetch("SELECT id FROM companies LIMIT 2")]
        async with conn.transaction():
            await conn.execute("SELECT set_config('tallenne.all_companies', 'on', true)")
            for n, company in enumerate(companies):
                await conn.execute(
                    "INSERT INTO recordings (id, company_id, external_id, state, started_at,"
                    " ended_at, direction, purpose, format, codec, duration_s, sample_rate,"
                    " channels, size_bytes, sha256, object_key, key_owner, key_owner_id,"
                    " wrapped_key) VALUES (gen_random_uuid(), $1, $2, 'stored', now(), now(),"
                    " 'inbound', 'quality', 'wav', 'pcm_s16le', 1, 8000, 1, 10, $3, $2,"
                    " 'company', $1, '\\x00')",
                    company, f"old-{n}", "0" * 64,
                )
        applied = await migrate(conn)
        assert "010_retention" in applied
        async with conn.transaction():
            await conn.execute("SELECT set_config('tallenne.all_companies', 'on', true)")
            undated = await conn.fetchval(
                "SELECT count(*) FROM recordings WHERE retain_until IS NULL")
            dated = await conn.fetchval(
                "SELECT count(*) FROM recordings WHERE retain_until > started_at")
        assert (undated, dated) == (0, 2)
    finally:
        await conn.close()
