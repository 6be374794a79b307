"""Export jobs end to end: each format holds exactly the calls the exporter may see, minus
held and erased ones, with digests that match the stored SHA-256; a replica killed mid-call
is resumed by another without a duplicate file; a large download stays in flat memory."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import asyncpg
import psutil
import pyrage
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pyrage import x25519

from service.app import create_app
from service.cli import main as cli
from service.http.keys import EXPORT_WORKER, EXPORTS, POOL, SETTINGS
from service.ops.housekeeping import housekeep_once
from service.ops.tasks import stop_task
from service.settings import Settings
from storage.crypto import SEGMENT_SIZE
from tests import audiogen
from tests.conftest import Stack, drop_bucket, settings_for
from tests.helpers import Api, bearer, metric, settings_env
from tests.schemas.vcon_support import decode_content_hash, schema_errors
from tests.service.data_subject_factory import customer
from tests.service.export_factory import (
    THIRD_COMPANY,
    Calls,
    calls_in_three_companies,
    export_store,
    ingest,
    reads_left_open,
    wait_for,
)
from tests.service.recording_factory import (
    COMPANY,
    OTHER_COMPANY,
    metadata,
    object_store,
    upload,
)
from tests.service.retention_factory import app_of, purge_job_only
from tests.service.test_recordings_replay import flip_a_byte, stored
from tests.service.test_stack import own_s3


@pytest.fixture
def settings(stack: Stack, database: str) -> Iterator[Settings]:
    """The test's settings with a short export lease, so that a resumed job is taken over
    within a second."""
    bucket = "t-" + database.removeprefix("t_")
    made = settings_for(stack, database, bucket, export_lease_s=1.0, export_poll_s=0.2)
    yield made
    for name in (bucket, made.key_bucket, made.export_target_bucket):
        drop_bucket(stack, name)


async def exporter(api: Api) -> str:
    return await api.token("quality", [COMPANY, OTHER_COMPANY], name="exporter")


async def start(api: Api, token: str, **body: Any) -> str:
    body.setdefault("reason", "laadunvarmistus")
    response = await api.client.post("/api/v1/exports", headers=bearer(token), json=body)
    assert response.status == 202, await response.text()
    return str((await response.json())["id"])


async def download(api: Api, token: str, export_id: str) -> bytes:
    response = await api.client.get(f"/api/v1/exports/{export_id}/download",
                                    headers=bearer(token))
    assert response.status == 200, await response.text()
    return await response.read()


async def stored_sha256(db: asyncpg.Connection) -> dict[str, str]:
    return {str(r["id"]): r["sha256"] for r in await db.fetch("SELECT id, sha256 FROM recordings")}


def ids_in(names: list[str]) -> set[str]:
    found = set()
    for name in names:
        for part in name.replace(".", "/").replace("_", "/").split("/"):
            try:
                found.add(str(uuid.UUID(part)))
            except ValueError:
                continue
    return found


async def test_each_format_holds_the_visible_calls_with_digests_of_the_stored_audio(
        api: Api, db: asyncpg.Connection, settings: Settings) -> None:
    calls = await calls_in_three_companies(api)
    token = await exporter(api)
    stored = await stored_sha256(db)
    for fmt in ("zip", "vcon"):
        export_id = await start(api, token, format=fmt)
        progress = await wait_for(api.client, token, export_id)
        # The erased call is gone before planning; the held one is counted, never written.
        assert (progress["state"], progress["total"], progress["done"],
                progress["held_back"]) == ("done", 6, 6, 1), progress
        archive = zipfile.ZipFile(io.BytesIO(await download(api, token, export_id)))
        check_zip(archive, calls, stored)
        if fmt == "vcon":
            for recording_id in calls.exported:
                document = json.loads(archive.read(f"{recording_id}.vcon.json"))
                assert schema_errors(document) == []
                dialog = document["dialog"][0]
                assert dialog["url"].endswith(f"/api/v1/recordings/{recording_id}/audio")
                _, digest = decode_content_hash(dialog["content_hash"])
                assert digest.hex() == stored[recording_id]
        audited = await db.fetch("SELECT seq, action, subject_ids FROM audit_events"
                                 " WHERE target_id = $1 ORDER BY seq", export_id)
        assert [r["action"] for r in audited] == [
            "export.create", "export.finish", "export.download"]
        # The job and each download name the calls they read: the subject search finds them.
        for event in audited[1:]:
            named = {str(i) for i in event["subject_ids"]}
            assert named >= set(calls.exported) and not named & set(calls.held), event
        # The export states its own audit record.
        manifest = json.loads(archive.read("manifest.json"))
        assert manifest["export"]["audit_event"] == audited[0]["seq"]
        assert manifest["export"]["held_back"] == 1

    export_id = await start(api, token, format="s3")
    assert (await wait_for(api.client, token, export_id))["state"] == "done"
    await check_s3(settings, export_id, calls, stored)
    response = await api.client.get(f"/api/v1/exports/{export_id}/download",
                                    headers=bearer(token))
    assert response.status == 409


def check_zip(archive: zipfile.ZipFile, calls: Calls, stored: dict[str, str]) -> None:
    names = archive.namelist()
    assert names[-2:] == ["manifest.json", "SHA256SUMS"]
    assert ids_in(names) == set(calls.exported)
    everything = b"".join(archive.read(n) for n in names)
    for never in calls.held + calls.erased + calls.other_company:
        assert never.encode() not in everything
    assert THIRD_COMPANY.encode() not in everything

    manifest = json.loads(archive.read("manifest.json"))
    assert len({f["name"] for f in manifest["files"]}) == len(manifest["files"]) == 10
    for listed in manifest["files"]:
        data = archive.read(listed["name"])
        assert (len(data), hashlib.sha256(data).hexdigest()) == (listed["size"],
                                                                   listed["sha256"])
        if listed["name"].endswith(".wav"):
            assert listed["sha256"] == stored[ids_in([listed["name"]]).pop()]
    sums = archive.read("SHA256SUMS").decode().splitlines()
    assert len(sums) == 11
    for line in sums:
        digest, name = line.split("  ", 1)
        assert hashlib.sha256(archive.read(name)).hexdigest() == digest


async def check_s3(settings: Settings, export_id: str, calls: Calls,
                   stored: dict[str, str]) -> None:
    target = export_store(settings)
    try:
        prefix = f"{settings.export_prefix}/{export_id}/"
        keys = await target.list_keys(prefix)
        manifest = json.loads(await target.get_bytes(prefix + "manifest.json"))
        listed = {f["name"]: f for f in manifest["files"]}
        assert set(keys) == {prefix + n for n in listed} | {prefix + "manifest.json",
                                                            prefix + "SHA256SUMS"}
        assert ids_in(keys) - {export_id} == set(calls.exported)
        for name, entry in listed.items():
            data = await target.get_bytes(prefix + name)
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            assert name.startswith("year=2026/month=03/day=02/")
            assert THIRD_COMPANY not in name
            if name.endswith("audio.wav"):
                assert entry["sha256"] == stored[ids_in([name]).pop()]
    finally:
        await target.close()


async def test_job_killed_mid_call_is_resumed_by_another_replica_without_duplicates(
        api: Api, db: asyncpg.Connection, stack: Stack, settings: Settings,
        database: str) -> None:
    made = await ingest(api, COMPANY, 4)
    order = sorted((r["id"] for r in made), key=uuid.UUID)  # equal start times: id order
    token = await exporter(api)
    app_a = api.client.app

    blocker = await asyncpg.connect(stack.superuser_url(database))
    holder = await asyncpg.connect(stack.superuser_url(database))
    try:
        # Replica A stops at the third call, held by a lock on its row ...
        call_lock = blocker.transaction()
        await call_lock.start()
        await blocker.execute("SELECT 1 FROM recordings WHERE id = $1 FOR UPDATE",
                              uuid.UUID(order[2]))
        export_id = await start(api, token, format="s3")
        await wait_for_done(db, export_id, 2)
        # ... then writes that call's files but cannot record them, and dies there.
        job_lock = holder.transaction()
        await job_lock.start()
        await holder.execute("SELECT 1 FROM export_jobs WHERE id = $1 FOR UPDATE",
                             uuid.UUID(export_id))
        await call_lock.rollback()
        target = export_store(settings)
        prefix = f"{settings.export_prefix}/{export_id}/"
        for _ in range(400):
            if len(await target.list_keys(prefix)) == 6:
                break
            await asyncio.sleep(0.05)
        assert len(await target.list_keys(prefix)) == 6
        await stop_task(app_a[EXPORT_WORKER])
        await job_lock.rollback()
    finally:
        await blocker.close()
        await holder.close()
    row = await db.fetchrow("SELECT state, done, attempts FROM export_jobs WHERE id = $1",
                            uuid.UUID(export_id))
    assert (row["state"], row["done"], row["attempts"]) == ("running", 2, 1)

    # Replica B takes the job over once A's lease has run out and finishes it.
    async with TestClient(TestServer(create_app(settings))) as client_b:
        progress = await wait_for(client_b, token, export_id)
    assert progress["state"] == "done"
    assert (progress["done"], progress["total"]) == (4, 4)
    try:
        keys = await target.list_keys(prefix)
        manifest = json.loads(await target.get_bytes(prefix + "manifest.json"))
    finally:
        await target.close()
    names = [f["name"] for f in manifest["files"]]
    assert len(names) == len(set(names)) == 8
    assert sorted(keys) == sorted([prefix + n for n in names]
                                  + [prefix + "manifest.json", prefix + "SHA256SUMS"])
    assert ids_in(keys) - {export_id} == set(order)
    assert await db.fetchval("SELECT attempts FROM export_jobs WHERE id = $1",
                             uuid.UUID(export_id)) == 2
    assert await db.fetchval("SELECT count(*) FROM export_files WHERE job_id = $1",
                             uuid.UUID(export_id)) == 8


async def test_cancelling_a_running_s3_export_stops_it_and_takes_back_its_files(
        api: Api, db: asyncpg.Connection, stack: Stack, settings: Settings,
        database: str) -> None:
    made = await ingest(api, COMPANY, 3)
    order = sorted((r["id"] for r in made), key=uuid.UUID)
    token = await exporter(api)
    blocker = await asyncpg.connect(stack.superuser_url(database))
    try:
        call_lock = blocker.transaction()
        await call_lock.start()
        await blocker.execute("SELECT 1 FROM recordings WHERE id = $1 FOR UPDATE",
                              uuid.UUID(order[1]))
        export_id = await start(api, token, format="s3")
        await wait_for_done(db, export_id, 1)
        response = await api.client.delete(f"/api/v1/exports/{export_id}",
                                           headers=bearer(token))
        assert response.status == 200
        assert (await response.json())["state"] == "cancelled"
        await call_lock.rollback()
    finally:
        await blocker.close()
    target = export_store(settings)
    prefix = f"{settings.export_prefix}/{export_id}/"
    try:
        for _ in range(200):
            if not await target.list_keys(prefix):
                break
            await asyncio.sleep(0.05)
        assert await target.list_keys(prefix) == []
    finally:
        await target.close()
    assert (await wait_for(api.client, token, export_id))["state"] == "cancelled"
    response = await api.client.get(f"/api/v1/exports/{export_id}/download",
                                    headers=bearer(token))
    assert response.status == 409


async def wait_for_done(db: asyncpg.Connection, export_id: str, done: int) -> None:
    for _ in range(600):
        if await db.fetchval("SELECT done FROM export_jobs WHERE id = $1",
                             uuid.UUID(export_id)) == done:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the export never reached {done} calls")


async def test_large_download_streams_in_flat_memory(api: Api) -> None:
    audio = audiogen.make_large_wav(6 << 20)
    ingest_token = await api.token("ingest", [COMPANY])
    for _ in range(4):
        response = await upload(api.client, ingest_token, metadata(), audio)
        assert response.status == 201, await response.text()
    token = await exporter(api)
    export_id = await start(api, token, format="zip")
    assert (await wait_for(api.client, token, export_id))["state"] == "done"

    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = baseline
    received = 0
    digest = hashlib.sha256()
    response = await api.client.get(f"/api/v1/exports/{export_id}/download",
                                    headers=bearer(token))
    assert response.status == 200
    async for chunk in response.content.iter_chunked(256 * 1024):
        received += len(chunk)
        digest.update(chunk)
        peak = max(peak, process.memory_info().rss)
    assert received > 24 << 20
    growth = peak - baseline
    assert growth < 12 << 20, f"RSS grew by {growth >> 20} MiB for a {received >> 20} MiB export"


LARGE_CALL = 1_700_000_000  # three of these: a 5 GB export (a recording holds at most 2 GiB)
LARGE_CALLS = 3


@pytest.mark.timeout(600)
async def test_a_5_gb_export_downloads_in_flat_memory(
        api: Api, db: asyncpg.Connection, settings: Settings, tmp_path: Path) -> None:
    """Three calls of 1.7 GB (some 30 hours of audio each), stored by `tallenne import`: the
    export's download streams 5 GB with the memory of the 24 MB one above, and ends with the
    manifest listing each call's stored SHA-256."""
    folder = tmp_path / "large"
    folder.mkdir()
    try:
        for i in range(LARGE_CALLS):
            shutil.move(audiogen.make_large_wav(LARGE_CALL), folder / f"day-{i}.wav")
            values = metadata(external_id=f"day-{i}")
            values.pop("company")
            (folder / f"day-{i}.json").write_text(json.dumps(values), encoding="utf-8")
        with mock.patch.dict(os.environ, settings_env(settings)):
            code = await asyncio.to_thread(cli.main, ["import", str(folder), "--company", COMPANY])
        assert code == 0
        stored = await stored_sha256(db)
        assert len(stored) == LARGE_CALLS
        shutil.rmtree(folder)  # the stored copies are what the export reads

        token = await exporter(api)
        export_id = await start(api, token, format="zip")
        assert (await wait_for(api.client, token, export_id))["state"] == "done"
        process = psutil.Process()
        baseline = peak = process.memory_info().rss
        received = 0
        last: list[bytes] = []
        response = await api.client.get(f"/api/v1/exports/{export_id}/download",
                                        headers=bearer(token))
        assert response.status == 200
        async for chunk in response.content.iter_chunked(1 << 20):
            received += len(chunk)
            last = [*last[-1:], chunk]
            peak = max(peak, process.memory_info().rss)
        assert received > LARGE_CALLS * LARGE_CALL
        growth = peak - baseline
        # Flat: 200 times the bytes of the export above within twice its bound (one more
        # chunk in flight in each buffer on the way), not growing with the size.
        assert growth < 24 << 20, f"RSS grew by {growth >> 20} MiB for {received >> 20} MiB"
        # The manifest and SHA256SUMS close the zip: every call is listed by its digest.
        tail = b"".join(last)
        for digest in stored.values():
            assert digest.encode() in tail
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def test_export_to_a_recipient_is_a_disclosure_and_refused_outside_the_eu(
        api: Api, db: asyncpg.Connection) -> None:
    await ingest(api, COMPANY, 1)
    await ingest(api, OTHER_COMPANY, 1, tone=800.0)
    recipient = {"recipient": "Puhelinpalvelu Oy", "legal_basis": "toimeksianto",
                 "purpose": "subcontractor"}
    # Sending calls to a recipient is a disclosure: a role that may not disclose may not
    # export to one either (quality exports for itself only).
    quality = await exporter(api)
    response = await api.client.post("/api/v1/exports", headers=bearer(quality), json={
        "reason": "ulkoistettu laadunvarmistus", **recipient, "recipient_country": "SE"})
    assert response.status == 403
    assert response.content_type == "application/problem+json"
    refused = await db.fetchrow("SELECT actor, outcome, detail->>'refused' AS why"
                                " FROM audit_events WHERE action = 'export.create'")
    assert (refused["actor"], refused["outcome"]) == ("exporter", "refused")
    assert "disclose" in refused["why"]

    token = await api.token("dpo", [COMPANY, OTHER_COMPANY], name="dpo-exporter")
    response = await api.client.post("/api/v1/exports", headers=bearer(token), json={
        "reason": "ulkoistettu laadunvarmistus", **recipient, "recipient_country": "US"})
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    assert "recipient_country" in json.dumps((await response.json())["errors"])
    assert await db.fetchval("SELECT count(*) FROM export_jobs") == 0

    export_id = await start(api, token, format="zip", recipient_country="se", **recipient)
    assert (await wait_for(api.client, token, export_id))["state"] == "done"
    logged = await db.fetch("SELECT c.code, d.recipient, d.recipient_country, d.fields"
                            " FROM disclosures d JOIN companies c ON c.id = d.company_id"
                            " ORDER BY c.code")
    assert [(r["code"], r["recipient"], r["recipient_country"]) for r in logged] == [
        (OTHER_COMPANY, "Puhelinpalvelu Oy", "SE"), (COMPANY, "Puhelinpalvelu Oy", "SE")]


async def test_an_export_request_is_refused_where_it_would_leak_or_break_a_rule(
        api: Api, db: asyncpg.Connection) -> None:
    token = await api.token("dpo", [COMPANY], name="dpo-exporter")
    debt = {"recipient": "Perintä Oy", "recipient_country": "FI",
            "legal_basis": "saatavan perintä", "purpose": "debt_collection"}
    cases: list[tuple[dict[str, Any], str]] = [
        # Debt collection discloses a single customer's records, never a whole filter.
        ({**debt}, "customer_id"),
        # An identity code typed into free text would end up in the audit trail for good.
        ({"recipient": "Puhelinpalvelu Oy 131052-308T", "recipient_country": "FI",
          "legal_basis": "toimeksianto"}, "recipient"),
        ({"legal_basis": "asiakas 131052-308T", "recipient": "Puhelinpalvelu Oy",
          "recipient_country": "FI"}, "legal_basis"),
        ({}, "reason"),
        # A key of the right shape whose checksum fails would only fail at the download.
        ({"recipient_public_key": "age1" + "q" * 58}, "recipient_public_key"),
    ]
    for extra, field in cases:
        body = {"reason": "asiakkaan 131052-308T pyyntö" if field == "reason"
                else "perintä", **extra}
        response = await api.client.post("/api/v1/exports", headers=bearer(token), json=body)
        text = await response.text()
        assert response.status == 422, (field, text)
        assert response.content_type == "application/problem+json"
        assert field in text, (field, text)
        assert "131052-308T" not in text
    assert await db.fetchval("SELECT count(*) FROM export_jobs") == 0
    assert await db.fetchval("SELECT count(*) FROM audit_events WHERE detail::text LIKE"
                             " '%131052-308T%' OR reason LIKE '%131052-308T%'") == 0

    customer_id = await db.fetchval("SELECT gen_random_uuid()")
    export_id = await start(api, token, filter={"customer_id": str(customer_id)}, **debt)
    assert (await wait_for(api.client, token, export_id))["state"] == "done"


async def test_jobs_are_their_creators_results_expire_and_a_cancelled_one_is_withdrawn(
        api: Api, db: asyncpg.Connection) -> None:
    kept, erased = await ingest(api, COMPANY, 2)
    token = await exporter(api)
    identity = x25519.Identity.generate()
    export_id = await start(api, token, format="zip",
                            recipient_public_key=str(identity.to_public()))
    assert (await wait_for(api.client, token, export_id))["state"] == "done"
    # A call erased after the job ran is left out of the download, whole.
    admin = await api.token("admin", all_companies=True, name="eraser")
    response = await api.client.delete(f"/api/v1/recordings/{erased['id']}",
                                       headers=bearer(admin), json={"reason": "pyyntö"})
    assert response.status == 200
    sealed = await download(api, token, export_id)
    archive = zipfile.ZipFile(io.BytesIO(pyrage.decrypt(sealed, [identity])))
    assert archive.testzip() is None
    assert archive.namelist()[-2:] == ["manifest.json", "SHA256SUMS"]
    assert ids_in(archive.namelist()) == {kept["id"]}
    assert json.loads(archive.read("manifest.json"))["export"]["withdrawn_since"] == 1

    await db.execute("UPDATE export_jobs SET expires_at = now() - interval '1 second'"
                     " WHERE id = $1", uuid.UUID(export_id))
    response = await api.client.get(f"/api/v1/exports/{export_id}/download",
                                    headers=bearer(token))
    assert response.status == 410
    await db.execute("UPDATE export_jobs SET expires_at = now() + interval '1 hour'"
                     " WHERE id = $1", uuid.UUID(export_id))
    stranger = await api.token("quality", [COMPANY], name="another-quality")
    response = await api.client.get(f"/api/v1/exports/{export_id}", headers=bearer(stranger))
    assert response.status == 404
    response = await api.client.delete(f"/api/v1/exports/{export_id}", headers=bearer(token))
    assert response.status == 200
    assert (await response.json())["state"] == "cancelled"
    response = await api.client.get(f"/api/v1/exports/{export_id}/download",
                                    headers=bearer(token))
    assert response.status == 409


async def metadata_kept(db: asyncpg.Connection, export_id: str) -> dict[str, bool]:
    """Per call of an export, whether its metadata file (numbers, customer, tags,
    evaluations) still holds its bytes."""
    rows = await db.fetch("SELECT recording_id, content IS NOT NULL AS kept FROM export_files"
                          " WHERE job_id = $1 AND kind <> 'audio'", uuid.UUID(export_id))
    return {str(r["recording_id"]): r["kept"] for r in rows}


async def test_erasing_or_purging_a_call_drops_its_metadata_from_every_export(
        api: Api, db: asyncpg.Connection) -> None:
    customer_id = await customer(api, [COMPANY], number="7001")
    single, purged = await ingest(api, COMPANY, 2)
    (linked,) = await ingest(api, COMPANY, 1, tone=600.0, customer_number="70010")
    assert linked["customer_id"] == customer_id
    token = await exporter(api)
    export_ids = [await start(api, token, format=fmt) for fmt in ("zip", "vcon")]
    for export_id in export_ids:
        assert (await wait_for(api.client, token, export_id))["state"] == "done"
        assert await metadata_kept(db, export_id) == {
            single["id"]: True, purged["id"]: True, linked["id"]: True}

    # One call erased by an admin of its company only (row-level security applies) ...
    admin = await api.token("admin", [COMPANY], name="eraser")
    response = await api.client.delete(f"/api/v1/recordings/{single['id']}",
                                       headers=bearer(admin), json={"reason": "pyyntö"})
    assert response.status == 200, await response.text()
    for export_id in export_ids:
        assert await metadata_kept(db, export_id) == {
            single["id"]: False, purged["id"]: True, linked["id"]: True}
    # ... a customer erased with their calls ...
    response = await api.client.post(f"/api/v1/customers/{customer_id}/erasure",
                                      headers=bearer(admin), json={"reason": "pyyntö"})
    assert response.status == 200, await response.text()
    for export_id in export_ids:
        assert await metadata_kept(db, export_id) == {
            single["id"]: False, purged["id"]: True, linked["id"]: False}
    # ... and the last call purged when its retention ran out.
    assert await purge_job_only(app_of(api)) == 1
    for export_id in export_ids:
        assert not any((await metadata_kept(db, export_id)).values())


async def test_housekeeping_drops_what_ended_exports_left_and_keeps_live_results(
        api: Api, db: asyncpg.Connection, settings: Settings) -> None:
    made = await ingest(api, COMPANY, 2)
    second = sorted((r["id"] for r in made), key=uuid.UUID)[1]
    token = await exporter(api)
    jobs: dict[str, str] = {}
    for name, fmt in (("expired_zip", "zip"), ("kept_zip", "zip"), ("expired_s3", "s3"),
                      ("kept_s3", "s3")):
        jobs[name] = await start(api, token, format=fmt)
        assert (await wait_for(api.client, token, jobs[name]))["state"] == "done"
    # An s3 export that fails at its second call leaves the first call's files behind.
    audio = object_store(settings)
    try:
        await audio.delete([await db.fetchval("SELECT object_key FROM recordings WHERE id = $1",
                                              uuid.UUID(second))])
    finally:
        await audio.close()
    jobs["failed_s3"] = await start(api, token, format="s3")
    assert (await wait_for(api.client, token, jobs["failed_s3"]))["state"] == "failed"
    await db.execute("UPDATE export_jobs SET expires_at = now() - interval '1 second'"
                     " WHERE id = ANY($1::uuid[])",
                     [uuid.UUID(jobs["expired_zip"]), uuid.UUID(jobs["expired_s3"])])

    target = export_store(settings)
    try:
        async def keys(name: str) -> list[str]:
            return await target.list_keys(f"{settings.export_prefix}/{jobs[name]}/")

        assert [len(await keys(n)) for n in ("expired_s3", "kept_s3", "failed_s3")] == [6, 6, 2]
        app = app_of(api)
        done = await housekeep_once(app[POOL], app[SETTINGS], app[EXPORTS])
        assert (done.export_contents, done.export_prefixes) == (2, 2)
        assert [len(await keys(n)) for n in ("expired_s3", "kept_s3", "failed_s3")] == [0, 6, 0]
        again = await housekeep_once(app[POOL], app[SETTINGS], app[EXPORTS])
        assert (again.export_contents, again.export_prefixes) == (0, 0)
    finally:
        await target.close()
    assert not any((await metadata_kept(db, jobs["expired_zip"])).values())
    assert await metadata_kept(db, jobs["kept_zip"]) == dict.fromkeys(
        (r["id"] for r in made), True)


async def test_a_cancel_that_could_not_remove_an_s3_export_is_audited_and_a_retry_removes_it(
        settings: Settings, stack: Stack, database: str, db: asyncpg.Connection,
        tmp_path: Path) -> None:
    async with own_s3(settings, tmp_path) as (s3, s3_settings), \
            TestClient(TestServer(create_app(s3_settings))) as client:
        api = Api(client, stack.superuser_url(database))
        await ingest(api, COMPANY, 2)
        token = await exporter(api)
        export_id = await start(api, token, format="s3")
        assert (await wait_for(client, token, export_id))["state"] == "done"
        prefix = f"{settings.export_prefix}/{export_id}/"
        target = export_store(s3_settings)
        try:
            assert len(await target.list_keys(prefix)) == 6
            await asyncio.to_thread(s3.kill)
            response = await client.delete(f"/api/v1/exports/{export_id}", headers=bearer(token))
            assert response.status == 503
            assert response.content_type == "application/problem+json"
            await asyncio.to_thread(s3.start, dict(s3.ports))
            response = await client.delete(f"/api/v1/exports/{export_id}", headers=bearer(token))
            assert response.status == 200, await response.text()
            assert (await response.json())["state"] == "cancelled"
            assert await target.list_keys(prefix) == []
        finally:
            await target.close()
    audited = await db.fetch("SELECT outcome, detail->>'state_before' AS before FROM audit_events"
                             " WHERE action = 'export.cancel' AND target_id = $1 ORDER BY seq",
                             export_id)
    assert [(r["outcome"], r["before"]) for r in audited] == [("failure", "done"),
                                                            ("ok", "cancelled")]


async def wait_until_planned(db: asyncpg.Connection, export_id: str) -> None:
    for _ in range(600):
        if await db.fetchval("SELECT total FROM export_jobs WHERE id = $1",
                             uuid.UUID(export_id)) is not None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the export was never planned")


async def test_a_marketing_prohibition_made_after_planning_holds_the_call_back(
        api: Api, db: asyncpg.Connection, stack: Stack, database: str) -> None:
    customer_id = await customer(api, [COMPANY], number="7001")
    (prohibiting,) = await ingest(api, COMPANY, 1, customer_number="70010")
    (other,) = await ingest(api, COMPANY, 1, tone=600.0)
    dpo = await api.token("dpo", [COMPANY], name="dpo-exporter")
    marketing = {"format": "zip", "recipient": "Pohjoisen Markkinointi Oy",
                 "recipient_country": "FI", "legal_basis": "rekisteriseloste; asiakassuhde",
                 "purpose": "marketing_register"}
    finished = await start(api, dpo, **marketing)
    assert (await wait_for(api.client, dpo, finished))["held_back"] == 0

    blocker = await asyncpg.connect(stack.superuser_url(database))
    try:
        # The job is planned, then waits to write the calls while the customer prohibits
        # direct marketing.
        call_lock = blocker.transaction()
        await call_lock.start()
        await blocker.execute("SELECT 1 FROM recordings WHERE id = ANY($1::uuid[]) FOR UPDATE",
                              [uuid.UUID(prohibiting["id"]), uuid.UUID(other["id"])])
        planned = await start(api, dpo, **marketing)
        await wait_until_planned(db, planned)
        service = await api.token("customer_service", [COMPANY])
        response = await api.client.post(f"/api/v1/customers/{customer_id}/prohibitions",
                                         json={"use": "direct_marketing", "channel": "phone"},
                                         headers=bearer(service))
        assert response.status == 201, await response.text()
        await call_lock.rollback()
    finally:
        await blocker.close()
    progress = await wait_for(api.client, dpo, planned)
    assert (progress["state"], progress["total"], progress["held_back"]) == ("done", 2, 1)
    archive = zipfile.ZipFile(io.BytesIO(await download(api, dpo, planned)))
    assert ids_in(archive.namelist()) == {other["id"]}
    # The export finished before the prohibition leaves the call out of its download.
    archive = zipfile.ZipFile(io.BytesIO(await download(api, dpo, finished)))
    assert ids_in(archive.namelist()) == {other["id"]}
    assert json.loads(archive.read("manifest.json"))["export"]["withdrawn_since"] == 1


async def test_a_client_leaving_mid_download_leaves_no_s3_read_open(api: Api) -> None:
    audio = audiogen.make_large_wav(6 << 20)
    ingest_token = await api.token("ingest", [COMPANY])
    for _ in range(3):
        response = await upload(api.client, ingest_token, metadata(), audio)
        assert response.status == 201, await response.text()
    token = await exporter(api)
    export_id = await start(api, token, format="zip")
    assert (await wait_for(api.client, token, export_id))["state"] == "done"
    while_read, at_end = await reads_left_open(api, f"/api/v1/exports/{export_id}/download",
                                               token)
    assert while_read > 0
    assert at_end == 0


async def test_a_download_meeting_damaged_audio_is_cut_off_and_the_call_marked_corrupt(
        api: Api, db: asyncpg.Connection, settings: Settings) -> None:
    recording_id, _ = await stored(api, seconds=120.0)
    token = await exporter(api)
    export_id = await start(api, token, format="zip")
    assert (await wait_for(api.client, token, export_id))["state"] == "done"
    await flip_a_byte(settings, 20 * SEGMENT_SIZE + 100)
    response = await api.client.get(f"/api/v1/exports/{export_id}/download",
                                    headers=bearer(token))
    assert response.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    assert await db.fetchval("SELECT state FROM recordings WHERE id = $1",
                             uuid.UUID(recording_id)) == "corrupt"
    alarm = await db.fetchrow("SELECT actor, outcome, detail->>'found_by' AS found_by"
                              " FROM audit_events WHERE action = 'recording.integrity_alarm'"
                              " AND target_id = $1", recording_id)
    assert alarm is not None
    assert (alarm["actor"], alarm["outcome"], alarm["found_by"]) == (
        "exporter", "failure", "export")
    # From then on the call is withheld: the download is whole, without it.
    archive = zipfile.ZipFile(io.BytesIO(await download(api, token, export_id)))
    assert archive.testzip() is None
    assert ids_in(archive.namelist()) == set()
    assert json.loads(archive.read("manifest.json"))["export"]["withdrawn_since"] == 1


async def test_an_export_takes_every_filter_of_the_search(api: Api) -> None:
    """The number a caller used, and a duration the calls do not reach, select as the
    recording search does."""
    token = await exporter(api)
    wanted = await ingest(api, COMPANY, 2, caller="040 765 4321")
    await ingest(api, COMPANY, 1, caller="+358501112223")
    await ingest(api, OTHER_COMPANY, 1, callee="0407654321")  # the number as the callee
    searched = await api.client.get("/api/v1/recordings", headers=bearer(token),
                                    params={"phone": "+358407654321"})
    assert searched.status == 200
    found = {r["id"] for r in (await searched.json())["items"]}
    assert len(found) == 3 and {r["id"] for r in wanted} <= found

    done = 'tallenne_exports_ended_total{state="done"}'
    ended_before = await metric(api.client, done)
    export_id = await start(api, token, filter={"phone": "0407654321"})
    assert (await wait_for(api.client, token, export_id))["state"] == "done"
    with zipfile.ZipFile(io.BytesIO(await download(api, token, export_id))) as archive:
        assert ids_in(archive.namelist()) == found

    export_id = await start(api, token, filter={"min_duration_s": 3600, "phone": "0407654321"})
    progress = await wait_for(api.client, token, export_id)
    assert progress["state"] == "done" and progress["total"] == 0
    assert await metric(api.client, done) - ended_before == 2  # /metrics counts them

    refused = await api.client.post("/api/v1/exports", headers=bearer(token), json={
        "reason": "laadunvarmistus", "filter": {"phone": "not a number"}})
    assert refused.status == 422 and "phone" in await refused.text()
