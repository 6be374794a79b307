"""The scrub and the other places that verify stored audio end to end, against a byte really
flipped in (or a segment really re-sealed into) the object in S3: the scrub and a download
find it, replay never serves it as valid audio, and the recording is marked `corrupt`."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import subprocess
import sys
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, cast

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from service.http.keys import KEYRING, POOL, RESOURCES
from service.recordings.scrub import SCRUB_LOCK, scheduled_once, scrub
from service.settings import Settings
from storage import keys
from storage import recordings as store
from storage.crypto import SEGMENT_SIZE, stored_size
from storage.db import Scope
from storage.sealed_audio import EncryptingReader
from tests.helpers import Api, bearer, settings_env
from tests.service.data_subject_factory import A, customer, recording_of, report
from tests.service.recording_factory import COMPANY, object_store
from tests.service.test_recordings_replay import replay, stored

ROOT = Path(__file__).resolve().parents[2]


def app_of(api: Api) -> web.Application:
    app = api.client.app
    assert isinstance(app, web.Application)
    return app


async def object_key(db: asyncpg.Connection, recording_id: str) -> str:
    key: str = await db.fetchval("SELECT object_key FROM recordings WHERE id = $1",
                                 uuid.UUID(recording_id))
    return key


async def flip_a_byte(settings: Settings, key: str, offset: int) -> None:
    """Change one bit of the object as stored, in place in S3."""
    objects = object_store(settings)
    try:
        data = bytearray(await objects.get_bytes(key))
        data[offset] ^= 0x01
        await objects.put_bytes(key, bytes(data))
    finally:
        await objects.close()


async def state_of(db: asyncpg.Connection, recording_id: str) -> str:
    state: str = await db.fetchval("SELECT state FROM recordings WHERE id = $1",
                                   uuid.UUID(recording_id))
    return state


async def alarms(db: asyncpg.Connection, recording_id: str) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT actor, detail FROM audit_events WHERE action = 'recording.integrity_alarm'"
        " AND target_id = $1 ORDER BY seq", recording_id)
    return [{"actor": r["actor"], **json.loads(r["detail"])} for r in rows]


def metric(text: str, name: str, **labels: str) -> float:
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
                     if labels else "")
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


async def metrics(api: Api) -> str:
    response = await api.client.get("/metrics")
    assert response.status == 200
    return await response.text()


async def test_the_scrub_finds_a_flipped_byte_and_marks_the_recording(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    damaged, _ = await stored(api, seconds=30.0)
    intact, intact_path = await stored(api, seconds=5.0)
    await flip_a_byte(settings, await object_key(db, damaged), 3 * SEGMENT_SIZE + 7)
    before = await metrics(api)

    report = await scrub(app_of(api)[RESOURCES],
                         verified_before=datetime.now(UTC) + timedelta(hours=1))

    assert report.due == 2 and report.checked == 2
    assert report.corrupt == [damaged] and not report.missing and report.stopped is None
    assert await state_of(db, damaged) == "corrupt"
    assert await state_of(db, intact) == "stored"
    assert [(a["actor"], a["found_by"], a["marked_corrupt"]) for a in await alarms(db, damaged)
            ] == [("scrub", "scrub", True)]
    assert await alarms(db, intact) == []
    pass_event = json.loads(await db.fetchval(
        "SELECT detail FROM audit_events WHERE action = 'recording.scrub'"))
    assert pass_event["checked"] == 2 and pass_event["corrupt"] == [damaged]
    assert await db.fetchval("SELECT count(*) FROM recording_scrubs WHERE recording_id = $1",
                             uuid.UUID(intact)) == 1
    after = await metrics(api)
    for name, labels in (("tallenne_scrub_objects_total", {"outcome": "corrupt"}),
                         ("tallenne_scrub_objects_total", {"outcome": "verified"}),
                         ("tallenne_integrity_alarms_total", {"found_by": "scrub"})):
        assert metric(after, name, **labels) == metric(before, name, **labels) + 1, name
    assert metric(after, "tallenne_scrub_bytes_total") > metric(before,
                                                                 "tallenne_scrub_bytes_total")

    token = await api.token("quality", [COMPANY])
    assert (await replay(api, token, damaged)).status == 409
    served = await replay(api, token, intact)
    assert served.status == 200 and await served.read() == intact_path.read_bytes()


async def test_replay_never_serves_a_damaged_segment(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    recording_id, path = await stored(api, seconds=90.0)
    original = path.read_bytes()
    damaged_segment = 12
    await flip_a_byte(settings, await object_key(db, recording_id),
                      stored_size(damaged_segment * SEGMENT_SIZE) + 50)
    token = await api.token("quality", [COMPANY])
    # A range elsewhere is still whole and authentic.
    early = await replay(api, token, recording_id, headers={"Range": "bytes=0-999"})
    assert early.status == 206 and await early.read() == original[:1000]
    # A range inside the damaged segment: nothing of it leaves.
    start = damaged_segment * SEGMENT_SIZE + 10
    inside = await replay(api, token, recording_id,
                          headers={"Range": f"bytes={start}-{start + 99}"})
    assert inside.status == 409
    assert inside.content_type == "application/problem+json"
    assert await state_of(db, recording_id) == "corrupt"
    assert [a["found_by"] for a in await alarms(db, recording_id)] == ["replay"]


async def test_a_whole_replay_stops_before_the_damaged_segment(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    recording_id, path = await stored(api, seconds=160.0)
    original = path.read_bytes()
    damaged_segment = 30  # past the first chunks the service reads: found mid-stream
    await flip_a_byte(settings, await object_key(db, recording_id),
                      stored_size(damaged_segment * SEGMENT_SIZE) + 50)
    token = await api.token("quality", [COMPANY])
    response = await replay(api, token, recording_id)
    assert response.status == 200
    received = bytearray()
    with pytest.raises(aiohttp.ClientPayloadError):
        async for chunk in response.content.iter_any():
            received += chunk
    # What arrived is the authentic beginning only, cut before the damaged segment.
    assert len(received) <= damaged_segment * SEGMENT_SIZE
    assert bytes(received) == original[: len(received)]
    assert await state_of(db, recording_id) == "corrupt"


async def download(api: Api, customer_id: str) -> bytes | None:
    """The access-export zip, or None when the download was cut off."""
    dpo = await api.token("dpo", all_companies=True)
    # Bulk audio leaves only against a recorded access request, with a reason.
    requested = await report(api, dpo, customer_id)
    assert requested.status == 200, await requested.text()
    request_id = (await requested.json())["request"]["id"]
    response = await api.client.get(f"/api/v1/customers/{customer_id}/access-export.zip",
                                    params={"request_id": request_id,
                                            "reason": "access request of the data subject"},
                                    headers=bearer(dpo))
    assert response.status == 200
    try:
        return await response.read()
    except aiohttp.ClientPayloadError:
        return None


async def test_a_download_finds_a_flipped_byte_and_marks_the_recording(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    customer_id = await customer(api, [A])
    recording_id, _ = await recording_of(api, A, "50010", seconds=40.0)
    await flip_a_byte(settings, await object_key(db, recording_id), 3 * SEGMENT_SIZE + 5)
    body = await download(api, customer_id)
    if body is not None:  # whatever arrived is no complete zip
        with pytest.raises(zipfile.BadZipFile):
            zipfile.ZipFile(io.BytesIO(body))
    assert await state_of(db, recording_id) == "corrupt"
    assert [a["found_by"] for a in await alarms(db, recording_id)] == ["download"]


async def reseal_with_other_audio(app: web.Application, settings: Settings,
                                  recording_id: str, tmp_path: Path) -> bytes:
    """Replace the object by other audio of the same length sealed with the recording's own
    data key: every segment authenticates, only the SHA-256 tells. Returns that audio."""
    async with app[POOL].acquire() as conn:
        recording, kek_version, wrapped = await store.get_for_replay(
            conn, Scope.everything(), uuid.UUID(recording_id))
    owner = keys.open_owner_key(app[KEYRING].masters, recording.key_owner,
                                recording.key_owner_id, kek_version, wrapped)
    data_key = keys.unwrap_data_key(owner, recording.id, recording.wrapped_key)
    objects = object_store(settings)
    try:
        other = bytearray(os.urandom(recording.size_bytes))
        spool = tmp_path / "other"
        spool.write_bytes(other)
        reader = cast(BinaryIO, EncryptingReader(spool, data_key, recording.id))
        await objects.put_long_stream(recording.object_key, reader,
                                      stored_size(recording.size_bytes))
        reader.close()
    finally:
        await objects.close()
    return bytes(other)


async def test_audio_resealed_with_the_right_key_is_caught_by_its_sha256(
    api: Api, db: asyncpg.Connection, settings: Settings, tmp_path: Path
) -> None:
    customer_id = await customer(api, [A])
    recording_id, path = await recording_of(api, A, "50010", seconds=10.0)
    other = await reseal_with_other_audio(app_of(api), settings, recording_id, tmp_path)
    assert hashlib.sha256(other).hexdigest() != hashlib.sha256(path.read_bytes()).hexdigest()

    body = await download(api, customer_id)
    if body is not None:
        with pytest.raises(zipfile.BadZipFile):
            zipfile.ZipFile(io.BytesIO(body))
    assert await state_of(db, recording_id) == "corrupt"
    await db.execute("UPDATE recordings SET state = 'stored' WHERE id = $1",
                     uuid.UUID(recording_id))
    report = await scrub(app_of(api)[RESOURCES],
                         verified_before=datetime.now(UTC) + timedelta(hours=1))
    assert report.corrupt == [recording_id]
    assert [a["found_by"] for a in await alarms(db, recording_id)] == ["download", "scrub"]
    assert "SHA-256" in (await alarms(db, recording_id))[-1]["error"]


async def test_the_scheduled_pass_takes_what_is_due_one_replica_at_a_time(
    api: Api, db: asyncpg.Connection
) -> None:
    app = app_of(api)
    first, _ = await stored(api, seconds=2.0)
    second, _ = await stored(api, seconds=2.0)
    # Just stored: verified at ingest, not due for a week.
    assert (await scheduled_once(app[RESOURCES])).due == 0
    await db.execute("UPDATE recordings SET stored_at = now() - interval '8 days'"
                     " WHERE id = $1", uuid.UUID(first))
    holder = await asyncpg.connect(api.superuser_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", SCRUB_LOCK)
        assert (await scheduled_once(app[RESOURCES])).skipped
    finally:
        await holder.close()
    report = await scheduled_once(app[RESOURCES])
    assert (report.due, report.checked, report.corrupt) == (1, 1, [])
    verified = await db.fetch("SELECT recording_id FROM recording_scrubs")
    assert [str(r["recording_id"]) for r in verified] == [first]
    # Verified now, so not due again; the other one still is not due either.
    assert (await scheduled_once(app[RESOURCES])).due == 0
    assert second not in [str(r["recording_id"]) for r in verified]


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLENNE_")}
    env.update(settings_env(settings))
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=120, check=False)


async def test_tallenne_scrub_reports_progress_and_findings(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    intact, _ = await stored(api, seconds=3.0)
    clean = await asyncio.to_thread(run_cli, settings, "scrub")
    assert clean.returncode == 0, clean.stderr
    summary = json.loads(clean.stdout)
    assert (summary["checked"], summary["corrupt"], summary["missing"]) == (1, [], [])
    assert "scrub" in clean.stderr  # the progress line

    damaged, _ = await stored(api, seconds=3.0)
    await flip_a_byte(settings, await object_key(db, damaged), 100)
    found = await asyncio.to_thread(run_cli, settings, "scrub", "--rate", "50")
    assert found.returncode == 1
    summary = json.loads(found.stdout)
    assert summary["checked"] == 2 and summary["corrupt"] == [damaged]
    assert "1 recordings failed verification" in found.stderr
    assert await state_of(db, damaged) == "corrupt" and await state_of(db, intact) == "stored"
    assert [a["actor"] for a in await alarms(db, damaged)] == ["cli"]


async def test_a_missing_object_is_alarmed_but_not_marked(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    recording_id, _ = await stored(api, seconds=3.0)
    objects = object_store(settings)
    try:
        assert await objects.delete([await object_key(db, recording_id)]) == []
    finally:
        await objects.close()
    report = await scrub(app_of(api)[RESOURCES],
                         verified_before=datetime.now(UTC) + timedelta(hours=1))
    assert (report.checked, report.corrupt, report.missing) == (0, [], [recording_id])
    # A bucket configured by mistake must not condemn every recording.
    assert await state_of(db, recording_id) == "stored"
    assert [(a["found_by"], a["marked_corrupt"]) for a in await alarms(db, recording_id)
            ] == [("scrub", False)]
