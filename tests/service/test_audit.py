"""The hash-chained audit trail: what is recorded, tampering found, checkpoints in S3."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from minio.commonconfig import COMPLIANCE
from minio.retention import Retention

from service.app import create_app
from service.cli import main as cli
from service.http.keys import AUDIT, AUDIT_SIGNER, CHECKPOINTS, POOL
from service.settings import Settings
from storage.audit import GENESIS, AuditEntry, chain_hash, verify_chain
from storage.checkpoints import PREFIX, Checkpoint, object_key, write_checkpoint
from storage.errors import Unavailable
from storage.objects import ObjectStore
from storage.signed_note import CheckpointText, NoteSigner
from tests.conftest import Stack
from tests.helpers import Api, bearer, metric, settings_env


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


async def test_numbers_a_client_chooses_never_break_the_chain(
        api: Api, db: asyncpg.Connection) -> None:
    """jsonb writes numbers its own way (no exponent, no infinity, no negative zero): an
    event holding such a number is hashed as it is stored, so the chain still verifies."""
    quality = await api.token("quality", ["oulun-sahkonmyynti"], name="laatu")
    for value in ("1e16", "-0", "inf", "1.5e-7", "12.25"):
        response = await api.client.get("/api/v1/recordings", headers=bearer(quality),
                                        params={"min_duration_s": value})
        assert response.status in (200, 422), (value, await response.text())
    # Also concurrent appends while the chain is verified: the head is read in the snapshot.
    appending = asyncio.ensure_future(_append(api.client.app, 200))
    body = await _verify(api)
    await appending
    assert body["ok"] is True, body
    body = await _verify(api)
    assert body["ok"] is True, body
    stored = await db.fetch("SELECT detail FROM audit_events WHERE action = 'recording.search'")
    assert len(stored) >= 4


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


async def test_each_append_gets_the_number_of_its_own_event_when_writers_take_turns(
        api: Api, settings: Settings, db: asyncpg.Connection) -> None:
    # One writer appends, another moves the head, the first appends again: its second
    # event must land after the other's and be reported under its own number.
    second = create_app(settings)
    async with TestClient(TestServer(second)) as other:
        logs = [api.client.app[AUDIT], other.app[AUDIT]]
        numbered = []
        for turn in range(12):
            actor = f"writer-{turn % 2}-{turn}"
            seq = await logs[turn % 2].append(AuditEntry(
                actor=actor, actor_kind="user", action="test.turn", detail={"turn": turn}))
            numbered.append((seq, actor))
    assert [seq for seq, _ in numbered] == sorted({seq for seq, _ in numbered})
    stored = dict(await db.fetch("SELECT seq, actor FROM audit_events WHERE seq = ANY($1)",
                                 [seq for seq, _ in numbered]))
    assert stored == dict(numbered)
    assert (await _verify(api))["ok"] is True


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



async def _checkpoint(app: Any) -> Checkpoint:
    return await write_checkpoint(app[POOL], app[CHECKPOINTS], app[AUDIT_SIGNER])


def _admin_store(settings: Settings) -> ObjectStore:
    """The checkpoint bucket through the main (administrative) S3 credential."""
    assert settings.s3_endpoint and settings.s3_access_key and settings.s3_secret_key
    return ObjectStore(settings.s3_endpoint, settings.s3_access_key.get_secret_value(),
                       settings.s3_secret_key.get_secret_value(), settings.audit_bucket,
                       region=settings.s3_region, threads=2)


def _cli(settings: Settings, *args: str) -> tuple[int, str]:
    with mock.patch.dict(os.environ, settings_env(settings)), \
            mock.patch("sys.stdout", new_callable=io.StringIO) as out:
        code = cli.main(list(args))
    return code, out.getvalue()


async def _verify_both(api: Api, settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The verdict of GET /api/v1/audit/verify and of `tallenne audit verify`; they agree
    (the CLI runs second, after the API's own verify event was appended)."""
    body = await _verify(api)
    code, out = await asyncio.to_thread(_cli, settings, "audit", "verify")
    report = json.loads(out.strip().splitlines()[-1])
    assert code == (0 if report["ok"] else 1)
    assert report["ok"] == body["ok"]
    assert (report["problem"] is None) == (body["problem"] is None) == report["ok"]
    return body, report


async def test_checkpoint_is_a_signed_note_in_the_checkpoint_bucket(
        api: Api, db: asyncpg.Connection, settings: Settings) -> None:
    app = api.client.app
    await _append(app, 5)
    checkpoint = await _checkpoint(app)
    head = await db.fetchrow("SELECT seq, hash FROM audit_head")
    assert checkpoint.seq == head["seq"] and checkpoint.hash == bytes(head["hash"])
    admin = _admin_store(settings)
    try:
        keys = await admin.list_keys(PREFIX)
        assert keys == [object_key(1, checkpoint.seq)]
        note = (await admin.get_bytes(keys[0])).decode()
    finally:
        await admin.close()
    lines = note.split("\n")
    assert lines[:3] == [settings.audit_origin, str(checkpoint.seq),
                         base64.b64encode(checkpoint.hash).decode()]
    assert lines[5] == "" and lines[6].startswith(f"\u2014 {settings.audit_origin} ")
    signature = base64.b64decode(lines[6].split(" ")[2])
    assert len(signature) == 4 + 64
    text = app[AUDIT_SIGNER].verifier.open(note)
    assert CheckpointText.parse(text).size == checkpoint.seq
    assert await _audio_bucket_checkpoints(app) == []
    row = await db.fetchrow("SELECT * FROM audit_checkpoints WHERE seq = $1", checkpoint.seq)
    assert row["object_key"] == keys[0] and row["epoch"] == 1
    body, _ = await _verify_both(api, settings)
    assert body["ok"] is True and body["checkpoints"] == 1


async def test_export_checkpoints_prints_the_signed_notes_and_their_verifier_key(
        api: Api, settings: Settings) -> None:
    app = api.client.app
    await _append(app, 2)
    first = await _checkpoint(app)
    await _append(app, 2)
    second = await _checkpoint(app)
    code, out = await asyncio.to_thread(_cli, settings, "audit", "export-checkpoints")
    assert code == 0
    exported = json.loads(out)
    assert [c["seq"] for c in exported["checkpoints"]] == [first.seq, second.seq]
    name, key_id, key = exported["verifier_key"].split("+", 2)
    assert name == settings.audit_origin and len(bytes.fromhex(key_id)) == 4
    assert base64.b64decode(key)[0] == 1  # Ed25519
    verifier = app[AUDIT_SIGNER].verifier
    assert exported["verifier_key"] == verifier.verifier_key()
    assert "previous " + str(first.seq) in verifier.open(exported["checkpoints"][1]["note"])


async def test_editing_an_event_is_found_by_api_and_cli(
        api: Api, db: asyncpg.Connection, settings: Settings) -> None:
    await _append(api.client.app, 8)
    await _checkpoint(api.client.app)
    await _tamper(db, "UPDATE audit_events SET reason = 'edited' WHERE seq = 4")
    body, report = await _verify_both(api, settings)
    assert body["ok"] is False and body["first_bad"] == 4 and "altered" in report["problem"]


async def test_deleting_an_event_is_found_by_api_and_cli(
        api: Api, db: asyncpg.Connection, settings: Settings) -> None:
    await _append(api.client.app, 8)
    await _checkpoint(api.client.app)
    await _tamper(db, "DELETE FROM audit_events WHERE seq = 5")
    body, report = await _verify_both(api, settings)
    assert body["ok"] is False and body["first_bad"] == 5 and "missing" in report["problem"]


async def test_a_consistent_rewrite_of_the_chain_is_caught_by_the_signed_checkpoint(
        api: Api, db: asyncpg.Connection, settings: Settings) -> None:
    app = api.client.app
    await _append(app, 10)
    await _checkpoint(app)
    await _append(app, 5)
    await _rewrite_whole_chain(db)
    async with app[POOL].acquire() as conn:
        assert (await verify_chain(conn)).ok, "the rewrite is consistent inside the database"
    body, report = await _verify_both(api, settings)
    assert body["ok"] is False and body["checkpoints"] == 1
    assert body["first_bad"] is not None and "signed checkpoint" in report["problem"]


async def test_a_missing_checkpoint_is_found_by_api_and_cli(
        api: Api, db: asyncpg.Connection, settings: Settings) -> None:
    app = api.client.app
    await _append(app, 3)
    first = await _checkpoint(app)
    await _append(app, 3)
    await _checkpoint(app)
    admin = _admin_store(settings)
    try:
        await admin.delete([first.object_key])
    finally:
        await admin.close()
    # The locked bucket keeps the version under a delete marker: the deletion is the fault.
    body, report = await _verify_both(api, settings)
    assert body["ok"] is False and body["first_bad"] == first.seq
    assert "was deleted from the bucket" in report["problem"]
    # Its row gone too: still found.
    await db.execute("DELETE FROM audit_checkpoints WHERE seq = $1", first.seq)
    body, report = await _verify_both(api, settings)
    assert body["ok"] is False and body["first_bad"] == first.seq
    assert "was deleted from the bucket" in report["problem"]


async def test_the_newest_checkpoint_hidden_with_its_row_is_still_found(
        api: Api, db: asyncpg.Connection, settings: Settings) -> None:
    """Someone holding the database and the main S3 credential deletes the newest checkpoint
    (a plain DELETE, which Object Lock allows: a delete marker) and its row. No later
    checkpoint names it; the delete marker still gives it away."""
    app = api.client.app
    await _append(app, 3)
    await _checkpoint(app)
    await _append(app, 3)
    newest = await _checkpoint(app)
    admin = _admin_store(settings)
    try:
        await admin.delete([newest.object_key])
    finally:
        await admin.close()
    await db.execute("DELETE FROM audit_checkpoints WHERE seq = $1", newest.seq)
    body, report = await _verify_both(api, settings)
    assert body["ok"] is False and body["first_bad"] <= newest.seq
    assert "was deleted from the bucket" in report["problem"]
    code, out = await asyncio.to_thread(_cli, settings, "audit", "export-checkpoints")
    exported = {c["seq"]: c for c in json.loads(out)["checkpoints"]}
    assert exported[newest.seq]["deleted"] is True and exported[newest.seq]["note"].strip()
    assert not any(c["deleted"] for seq, c in exported.items() if seq != newest.seq)


async def test_a_checkpoint_whose_row_was_lost_after_its_upload_is_no_false_alarm(
        api: Api, db: asyncpg.Connection, settings: Settings) -> None:
    """The database can fail between a checkpoint's upload and its row's commit (a failover):
    the object stays and the next checkpoint names the one before it. Not a fault; hiding a
    checkpoint the next one names still is (above)."""
    app = api.client.app
    await _append(app, 3)
    await _checkpoint(app)
    await _append(app, 3)
    orphan = await _checkpoint(app)
    await db.execute("DELETE FROM audit_checkpoints WHERE seq = $1", orphan.seq)
    await _append(app, 3)
    await _checkpoint(app)
    body, report = await _verify_both(api, settings)
    assert body["ok"] is True, body
    assert body["checkpoints"] >= 3


async def test_a_head_rolled_back_behind_the_last_checkpoint_is_found_by_api_and_cli(
        api: Api, db: asyncpg.Connection, settings: Settings) -> None:
    app = api.client.app
    await _append(app, 10)
    checkpoint = await _checkpoint(app)
    keep = checkpoint.seq - 4
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")
        await db.execute("DELETE FROM audit_events WHERE seq > $1", keep)
        await db.execute("UPDATE audit_head SET seq = $1, hash = (SELECT hash FROM audit_events"
                         " WHERE seq = $1)", keep)
        await db.execute("DELETE FROM audit_checkpoints")
    async with app[POOL].acquire() as conn:
        assert (await verify_chain(conn)).ok, "the shortened chain is consistent by itself"
    body, report = await _verify_both(api, settings)
    assert body["ok"] is False and keep < body["first_bad"] <= checkpoint.seq
    assert "behind the signed checkpoint" in report["problem"]


async def test_a_checkpoint_with_a_bad_signature_is_found_by_api_and_cli(
        api: Api, db: asyncpg.Connection, settings: Settings) -> None:
    app = api.client.app
    await _append(app, 6)
    checkpoint = await _checkpoint(app)
    forger = NoteSigner(settings.audit_origin, os.urandom(32))
    text = CheckpointText(settings.audit_origin, checkpoint.seq, bytes(32), 1, None)
    admin = _admin_store(settings)
    try:
        await admin.put_bytes(checkpoint.object_key, forger.sign(text.render()).encode())
    finally:
        await admin.close()
    body, report = await _verify_both(api, settings)
    assert body["ok"] is False and body["first_bad"] == checkpoint.seq
    assert "not validly signed" in report["problem"]


async def test_a_forged_epoch_in_the_database_is_found(
        api: Api, db: asyncpg.Connection, settings: Settings) -> None:
    app = api.client.app
    await _append(app, 4)
    await _checkpoint(app)
    await db.execute("UPDATE audit_head SET epoch = 2")
    body, report = await _verify_both(api, settings)
    assert body["ok"] is False and "no signed start" in report["problem"]


async def test_periodic_writer_checkpoints_only_when_the_head_moved(
        api: Api, settings: Settings) -> None:
    from service.audit.checkpoints import checkpoint_once
    from service.http.keys import AUDIT_SIGNER, CHECKPOINTS, POOL

    app = api.client.app
    once = (app[POOL], app[CHECKPOINTS], app[AUDIT_SIGNER])
    written = 'tallenne_audit_checkpoints_total{outcome="written"}'
    before = await metric(api.client, written)
    await _append(app, 3)
    assert await checkpoint_once(*once) is True
    assert await checkpoint_once(*once) is False
    await _append(app, 1)
    assert await checkpoint_once(*once) is True
    admin = _admin_store(settings)
    try:
        assert len(await admin.list_keys(PREFIX)) == 2
    finally:
        await admin.close()
    assert await metric(api.client, written) - before == 2  # /metrics counts them


@pytest.mark.checkpoint_lock
async def test_the_checkpoint_credential_only_writes_and_readyz_tells_the_lock_truthfully(
        api: Api, settings: Settings) -> None:
    app = api.client.app
    await _append(app, 2)
    checkpoint = await _checkpoint(app)
    writer = app[CHECKPOINTS].writer
    assert writer is not app[CHECKPOINTS].reader
    with pytest.raises(Unavailable):
        await writer.get_bytes(checkpoint.object_key)
    ready = await api.client.get("/readyz")
    assert ready.status == 200
    lock = (await ready.json())["audit_checkpoint_lock"]
    assert lock == "enforced" or lock.startswith("not enforced: ")
    # What the start-up probe did, once more: a locked version, deleted by the stronger
    # credential, must be refused exactly when readyz says the lock is enforced.
    until = datetime.now(UTC) + timedelta(seconds=3)
    written = await writer.run(writer.client.put_object, writer.bucket, "audit/lock-check",
                               io.BytesIO(b"x"), 1, retention=Retention(COMPLIANCE, until))
    admin = _admin_store(settings)
    try:
        try:
            await admin.run(admin.client.remove_object, admin.bucket, "audit/lock-check",
                            version_id=written.version_id)
        except Unavailable:
            deleted = False
        else:
            deleted = True
    finally:
        await admin.close()
    assert deleted == (lock != "enforced")


async def _audio_bucket_checkpoints(app: Any) -> list[str]:
    from service.http.keys import OBJECTS

    keys: list[str] = await app[OBJECTS].list_keys(PREFIX)
    return keys
