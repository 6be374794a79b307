"""`tallenne backup`, `backup --verify` and `restore` run as a user runs them (the CLI in a
subprocess): backups are encrypted, private and hold no owner key; a backup taken before an
erasure, restored with every secret and the current key snapshot into a new database and a new
bucket, never opens the erased customer's calls while everyone else's replay byte-identical;
restore works on a never-migrated database and onto a surviving bucket; a deployment with
data and an altered backup are refused; a backup stopped midway (Ctrl-C, SIGTERM) leaves
nothing behind, and rotation removes the leftovers of one that was killed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.app import create_app
from service.audit.checkpoints import opened_checkpoint_bucket
from service.cli.commands.backup import backup_key, pg_tools
from service.http.keys import AUDIT_SIGNER, CHECKPOINTS, POOL
from service.settings import Settings
from storage import key_snapshot
from storage.backup import BackupCipher, Manifest, decrypted_chunks, dump_path, take_backup
from storage.checkpoints import write_checkpoint
from storage.crypto import load_master_key, unwrap_key
from storage.errors import IntegrityError, Unavailable
from storage.keys import (
    MasterKeys,
    company_key_context,
    customer_key_context,
    recording_key_context,
)
from tests import audiogen
from tests.conftest import Stack, drop_bucket, drop_database, fresh_database, settings_for
from tests.helpers import Api, bearer, settings_env
from tests.service.data_subject_factory import A, customer, personal_id, recording_of
from tests.service.recording_factory import bucket_keys, metadata, object_store, upload

ROOT = Path(__file__).resolve().parents[2]


def cli_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings_env(settings), "TALLENNE_ALLOW_TEST_IDS": "1"}


async def tallenne(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "service.cli", *args], env=cli_env(settings),
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )


async def replay(client: TestClient[Any, Any], token: str, recording_id: str) -> bytes:
    response = await client.get(f"/api/v1/recordings/{recording_id}/audio",
                                params={"reason": "restore drill"}, headers=bearer(token))
    assert response.status == 200, await response.text()
    return await response.read()


def never_migrated_database(stack: Stack) -> str:
    """A new database with nothing in it: no schema of ours, no function, no row."""
    name = "t_new_" + uuid.uuid4().hex[:10]

    async def create() -> None:
        admin = await asyncpg.connect(stack.superuser_url("postgres"))
        await admin.execute(f"CREATE DATABASE {name} OWNER tallenne_owner")
        await admin.close()

    asyncio.run(create())
    return name


async def backed_up(settings: Settings, directory: Path) -> dict[str, Any]:
    done = await tallenne(settings, "backup", str(directory))
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


async def stored_calls(api: Api) -> dict[str, bytes]:
    token = await api.token("ingest", [A])
    originals: dict[str, bytes] = {}
    for kind in ("wav_mulaw", "mp3", "flac"):
        path = audiogen.make_audio(kind, 3.0)
        response = await upload(api.client, token, metadata(), path)
        assert response.status == 201, await response.text()
        originals[(await response.json())["id"]] = path.read_bytes()
    return originals


async def test_restore_into_a_never_migrated_database_replays_every_call_byte_identical(
    api: Api, settings: Settings, stack: Stack, tmp_path: Path
) -> None:
    originals = await stored_calls(api)
    report = await backed_up(settings, tmp_path / "b")
    assert report["objects"]["recording"] == 3
    assert report["key_snapshot"]["bucket"] == settings.key_bucket

    database = await asyncio.to_thread(never_migrated_database, stack)
    # A new audio bucket; the key bucket is the one that survived.
    target = settings_for(stack, database, "t-" + database.removeprefix("t_").replace("_", "-"),
                          s3_key_bucket=settings.key_bucket)
    try:
        restored = await tallenne(target, "restore", str(tmp_path / "b"))
        assert restored.returncode == 0, restored.stderr
        result = json.loads(restored.stdout)
        assert result["ok"] is True
        assert result["recordings_restored"] == 3
        assert result["objects_uploaded"] >= 3
        assert result["audit"]["ok"] is True
        assert result["reconcile"]["orphan_objects"] == 0
        assert result["keys"]["company_keys"] >= 1 and result["recordings_without_key"] == 0
        assert "restore: loading the database dump" in restored.stderr
        async with TestClient(TestServer(create_app(target))) as client:
            target_api = Api(client, stack.superuser_url(database))
            quality = await target_api.token("quality", [A])
            for recording_id, original in originals.items():
                assert await replay(client, quality, recording_id) == original
            verify = await client.get("/api/v1/audit/verify", headers=bearer(
                await target_api.token("admin", all_companies=True)))
            assert (await verify.json())["ok"] is True
        manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
        assert sorted(await bucket_keys(target)) == sorted(
            o["key"] for o in manifest["objects"] if o["kind"] == "recording")
    finally:
        await asyncio.to_thread(drop_database, stack, database)
        await asyncio.to_thread(drop_bucket, stack, target.s3_bucket)
        await asyncio.to_thread(drop_bucket, stack, target.audit_bucket)


async def test_backup_files_are_encrypted_private_and_verified_without_a_restore(
    api: Api, settings: Settings, tmp_path: Path
) -> None:
    await stored_calls(api)
    await backed_up(settings, tmp_path / "b")
    directory = tmp_path / "b"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for path in directory.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["encryption"]["cipher"] == "AES-256-GCM"
    assert not dump_path(directory).read_bytes().startswith(b"PGDMP")  # not a bare dump
    store = object_store(settings)
    try:
        entry = next(o for o in manifest["objects"] if o["kind"] == "recording")
        as_stored = await store.get_bytes(entry["key"])
    finally:
        await store.close()
    copy = (directory / "objects" / (entry["key"] + ".enc")).read_bytes()
    assert as_stored[:4096] not in copy  # sealed again under the backup key

    checked = await tallenne(settings, "backup", "--verify", str(directory))
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["ok"] is True and report["problems"] == []
    assert report["files_verified"] == report["files"] == len(manifest["objects"]) + 1

    wrong = settings.model_copy(update={"backup_key": settings.master_key})
    refused = await tallenne(wrong, "backup", "--verify", str(directory))
    assert refused.returncode == 1
    assert "fails authentication" in refused.stderr


async def test_backup_verify_reports_an_altered_or_missing_file(
    api: Api, settings: Settings, tmp_path: Path
) -> None:
    await stored_calls(api)
    await backed_up(settings, tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    first, second = [o["key"] for o in manifest["objects"] if o["kind"] == "recording"][:2]
    victim = tmp_path / "b" / "objects" / (first + ".enc")
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    (tmp_path / "b" / "objects" / (second + ".enc")).unlink()
    checked = await tallenne(settings, "backup", "--verify", str(tmp_path / "b"))
    assert checked.returncode == 1
    report = json.loads(checked.stdout)
    assert report["ok"] is False and len(report["problems"]) == 2
    assert any(first in p and "fails authentication" in p for p in report["problems"])
    assert any(second in p and "lacks" in p for p in report["problems"])


async def test_backup_before_an_erasure_never_opens_the_erased_calls_after_a_restore(
    api: Api, settings: Settings, stack: Stack, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """The claim of the key store: a backup taken before an erasure, restored with every
    secret of the deployment and the key snapshot as it is after the erasure, into a new
    database and a new bucket: the erased customer's calls are never audio again, everyone
    else's replay byte-identical."""
    erased_id = await customer(api, [A], number="7001")
    kept_id = await customer(api, [A], number="8001", personal_id=personal_id("020390"))
    erased_calls = [await recording_of(api, A, "70010", kind=k, seconds=2.0)
                    for k in ("wav_pcm", "mp3")]
    kept_call, kept_path = await recording_of(api, A, "80010", kind="flac", seconds=2.0)
    anonymous = audiogen.make_audio("wav_alaw", 2.0)
    response = await upload(api.client, await api.token("ingest", [A]), metadata(), anonymous)
    assert response.status == 201, await response.text()
    anonymous_call = (await response.json())["id"]
    erased_rows = [await db.fetchrow("SELECT * FROM recordings WHERE id = $1", uuid.UUID(r))
                   for r, _ in erased_calls]
    erased_key = await db.fetchval(
        "SELECT wrapped_key FROM customer_keys WHERE customer_id = $1", uuid.UUID(erased_id))

    await backed_up(settings, tmp_path / "b")
    dpo = await api.token("dpo", [A])
    response = await api.client.post(f"/api/v1/customers/{erased_id}/erasure",
                                     json={"reason": "data subject's request"},
                                     headers=bearer(dpo))
    assert response.status == 200, await response.text()

    # The operator carries the current key snapshot to the new site.
    keys_store = object_store(settings.model_copy(update={"s3_bucket": settings.key_bucket}))
    try:
        (tmp_path / "key-snapshot").write_bytes(await keys_store.get_bytes("key-snapshot"))
    finally:
        await keys_store.close()

    # The backup itself holds no key: its dump's key store tables are empty.
    assert settings.backup_key is not None and settings.master_key is not None
    manifest, cipher = Manifest.load(tmp_path / "b",
                                     load_master_key(settings.backup_key.get_secret_value()))
    script = await dump_as_sql(tmp_path, manifest, cipher)
    for table in ("customer_keys", "company_keys"):
        assert f"CREATE TABLE public.{table} " in script  # the table, without its rows
        assert f"COPY public.{table} " not in script
    assert "COPY public.customers " in script
    assert bytes(erased_key).hex() not in script

    database = await asyncio.to_thread(never_migrated_database, stack)
    suffix = database.removeprefix("t_").replace("_", "-")
    target = settings_for(stack, database, "t-" + suffix, s3_key_bucket=f"k-{suffix}")
    try:
        restored = await tallenne(target, "restore", str(tmp_path / "b"),
                                  "--key-snapshot", str(tmp_path / "key-snapshot"))
        assert restored.returncode == 0, restored.stderr
        result = json.loads(restored.stdout)
        assert result["ok"] is True, result
        assert result["customers_erased_again"] == 1
        assert result["recordings_skipped_as_erased"] == 2
        async with TestClient(TestServer(create_app(target))) as client:
            target_api = Api(client, stack.superuser_url(database))
            quality = await target_api.token("quality", [A])
            for recording_id, _ in erased_calls:
                gone = await client.get(f"/api/v1/recordings/{recording_id}/audio",
                                        params={"reason": "restore drill"},
                                        headers=bearer(quality))
                assert gone.status in (404, 410), await gone.text()
                assert gone.content_type == "application/problem+json"
            assert await replay(client, quality, kept_call) == kept_path.read_bytes()
            assert await replay(client, quality, anonymous_call) == anonymous.read_bytes()
            service = await target_api.token("customer_service", [A])
            found = await client.get(f"/api/v1/customers/{kept_id}", headers=bearer(service))
            assert found.status == 200

        # With everything the restored deployment holds, the erased calls' data keys stay
        # shut: no key of the store (nor the master key) unwraps them.
        masters = MasterKeys.single(load_master_key(settings.master_key.get_secret_value()))
        conn = await asyncpg.connect(stack.superuser_url(database))
        try:
            candidates = [masters.current] + [
                masters.unwrap(r["kek_version"], r["wrapped_key"],
                               context=customer_key_context(r["customer_id"]))
                for r in await conn.fetch("SELECT * FROM customer_keys")] + [
                masters.unwrap(r["kek_version"], r["wrapped_key"],
                               context=company_key_context(r["company_id"]))
                for r in await conn.fetch("SELECT * FROM company_keys")]
            person = await conn.fetchrow("SELECT name, erased_at FROM customers WHERE id = $1",
                                         uuid.UUID(erased_id))
        finally:
            await conn.close()
        assert person["name"] is None and person["erased_at"] is not None
        assert len(candidates) >= 3
        for row in erased_rows:
            contexts = [recording_key_context(row["id"], "customer", row["key_owner_id"]),
                        recording_key_context(row["id"], "company", row["company_id"])]
            for candidate in candidates:
                for context in contexts:
                    with pytest.raises(IntegrityError):
                        unwrap_key(candidate, row["wrapped_key"], context=context)
        # Nor does the key snapshot the restore was given hold the erased customer's key.
        source = key_snapshot.SnapshotSource(path=tmp_path / "key-snapshot")
        held: list[uuid.UUID] = []

        async def sink(batch: key_snapshot.KeyBatch) -> None:
            held.extend(owner_id for _, owner_id, _, _ in batch)

        contents = await source.read(masters, sink)
        assert uuid.UUID(erased_id) not in held and uuid.UUID(kept_id) in held
        assert uuid.UUID(erased_id) in contents.erased
    finally:
        await asyncio.to_thread(drop_database, stack, database)
        await asyncio.to_thread(drop_bucket, stack, target.s3_bucket)
        await asyncio.to_thread(drop_bucket, stack, target.audit_bucket)
        await asyncio.to_thread(drop_bucket, stack, target.key_bucket)


async def dump_as_sql(tmp_path: Path, manifest: Manifest, cipher: BackupCipher) -> str:
    """The backup's dump as the SQL script pg_restore would run (decrypted with the backup
    key, converted without any database)."""
    db = manifest.database
    plain = tmp_path / "dump.plain"
    with plain.open("wb") as out:
        for chunk in decrypted_chunks(dump_path(tmp_path / "b"), db["dump"], int(db["size"]),
                                      db["sha256"], cipher):
            out.write(chunk)
    done = await asyncio.to_thread(
        subprocess.run, [pg_tools().command("pg_restore"), "-f", "-", str(plain)],
        capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


@contextlib.asynccontextmanager
async def restored_onto_the_surviving_bucket(
    settings: Settings, stack: Stack, backup_dir: Path, erased_call: str, kept_call: str,
    kept_path: Path,
) -> AsyncIterator[tuple[dict[str, Any], Api, str]]:
    """The backup restored into a new database on the test's own (surviving) bucket: the
    report, the restored deployment (while the block runs) and its database's name. The
    erased call is gone there, the kept one replays byte-identical, one object is left."""
    database = await asyncio.to_thread(fresh_database, stack)
    target = settings_for(stack, database, settings.s3_bucket)
    try:
        restored = await tallenne(target, "restore", str(backup_dir))
        assert restored.returncode == 0, restored.stderr
        result = json.loads(restored.stdout)
        assert result["ok"] is True, result
        async with TestClient(TestServer(create_app(target))) as client:
            target_api = Api(client, stack.superuser_url(database))
            quality = await target_api.token("quality", [A])
            gone = await client.get(f"/api/v1/recordings/{erased_call}", headers=bearer(quality))
            assert gone.status == 404
            assert await replay(client, quality, kept_call) == kept_path.read_bytes()
            assert len(await bucket_keys(target)) == 1
            yield result, target_api, database
    finally:
        await asyncio.to_thread(drop_database, stack, database)


async def test_restore_onto_the_surviving_bucket_reapplies_an_erasure_made_after_the_backup(
    api: Api, settings: Settings, stack: Stack, tmp_path: Path
) -> None:
    """The database is lost and restored from an older backup; the bucket and the key bucket
    survived: the erasure ledger erases the customer again, audio included, and the objects
    already there are kept."""
    customer_id = await customer(api, [A], number="7001")
    erased_call, _ = await recording_of(api, A, "70010", kind="wav_pcm", seconds=2.0)
    kept_path = audiogen.make_audio("wav_alaw", 2.0)
    response = await upload(api.client, await api.token("ingest", [A]), metadata(), kept_path)
    assert response.status == 201, await response.text()
    kept_call = (await response.json())["id"]
    app = api.client.app
    await write_checkpoint(app[POOL], app[CHECKPOINTS], app[AUDIT_SIGNER])
    await backed_up(settings, tmp_path / "b")

    dpo = await api.token("dpo", [A])
    response = await api.client.post(f"/api/v1/customers/{customer_id}/erasure",
                                     json={"reason": "data subject's request"},
                                     headers=bearer(dpo))
    assert response.status == 200, await response.text()
    # Signed after the backup: the restored chain is behind it, legitimately.
    after_backup = await write_checkpoint(app[POOL], app[CHECKPOINTS], app[AUDIT_SIGNER])

    async with restored_onto_the_surviving_bucket(
            settings, stack, tmp_path / "b", erased_call, kept_call, kept_path,
    ) as (result, target_api, database):
        assert result["customers_erased_again"] == 1
        assert result["recordings_skipped_as_erased"] == 1
        assert result["objects_already_present"] >= 1 and result["objects_uploaded"] == 0
        assert result["audit"]["ok"] is True, result["audit"]
        assert result["audit"]["epoch"] == 2
        assert result["audit"]["epoch_starts_at"] < after_backup.seq
        verify = await target_api.client.get("/api/v1/audit/verify", headers=bearer(
            await target_api.token("admin", all_companies=True)))
        assert (await verify.json())["ok"] is True
        conn = await asyncpg.connect(stack.superuser_url(database))
        try:
            row = await conn.fetchrow("SELECT name, erased_at FROM customers WHERE id = $1",
                                      uuid.UUID(customer_id))
            key_left = await conn.fetchval(
                "SELECT count(*) FROM customer_keys WHERE customer_id = $1",
                uuid.UUID(customer_id))
        finally:
            await conn.close()
        assert row["name"] is None and row["erased_at"] is not None and key_left == 0


async def test_restore_onto_the_surviving_bucket_erases_again_a_call_erased_after_the_backup(
    api: Api, settings: Settings, stack: Stack, tmp_path: Path
) -> None:
    """A single call erased after the backup (no customer erased) does not come back with
    the older database: its ledger entry in S3 reduces it to its tombstone again."""
    ingest = await api.token("ingest", [A])
    calls = []
    for number, tone in (("0401111111", 440.0), ("0402222222", 880.0)):
        path = audiogen.make_audio("wav_pcm", 1.0, tone_hz=tone)
        response = await upload(api.client, ingest, metadata(caller=number), path)
        assert response.status == 201, await response.text()
        calls.append(((await response.json())["id"], path))
    (erased_call, _), (kept_call, kept_path) = calls
    app = api.client.app
    await write_checkpoint(app[POOL], app[CHECKPOINTS], app[AUDIT_SIGNER])
    await backed_up(settings, tmp_path / "b")

    dpo = await api.token("dpo", [A])
    response = await api.client.delete(f"/api/v1/recordings/{erased_call}",
                                       json={"reason": "rekisteröidyn pyyntö"},
                                       headers=bearer(dpo))
    assert response.status == 200, await response.text()

    async with restored_onto_the_surviving_bucket(
            settings, stack, tmp_path / "b", erased_call, kept_call, kept_path,
    ) as (result, _, database):
        assert result["recordings_erased_again"] == 1
        assert result["customers_erased_again"] == 0
        conn = await asyncpg.connect(stack.superuser_url(database))
        try:
            tombstone = await conn.fetchval(
                "SELECT count(*) FROM recording_tombstones WHERE id = $1",
                uuid.UUID(erased_call))
        finally:
            await conn.close()
        assert tombstone == 1


async def test_restore_refuses_a_deployment_that_holds_data(
    api: Api, settings: Settings, tmp_path: Path
) -> None:
    token = await api.token("ingest", [A])
    response = await upload(api.client, token, metadata(), audiogen.make_audio("wav_pcm", 1.0))
    assert response.status == 201
    await backed_up(settings, tmp_path / "b")
    refused = await tallenne(settings, "restore", str(tmp_path / "b"))
    assert refused.returncode == 1
    assert "not empty" in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith("tallenne: error:")


async def test_restore_refuses_a_backup_whose_object_was_altered(
    api: Api, settings: Settings, stack: Stack, tmp_path: Path
) -> None:
    token = await api.token("ingest", [A])
    response = await upload(api.client, token, metadata(), audiogen.make_audio("wav_pcm", 1.0))
    assert response.status == 201
    await backed_up(settings, tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    key = next(o["key"] for o in manifest["objects"] if o["kind"] == "recording")
    victim = tmp_path / "b" / "objects" / (key + ".enc")
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))

    database = await asyncio.to_thread(fresh_database, stack)
    target = settings_for(stack, database, "t-" + database.removeprefix("t_"),
                          s3_key_bucket=settings.key_bucket)
    try:
        refused = await tallenne(target, "restore", str(tmp_path / "b"))
        assert refused.returncode == 1
        assert "fails authentication" in refused.stderr
        assert await bucket_keys(target) == []  # the altered copy never reached the bucket
    finally:
        await asyncio.to_thread(drop_database, stack, database)
        await asyncio.to_thread(drop_bucket, stack, target.s3_bucket)
        await asyncio.to_thread(drop_bucket, stack, target.audit_bucket)


async def test_restore_refuses_a_key_snapshot_older_than_the_backup(
    api: Api, settings: Settings, stack: Stack, tmp_path: Path
) -> None:
    await customer(api, [A], number="7001")
    written = await tallenne(settings, "keys", "snapshot")
    assert written.returncode == 0, written.stderr
    keys_store = object_store(settings.model_copy(update={"s3_bucket": settings.key_bucket}))
    try:
        (tmp_path / "old-snapshot").write_bytes(await keys_store.get_bytes("key-snapshot"))
    finally:
        await keys_store.close()
    await backed_up(settings, tmp_path / "b")
    database = await asyncio.to_thread(fresh_database, stack)
    target = settings_for(stack, database, "t-" + database.removeprefix("t_"))
    try:
        refused = await tallenne(target, "restore", str(tmp_path / "b"),
                                 "--key-snapshot", str(tmp_path / "old-snapshot"))
        assert refused.returncode == 1
        assert "older than" in refused.stderr
    finally:
        await asyncio.to_thread(drop_database, stack, database)
        await asyncio.to_thread(drop_bucket, stack, target.s3_bucket)
        await asyncio.to_thread(drop_bucket, stack, target.audit_bucket)


async def test_rotated_backups_keep_only_the_newest_complete_ones(
    api: Api, settings: Settings, tmp_path: Path
) -> None:
    token = await api.token("ingest", [A])
    response = await upload(api.client, token, metadata(), audiogen.make_audio("wav_pcm", 1.0))
    assert response.status == 201
    (tmp_path / "notes").mkdir()
    names = []
    for _ in range(3):
        done = await tallenne(settings, "backup", str(tmp_path), "--keep", "2")
        assert done.returncode == 0, done.stderr
        names.append(json.loads(done.stdout)["directory"].rsplit("/", 1)[-1])
        await asyncio.sleep(1.1)  # one backup per second at most: names are UTC seconds
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([*names[1:], "notes"])


async def test_rotation_removes_incomplete_backups_older_than_the_newest_complete_one(
    api: Api, settings: Settings, tmp_path: Path
) -> None:
    """A backup killed midway (SIGKILL, a node lost) leaves a dated directory without a
    manifest: the next rotation removes it once a newer backup is complete; one newer than
    that may be under way and is left, as is anything not named like a backup."""
    token = await api.token("ingest", [A])
    response = await upload(api.client, token, metadata(), audiogen.make_audio("wav_pcm", 1.0))
    assert response.status == 201
    killed = tmp_path / "20200101T000000Z"
    (killed / "objects").mkdir(parents=True)
    (killed / "metadata.dump.enc").write_bytes(os.urandom(1000))
    (tmp_path / "29990101T000000Z").mkdir()
    (tmp_path / "notes").mkdir()
    done = await tallenne(settings, "backup", str(tmp_path), "--keep", "2")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    taken = Path(report["directory"]).name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [taken, "29990101T000000Z", "notes"])
    assert report["pruned"] == ["20200101T000000Z"]


async def test_backup_stopped_by_sigterm_removes_its_directory_and_its_pg_dump(
    api: Api, settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """A CronJob past its deadline sends SIGTERM: the backup stops as on Ctrl-C, pg_dump
    with it, and the dated directory it had begun is removed (no half-written backup, which
    rotation would never count or delete)."""
    await stored_calls(api)
    (tmp_path / "notes").mkdir()
    lock = db.transaction()
    await lock.start()
    try:
        # pg_dump waits for this table while the objects are being copied.
        await db.execute("LOCK TABLE recording_annotations IN ACCESS EXCLUSIVE MODE")
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "backup", str(tmp_path), "--keep", "2"],
            env=cli_env(settings), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        try:
            deadline = time.monotonic() + 120
            while True:
                # Inside a transaction the activity is read once unless cleared.
                await db.execute("SELECT pg_stat_clear_snapshot()")
                if await db.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND application_name = 'pg_dump' AND wait_event_type = 'Lock'"):
                    break
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "pg_dump never reached the locked table"
                await asyncio.sleep(0.05)
            begun = [p for p in tmp_path.iterdir() if p.name != "notes"]
            assert len(begun) == 1 and (begun[0] / "metadata.dump.enc").exists()
            process.send_signal(signal.SIGTERM)
            _, err = await asyncio.to_thread(process.communicate, timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    finally:
        await lock.rollback()
    assert [p.name for p in tmp_path.iterdir()] == ["notes"]
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "tallenne: stopped by SIGTERM"
    deadline = time.monotonic() + 10
    while await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name ="
                            " 'pg_dump' AND datname = current_database()"):
        assert time.monotonic() < deadline, "pg_dump was left running"
        await asyncio.sleep(0.1)


async def test_a_backup_whose_key_snapshot_fails_says_so_and_leaves_no_manifest_or_pg_dump(
    api: Api, settings: Settings, tmp_path: Path
) -> None:
    """The key snapshot and the objects are taken while pg_dump runs: when that side fails,
    the backup fails with its error once the dump is done, writes no manifest (so it is
    never taken for a complete backup) and leaves no pg_dump running."""
    await stored_calls(api)

    async def refused() -> dict[str, Any]:
        raise Unavailable("the object store refused the request (AccessDenied)")

    assert settings.database_owner_url is not None
    objects = object_store(settings)
    try:
        async with opened_checkpoint_bucket(settings) as checkpoints:
            with pytest.raises(Unavailable, match="AccessDenied"):
                await take_backup(
                    settings.database_owner_url.get_secret_value(), objects,
                    tmp_path / "b", pg_tools(), backup_key(settings), refused,
                    checkpoints.reader)
    finally:
        await objects.close()
    assert not (tmp_path / "b" / "manifest.json").exists()
    assert [p.name() for p in psutil.Process().children(recursive=True)
            if p.name() == "pg_dump"] == []


async def test_after_a_point_in_time_recovery_the_command_erases_again_and_opens_an_epoch(
    api: Api, settings: Settings, db: asyncpg.Connection
) -> None:
    """PostgreSQL recovered to a moment before an erasure (from the WAL archive, not by
    `tallenne restore`): the person, their key and their call are back, the audit chain is
    behind a signed checkpoint. `tallenne after-restore` erases them again, starts a new
    epoch, and the trail verifies; run again, it erases nothing."""
    customer_id = await customer(api, [A], number="7001")
    call, _ = await recording_of(api, A, "70010", kind="wav_pcm", seconds=2.0)
    cid = uuid.UUID(customer_id)
    app = api.client.app
    await write_checkpoint(app[POOL], app[CHECKPOINTS], app[AUDIT_SIGNER])
    moment = {
        "customer": await db.fetchrow("SELECT * FROM customers WHERE id = $1", cid),
        "key": await db.fetchrow("SELECT * FROM customer_keys WHERE customer_id = $1", cid),
        "memberships": await db.fetch("SELECT * FROM customer_memberships"
                                      " WHERE customer_id = $1", cid),
        "call": await db.fetchrow("SELECT * FROM recordings WHERE id = $1", uuid.UUID(call)),
        "head": await db.fetchval("SELECT seq FROM audit_head"),
    }
    dpo = await api.token("dpo", [A])
    response = await api.client.post(f"/api/v1/customers/{customer_id}/erasure",
                                     json={"reason": "data subject's request"},
                                     headers=bearer(dpo))
    assert response.status == 200, await response.text()
    await write_checkpoint(app[POOL], app[CHECKPOINTS], app[AUDIT_SIGNER])

    # The recovery: every table as it was at `moment`.
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")
        person = moment["customer"]
        await db.execute(
            "UPDATE customers SET name = $2, personal_id_enc = $3, personal_id_hash = $4,"
            " email = $5, erased_at = NULL WHERE id = $1", cid, person["name"],
            person["personal_id_enc"], person["personal_id_hash"], person["email"])
        await db.execute("INSERT INTO customer_keys (customer_id, kek_version, wrapped_key)"
                         " VALUES ($1, $2, $3)", cid, moment["key"]["kek_version"],
                         moment["key"]["wrapped_key"])
        for m in moment["memberships"]:
            await db.execute("INSERT INTO customer_memberships (customer_id, company_id,"
                             " customer_number) VALUES ($1, $2, $3)",
                             cid, m["company_id"], m["customer_number"])
        await db.execute("DELETE FROM recording_tombstones")
        row = moment["call"]
        columns = list(row.keys())
        await db.execute(
            f"INSERT INTO recordings ({', '.join(columns)}) VALUES"
            f" ({', '.join(f'${i + 1}' for i in range(len(columns)))})", *row.values())
        await db.execute("DELETE FROM erasure_ledger")
        await db.execute("DELETE FROM audit_events WHERE seq > $1", moment["head"])
        await db.execute("UPDATE audit_head SET seq = $1, hash = (SELECT hash FROM audit_events"
                         " WHERE seq = $1)", moment["head"])
        await db.execute("DELETE FROM audit_checkpoints WHERE seq > $1", moment["head"])
    admin = await api.token("admin", all_companies=True)
    before = await (await api.client.get("/api/v1/audit/verify", headers=bearer(admin))).json()
    assert before["ok"] is False  # the roll-back looks like tampering until it is declared

    done = await tallenne(settings, "after-restore")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert (report["customers_erased_again"], report["epoch"]) == (1, 2), report
    assert "after-restore: re-applying the erasure ledger" in done.stderr
    person = await db.fetchrow("SELECT name, erased_at FROM customers WHERE id = $1", cid)
    assert person["name"] is None and person["erased_at"] is not None
    assert await db.fetchval("SELECT count(*) FROM customer_keys WHERE customer_id = $1",
                             cid) == 0
    assert await db.fetchval("SELECT count(*) FROM recordings WHERE id = $1",
                             uuid.UUID(call)) == 0
    after = await (await api.client.get("/api/v1/audit/verify", headers=bearer(admin))).json()
    assert after["ok"] is True, after
    again = await tallenne(settings, "after-restore")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["customers_erased_again"] == 0
