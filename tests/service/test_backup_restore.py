"""`tallenne backup` and `tallenne restore` run as a user runs them (the CLI in a subprocess):
the restored deployment replays every call byte-identical, keeps later erasures erased and
has an intact audit chain; a deployment with data is refused."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from service.app import create_app
from service.settings import Settings
from tests import audiogen
from tests.conftest import Stack, drop_bucket, drop_database, fresh_database, settings_for
from tests.helpers import Api, bearer, settings_env
from tests.service.data_subject_factory import A, customer, recording_of
from tests.service.recording_factory import bucket_keys, metadata, upload

ROOT = Path(__file__).resolve().parents[2]


def cli_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings_env(settings), "TALLENNE_ALLOW_TEST_IDS": "1"}


async def tallenne(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "service.cli", *args], env=cli_env(settings),
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )


async def replay(client: TestClient[Any, Any], token: str, recording_id: str) -> bytes:
    response = await client.get(f"/api/v1/recordings/{recording_id}/audio",
                                params={"reason": "restore drill"}, headers=bearer(token))
    assert response.status == 200, await response.text()
    return await response.read()


async def test_restore_into_an_empty_deployment_replays_every_call_byte_identical(
    api: Api, settings: Settings, stack: Stack, tmp_path: Path
) -> None:
    token = await api.token("ingest", [A])
    originals: dict[str, bytes] = {}
    for kind in ("wav_mulaw", "mp3", "flac"):
        path = audiogen.make_audio(kind, 3.0)
        response = await upload(api.client, token, metadata(), path)
        assert response.status == 201, await response.text()
        originals[(await response.json())["id"]] = path.read_bytes()

    done = await tallenne(settings, "backup", str(tmp_path / "b"))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["objects"]["recording"] == 3
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert all(len(o["sha256"]) == 64 for o in manifest["objects"])

    database = await asyncio.to_thread(fresh_database, stack)
    target = settings_for(stack, database, "t-" + database.removeprefix("t_"))
    try:
        restored = await tallenne(target, "restore", str(tmp_path / "b"))
        assert restored.returncode == 0, restored.stderr
        result = json.loads(restored.stdout)
        assert result["ok"] is True
        assert result["recordings_restored"] == 3
        assert result["objects_uploaded"] >= 3
        assert result["audit"]["ok"] is True
        assert result["reconcile"]["orphan_objects"] == 0
        async with TestClient(TestServer(create_app(target))) as client:
            quality = await Api(client, stack.superuser_url(database)).token("quality", [A])
            for recording_id, original in originals.items():
                assert await replay(client, quality, recording_id) == original
            verify = await client.get("/api/v1/audit/verify", headers=bearer(
                await Api(client, stack.superuser_url(database)).token(
                    "admin", all_companies=True)))
            assert (await verify.json())["ok"] is True
        assert sorted(await bucket_keys(target)) == sorted(
            o["key"] for o in manifest["objects"] if o["kind"] == "recording")
    finally:
        await asyncio.to_thread(drop_database, stack, database)
        await asyncio.to_thread(drop_bucket, stack, target.s3_bucket)


async def test_restore_reapplies_an_erasure_made_after_the_backup(
    api: Api, settings: Settings, stack: Stack, tmp_path: Path
) -> None:
    """The database is lost and restored from an older backup; the bucket survived and its
    erasure ledger erases the customer again, audio included."""
    customer_id = await customer(api, [A], number="7001")
    erased_call, _ = await recording_of(api, A, "70010", kind="wav_pcm", seconds=2.0)
    kept_path = audiogen.make_audio("wav_alaw", 2.0)
    response = await upload(api.client, await api.token("ingest", [A]), metadata(), kept_path)
    assert response.status == 201, await response.text()
    kept_call = (await response.json())["id"]
    done = await tallenne(settings, "backup", str(tmp_path / "b"))
    assert done.returncode == 0, done.stderr

    dpo = await api.token("dpo", [A])
    response = await api.client.post(f"/api/v1/customers/{customer_id}/erasure",
                                     json={"reason": "data subject's request"},
                                     headers=bearer(dpo))
    assert response.status == 200, await response.text()

    database = await asyncio.to_thread(fresh_database, stack)
    target = settings_for(stack, database, settings.s3_bucket)
    try:
        restored = await tallenne(target, "restore", str(tmp_path / "b"))
        assert restored.returncode == 0, restored.stderr
        result = json.loads(restored.stdout)
        assert result["customers_erased_again"] == 1
        assert result["recordings_skipped_as_erased"] == 1
        async with TestClient(TestServer(create_app(target))) as client:
            target_api = Api(client, stack.superuser_url(database))
            quality = await target_api.token("quality", [A])
            gone = await client.get(f"/api/v1/recordings/{erased_call}", headers=bearer(quality))
            assert gone.status == 404
            assert await replay(client, quality, kept_call) == kept_path.read_bytes()
        keys = await bucket_keys(target)
        assert len(keys) == 1
        import asyncpg

        conn = await asyncpg.connect(stack.superuser_url(database))
        try:
            row = await conn.fetchrow("SELECT name, wrapped_key, erased_at FROM customers"
                                      " WHERE id = $1", __import__("uuid").UUID(customer_id))
        finally:
            await conn.close()
        assert row["name"] is None and row["wrapped_key"] is None
        assert row["erased_at"] is not None
    finally:
        await asyncio.to_thread(drop_database, stack, database)


async def test_restore_refuses_a_deployment_that_holds_data(
    api: Api, settings: Settings, tmp_path: Path
) -> None:
    token = await api.token("ingest", [A])
    response = await upload(api.client, token, metadata(), audiogen.make_audio("wav_pcm", 1.0))
    assert response.status == 201
    done = await tallenne(settings, "backup", str(tmp_path / "b"))
    assert done.returncode == 0, done.stderr
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
    done = await tallenne(settings, "backup", str(tmp_path / "b"))
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    key = next(o["key"] for o in manifest["objects"] if o["kind"] == "recording")
    victim = tmp_path / "b" / "objects" / key
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))

    database = await asyncio.to_thread(fresh_database, stack)
    target = settings_for(stack, database, "t-" + database.removeprefix("t_"))
    try:
        refused = await tallenne(target, "restore", str(tmp_path / "b"))
        assert refused.returncode == 1
        assert "does not match the manifest" in refused.stderr
    finally:
        await asyncio.to_thread(drop_database, stack, database)
        await asyncio.to_thread(drop_bucket, stack, target.s3_bucket)


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
