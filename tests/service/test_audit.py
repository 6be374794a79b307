"""The hash-chained audit trail: what is recorded, tampering found, checkpoints in S3."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any
from unittest import mock

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from service import cli
from service.app import create_app
from service.settings import Settings
from service.typedefs import AUDIT, OBJECTS, POOL
from storage.audit import GENESIS, AuditEntry, chain_hash, verify_chain
from storage.checkpoints import PREFIX, write_checkpoint
from tests.conftest import Stack
from tests.helpers import Api, bearer


async def _verify(api: Api) -> dict[str, Any]:
    token = await api.token("admin", all_companies=True, name="verifier")
    response = await api.client.get("/api/v1/audit/verify", headers=bearer(token))
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def _append(app: Any, count: int, actor: str = "tester") -> None:
    await asyncio.gather(*(
        app[AUDIT].append(AuditEntry(actor=actor, actor_kind="user", action="test.event",
                                     detail={"n": n}))
        for n in range(count)
    ))


async def _tamper(db: asyncpg.Connection, sql: str, *args: Any) -> None:
    """Change audit rows as a superuser who switched the append-only trigger off."""
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")
        await db.execute(sql, *args)


async def test_login_success_failure_and_logout_are_audited(api: Api,
                                                            db: asyncpg.Connection) -> None:
    await api.user("aino", "quality", ["tenergia"])
    bad = await api.client.post("/api/v1/session", json={"username": "aino",
                                                         "password": "not-the-password"})
    assert bad.status == 401
    csrf = await api.login("aino")
    out = await api.client.delete("/api/v1/session", headers={"X-CSRF-Token": csrf})
    assert out.status == 204
    rows = await db.fetch("SELECT actor, action, outcome, client_ip FROM audit_events"
                          " WHERE action IN ('login', 'logout') ORDER BY seq")
    assert [(r["actor"], r["action"], r["outcome"]) for r in rows] == [
        ("aino", "login", "failure"), ("aino", "login", "ok"), ("aino", "logout", "ok"),
    ]
    assert all(r["client_ip"] in ("127.0.0.0/24", None) for r in rows)
    dump = str(await db.fetch("SELECT * FROM audit_events"))
    assert "not-the-password" not in dump and "correct-horse" not in dump


async def test_intact_chain_verifies(api: Api) -> None:
    await _append(api.client.app, 20)
    body = await _verify(api)
    assert body["ok"] is True and body["first_bad"] is None and body["events"] >= 20


async def test_editing_one_event_is_reported_at_exactly_that_event(
        api: Api, db: asyncpg.Connection) -> None:
    await _append(api.client.app, 30)
    await _tamper(db, "UPDATE audit_events SET actor = 'someone-else' WHERE seq = 17")
    body = await _verify(api)
    assert body["ok"] is False and body["first_bad"] == 17
    assert "17" in body["problem"]


async def test_deleting_one_event_is_reported_as_a_gap(api: Api, db: asyncpg.Connection) -> None:
    await _append(api.client.app, 30)
    await _tamper(db, "DELETE FROM audit_events WHERE seq = 12")
    body = await _verify(api)
    assert body["ok"] is False and body["first_bad"] == 12
    assert "missing" in body["problem"]


async def test_deleting_the_newest_events_is_reported(api: Api, db: asyncpg.Connection) -> None:
    await _append(api.client.app, 10)
    await _tamper(db, "DELETE FROM audit_events WHERE seq > 7")
    body = await _verify(api)
    assert body["ok"] is False and body["first_bad"] == 8


async def test_service_role_cannot_update_or_delete_audit_events(
        api: Api, stack: Stack, database: str) -> None:
    await _append(api.client.app, 3)
    conn = await asyncpg.connect(stack.app_url(database))
    try:
        # Even seeing every company's events, the service's role cannot change them.
        await conn.execute("SELECT set_config('tallenne.all_companies', 'on', false)")
        with pytest.raises(asyncpg.PostgresError):
            await conn.execute("UPDATE audit_events SET actor = 'x' WHERE seq = 1")
        with pytest.raises(asyncpg.PostgresError):
            await conn.execute("DELETE FROM audit_events WHERE seq = 2")
        with pytest.raises(asyncpg.PostgresError):
            await conn.execute("TRUNCATE audit_events")
        assert await conn.fetchval("SELECT count(*) FROM audit_events WHERE actor = 'x'") == 0
    finally:
        await conn.close()


async def test_two_instances_appending_at_once_keep_one_chain(api: Api,
                                                              settings: Settings) -> None:
    second = create_app(settings)
    async with TestClient(TestServer(second)) as other:
        await asyncio.gather(_append(api.client.app, 1000, "replica-a"),
                             _append(other.app, 1000, "replica-b"))
    body = await _verify(api)
    assert body["ok"] is True and body["events"] >= 2000


async def test_checkpoint_is_written_to_s3_and_recorded(api: Api, db: asyncpg.Connection) -> None:
    app = api.client.app
    await _append(app, 5)
    checkpoint = await write_checkpoint(app[POOL], app[OBJECTS])
    head = await db.fetchrow("SELECT seq, hash FROM audit_head")
    assert checkpoint.seq == head["seq"] and checkpoint.hash == bytes(head["hash"])
    keys = await app[OBJECTS].list_keys(PREFIX)
    assert keys == [f"{PREFIX}{checkpoint.seq:020d}.json"]
    document = json.loads(await app[OBJECTS].get_bytes(keys[0]))
    assert document["seq"] == checkpoint.seq and document["hash"] == checkpoint.hash.hex()
    row = await db.fetchrow("SELECT * FROM audit_checkpoints WHERE seq = $1", checkpoint.seq)
    assert row["object_key"] == keys[0]
    body = await _verify(api)
    assert body["ok"] is True and body["checkpoints"] == 1


async def _rewrite_whole_chain(db: asyncpg.Connection) -> None:
    """What an attacker with SQL access does: change an event, recompute every hash after it."""
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")
        await db.execute("UPDATE audit_events SET actor = 'nobody' WHERE seq = 3")
        prev = GENESIS
        for row in await db.fetch("SELECT * FROM audit_events ORDER BY seq"):
            values = dict(row)
            values["detail"] = json.loads(values["detail"]) if isinstance(
                values["detail"], str) else values["detail"]
            digest = chain_hash(prev, values["seq"], values)
            await db.execute("UPDATE audit_events SET prev_hash = $1, hash = $2 WHERE seq = $3",
                             prev, digest, values["seq"])
            prev = digest
        await db.execute("UPDATE audit_head SET hash = $1", prev)


async def test_consistent_rewrite_of_the_chain_is_caught_by_the_checkpoints(
        api: Api, db: asyncpg.Connection) -> None:
    app = api.client.app
    await _append(app, 10)
    await write_checkpoint(app[POOL], app[OBJECTS])
    await _append(app, 5)
    await _rewrite_whole_chain(db)
    head_seq = await db.fetchval("SELECT seq FROM audit_head")
    async with app[POOL].acquire() as conn:
        assert (await verify_chain(conn)).ok, "the rewrite is consistent inside the database"
    body = await _verify(api)
    assert body["ok"] is False and body["checkpoints"] == 1
    assert body["first_bad"] is not None and body["first_bad"] <= head_seq
    assert "checkpoint" in body["problem"]


async def test_periodic_writer_checkpoints_only_when_the_head_moved(api: Api) -> None:
    from service.checkpointing import checkpoint_once

    app = api.client.app
    await _append(app, 3)
    assert await checkpoint_once(app) is True
    assert await checkpoint_once(app) is False
    await _append(app, 1)
    assert await checkpoint_once(app) is True
    assert len(await app[OBJECTS].list_keys(PREFIX)) == 2


def _cli_env(settings: Settings) -> dict[str, str]:
    assert settings.database_url and settings.s3_access_key and settings.s3_secret_key
    return {
        "TALLENNE_DATABASE_URL": settings.database_url.get_secret_value(),
        **({"TALLENNE_DATABASE_OWNER_URL": settings.database_owner_url.get_secret_value()}
           if settings.database_owner_url else {}),
        "TALLENNE_S3_ENDPOINT": str(settings.s3_endpoint),
        "TALLENNE_S3_ACCESS_KEY": settings.s3_access_key.get_secret_value(),
        "TALLENNE_S3_SECRET_KEY": settings.s3_secret_key.get_secret_value(),
        "TALLENNE_S3_BUCKET": settings.s3_bucket,
        "TALLENNE_DATA_DIR": str(settings.data_dir),
    }


async def test_cli_audit_verify_exit_code(api: Api, db: asyncpg.Connection, settings: Settings,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    await _append(api.client.app, 5)
    with mock.patch.dict(os.environ, _cli_env(settings)):
        assert await asyncio.to_thread(cli.main, ["audit", "verify"]) == 0
        intact = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert intact["ok"] is True and "checkpoints" in intact
        await _tamper(db, "UPDATE audit_events SET reason = 'edited' WHERE seq = 2")
        assert await asyncio.to_thread(cli.main, ["audit", "verify"]) == 1
        broken = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert broken == {**broken, "ok": False, "first_bad": 2}


async def test_checkpoint_carries_object_lock_retention_where_the_bucket_has_it(
        api: Api, settings: Settings) -> None:
    from storage.objects import ObjectStore

    assert settings.s3_endpoint and settings.s3_access_key and settings.s3_secret_key
    locked_store = ObjectStore(
        settings.s3_endpoint, settings.s3_access_key.get_secret_value(),
        settings.s3_secret_key.get_secret_value(), settings.s3_bucket + "-locked",
        region=settings.s3_region, threads=2,
    )
    try:
        await locked_store.ensure_bucket(object_lock=True)
        app = api.client.app
        await _append(app, 2)
        checkpoint = await write_checkpoint(app[POOL], locked_store)
        if not checkpoint.locked:
            pytest.skip("this S3 server does not accept object-lock retention")
        retention = await locked_store.run(locked_store.client.get_object_retention,
                                           locked_store.bucket, checkpoint.object_key)
        assert retention is not None and retention.mode == "COMPLIANCE"
    finally:
        await locked_store.close()

