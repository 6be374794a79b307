"""The key store: owner keys apart from the other tables, seen only in their companies; the
key snapshot overwritten at once by every erasure; a call whose key is gone answers 410, never
audio; and the master key rotated without a byte of audio changing."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from service.app import create_app
from service.settings import Settings
from storage import key_snapshot
from storage.crypto import load_master_key
from storage.db import Scope, scoped
from storage.errors import IntegrityError
from storage.keys import MasterKeys, load_master_keys
from storage.objects import ObjectStore
from tests import audiogen
from tests.helpers import Api, bearer, settings_env
from tests.service.data_subject_factory import A, B, customer, personal_id, recording_of
from tests.service.recording_factory import metadata, object_store, upload
from tests.service.retention_factory import app_of

ROOT = Path(__file__).resolve().parents[2]


def key_bucket(settings: Settings) -> ObjectStore:
    return object_store(settings.model_copy(update={"s3_bucket": settings.key_bucket}))


def masters_of(settings: Settings) -> MasterKeys:
    assert settings.master_key is not None
    previous = settings.previous_master_keys
    return load_master_keys(settings.master_key.get_secret_value(), settings.master_key_version,
                            previous.get_secret_value() if previous else None)


async def snapshot_holds(
    settings: Settings, masters: MasterKeys
) -> tuple[set[uuid.UUID], key_snapshot.SnapshotContents]:
    store = key_bucket(settings)
    held: set[uuid.UUID] = set()

    async def sink(batch: key_snapshot.KeyBatch) -> None:
        held.update(owner_id for _, owner_id, _, _ in batch)

    try:
        contents = await key_snapshot.SnapshotSource(store=store).read(masters, sink)
    finally:
        await store.close()
    return held, contents


async def tallenne(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings_env(settings), "TALLENNE_ALLOW_TEST_IDS": "1"}
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "service.cli", *args], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=120, check=False,
    )


async def erase(api: Api, customer_id: str) -> None:
    dpo = await api.token("dpo", [A])
    response = await api.client.post(f"/api/v1/customers/{customer_id}/erasure",
                                     json={"reason": "data subject's request"},
                                     headers=bearer(dpo))
    assert response.status == 200, await response.text()


async def test_an_erasure_overwrites_the_key_snapshot_at_once(
    api: Api, settings: Settings, db: asyncpg.Connection
) -> None:
    erased = uuid.UUID(await customer(api, [A], number="7001"))
    kept = uuid.UUID(await customer(api, [A], number="8001",
                                    personal_id=personal_id("020390")))
    app = app_of(api)
    from service.http.keys import KEY_OBJECTS, KEYRING, POOL

    first = await key_snapshot.write_snapshot(app[POOL], app[KEY_OBJECTS],
                                              app[KEYRING].masters)
    masters = masters_of(settings)
    held, _ = await snapshot_holds(settings, masters)
    assert {erased, kept} <= held

    await erase(api, str(erased))
    held, contents = await snapshot_holds(settings, masters)
    assert erased not in held and kept in held
    assert erased in contents.erased
    assert str(contents.header.snapshot_id) != first.snapshot_id
    state = await db.fetchrow("SELECT due, written FROM key_snapshot_state")
    assert state["written"] == state["due"] > 0
    audited = await db.fetchval(
        "SELECT detail->>'key_snapshot' FROM audit_events WHERE action = 'customer.erase'")
    assert audited == str(contents.header.snapshot_id)


async def test_a_scrub_pass_under_way_does_not_hold_up_the_snapshot_an_erasure_writes(
    api: Api, settings: Settings, db: asyncpg.Connection
) -> None:
    """A scrub pass holds its lock for as long as it reads every object (hours, rate
    limited); the key snapshot an erasure overwrites at once must not wait for it."""
    from service.http.keys import KEY_OBJECTS, KEYRING, POOL
    from service.recordings.scrub import SCRUB_LOCK

    app = app_of(api)
    erased = uuid.UUID(await customer(api, [A], number="7001"))
    await key_snapshot.write_snapshot(app[POOL], app[KEY_OBJECTS], app[KEYRING].masters)
    assert await db.fetchval("SELECT pg_try_advisory_lock($1)", SCRUB_LOCK)
    try:
        await asyncio.wait_for(erase(api, str(erased)), timeout=30)
    finally:
        await db.execute("SELECT pg_advisory_unlock_all()")
    held, _ = await snapshot_holds(settings, masters_of(settings))
    assert erased not in held


async def test_on_a_versioned_key_bucket_an_overwritten_snapshot_leaves_no_older_version(
    api: Api, settings: Settings
) -> None:
    from minio.commonconfig import ENABLED
    from minio.versioningconfig import VersioningConfig

    from service.http.keys import KEY_OBJECTS, KEYRING, POOL

    store = key_bucket(settings)
    try:
        await store.ensure_bucket()
        await store.run(store.client.set_bucket_versioning, store.bucket,
                        VersioningConfig(ENABLED))
        app = app_of(api)
        erased = uuid.UUID(await customer(api, [A], number="7001"))
        first = await key_snapshot.write_snapshot(app[POOL], app[KEY_OBJECTS],
                                                  app[KEYRING].masters)
        await erase(api, str(erased))  # overwrites the snapshot at once

        def snapshot_versions() -> list[str | None]:
            return [v.version_id for v in store.client.list_objects(
                store.bucket, prefix=key_snapshot.OBJECT_KEY, include_version=True)
                if v.object_name == key_snapshot.OBJECT_KEY]

        left = await store.run(snapshot_versions)
        # The version that still held the erased customer's key is gone, not merely hidden.
        assert len(left) == 1
        held, contents = await snapshot_holds(settings, masters_of(settings))
        assert erased not in held and erased in contents.erased
        assert str(contents.header.snapshot_id) != first.snapshot_id
    finally:
        await store.close()


async def test_an_erasure_before_any_backup_writes_no_snapshot(
    api: Api, settings: Settings
) -> None:
    await erase(api, await customer(api, [A]))
    store = key_bucket(settings)
    try:
        assert not await store.run(store.client.bucket_exists, store.bucket)
    finally:
        await store.close()


async def test_a_call_whose_key_is_gone_answers_410_and_never_audio(
    api: Api, db: asyncpg.Connection
) -> None:
    customer_id = await customer(api, [A], number="7001")
    recording_id, _ = await recording_of(api, A, "70010", seconds=1.0)
    # As after a restore with a key snapshot that no longer holds the key.
    await db.execute("DELETE FROM customer_keys WHERE customer_id = $1", uuid.UUID(customer_id))
    quality = await api.token("quality", [A])
    response = await api.client.get(f"/api/v1/recordings/{recording_id}/audio",
                                    params={"reason": "quality review"}, headers=bearer(quality))
    assert response.status == 410
    assert response.content_type == "application/problem+json"
    assert "destroyed" in (await response.json())["detail"]


async def test_a_customer_key_is_seen_only_through_the_customers_companies(
    api: Api, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    customer_id = uuid.UUID(await customer(api, [A]))
    a_id, b_id = [await db.fetchval("SELECT id FROM companies WHERE code = $1", c)
                  for c in (A, B)]
    async with scoped(pool, Scope.of([b_id])) as conn:
        assert await conn.fetchval("SELECT count(*) FROM customer_keys") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("INSERT INTO customer_keys (customer_id, kek_version,"
                               " wrapped_key) VALUES ($1, 1, '\\x00')", uuid.uuid4())
    async with scoped(pool, Scope.of([a_id])) as conn:
        assert await conn.fetchval("SELECT customer_id FROM customer_keys") == customer_id


async def test_rotating_the_master_key_rewraps_every_key_and_replay_goes_on(
    api: Api, settings: Settings
) -> None:
    await customer(api, [A], number="7001")
    customer_call, customer_path = await recording_of(api, A, "70010", seconds=1.0)
    anonymous = audiogen.make_audio("wav_alaw", 1.0)
    response = await upload(api.client, await api.token("ingest", [A]), metadata(), anonymous)
    assert response.status == 201, await response.text()
    anonymous_call = (await response.json())["id"]

    assert settings.master_key is not None
    new_key = base64.b64encode(secrets.token_bytes(32)).decode()
    rotating = settings.model_copy(update={
        "master_key": SecretStr(new_key), "master_key_version": 2,
        "previous_master_keys": SecretStr(f"1:{settings.master_key.get_secret_value()}")})
    done = await tallenne(rotating, "keys", "rotate")
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["ok"] is True and report["kek_version"] == 2
    assert report["rewrapped"]["customer_keys"] == 1
    assert report["rewrapped"]["company_keys"] >= 1
    assert set(report["keys_by_version"]) == {"2"}
    rewrapped = sum(report["rewrapped"].values())
    assert "keys rotate: re-wrapped [" in done.stderr
    assert f"{rewrapped}/{rewrapped} (100%)" in done.stderr
    assert "keys rotate: writing the key snapshot" in done.stderr

    # The old key is retired: the service runs on the new one alone.
    retired = settings.model_copy(update={"master_key": SecretStr(new_key),
                                          "master_key_version": 2})
    async with TestClient(TestServer(create_app(retired))) as client:
        quality = await Api(client, api.superuser_url).token("quality", [A])
        for recording_id, original in ((customer_call, customer_path.read_bytes()),
                                       (anonymous_call, anonymous.read_bytes())):
            replayed = await client.get(f"/api/v1/recordings/{recording_id}/audio",
                                        params={"reason": "after rotation"},
                                        headers=bearer(quality))
            assert replayed.status == 200, await replayed.text()
            assert await replayed.read() == original
    held, contents = await snapshot_holds(settings, MasterKeys.single(
        load_master_key(new_key), 2))
    assert contents.header.kek_version == 2 and len(held) >= 2
    with pytest.raises(IntegrityError):
        await snapshot_holds(settings, MasterKeys.single(
            load_master_key(settings.master_key.get_secret_value())))


async def test_an_altered_key_snapshot_is_refused(api: Api, settings: Settings) -> None:
    await customer(api, [A])
    done = await tallenne(settings, "keys", "snapshot")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["customer_keys"] == 1
    store = key_bucket(settings)
    try:
        data = bytearray(await store.get_bytes(key_snapshot.OBJECT_KEY))
        data[-5] ^= 0x01
        await store.put_bytes(key_snapshot.OBJECT_KEY, bytes(data))
    finally:
        await store.close()
    with pytest.raises(IntegrityError):
        await snapshot_holds(settings, masters_of(settings))


def test_previous_master_keys_are_read_and_a_bad_one_is_named_without_its_value() -> None:
    old, new = (base64.b64encode(secrets.token_bytes(32)).decode() for _ in range(2))
    masters = load_master_keys(new, 3, f"1:{old}, 2:{old}")
    assert masters.version == 3 and sorted(masters.keys) == [1, 2, 3]
    with pytest.raises(ValueError, match="VERSION:BASE64") as bad:
        load_master_keys(new, 3, f"{old}")
    assert old not in str(bad.value)
    with pytest.raises(ValueError, match="given twice"):
        load_master_keys(new, 3, f"3:{old}")
