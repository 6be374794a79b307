"""`tallenne export`: the command runs its own job against the service's database and S3,
shows progress on stderr and leaves a verifiable zip in the directory that only its owner can
read; stopped while it writes, it leaves no part of the zip behind."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import stat
import subprocess
import time
import zipfile
from pathlib import Path

import asyncpg

from service.settings import Settings
from tests import audiogen
from tests.helpers import Api, settings_env
from tests.proxy import LatencyProxy
from tests.service.export_factory import ingest
from tests.service.recording_factory import (
    COMPANY,
    OTHER_COMPANY,
    bucket_keys,
    metadata,
    object_store,
    upload,
)

ROOT = Path(__file__).resolve().parents[2]


async def test_cli_export_writes_a_zip_whose_sums_match_with_progress_on_stderr(
        api: Api, settings: Settings, tmp_path: Path) -> None:
    made = await ingest(api, COMPANY, 2, caller="040 765 4321")
    await ingest(api, COMPANY, 1, caller="+358501112223")  # another caller: left out
    await ingest(api, OTHER_COMPANY, 1, tone=800.0)
    env = {**os.environ, **settings_env(settings)}
    done = await asyncio.to_thread(
        subprocess.run,
        [str(ROOT / ".venv/bin/tallenne"), "export", "--company", COMPANY,
         "--phone", "+358407654321", "--reason",
         "arkistointi", "--format", "zip", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["state"], summary["total"], summary["done"]) == ("done", 2, 2)
    assert "export [" in done.stderr and "(100%)" in done.stderr
    assert stat.S_IMODE(Path(summary["file"]).stat().st_mode) == 0o600
    assert [p.name for p in (tmp_path / "out").iterdir()] == [Path(summary["file"]).name]
    archive = zipfile.ZipFile(summary["file"])
    for line in archive.read("SHA256SUMS").decode().splitlines():
        digest, name = line.split("  ", 1)
        assert hashlib.sha256(archive.read(name)).hexdigest() == digest
    audio = [n for n in archive.namelist() if n.endswith(".wav")]
    assert sorted(n.rsplit("_", 1)[1].removesuffix(".wav") for n in audio) == sorted(
        r["id"] for r in made)


async def test_cli_export_stopped_while_it_writes_leaves_no_part_of_the_zip(
        api: Api, settings: Settings, tmp_path: Path) -> None:
    token = await api.token("ingest", [COMPANY])
    for tone in (300.0, 500.0):
        response = await upload(api.client, token, metadata(),
                                audiogen.make_audio("wav_pcm", 120.0, tone_hz=tone))
        assert response.status == 201, await response.text()
    out = tmp_path / "out"
    assert settings.s3_endpoint is not None
    host, port = settings.s3_endpoint.rsplit(":", 1)
    with LatencyProxy(host, int(port)) as slow_s3:
        slow_s3.delay_s = 0.05  # per piece read: the download takes seconds
        process = subprocess.Popen(
            [str(ROOT / ".venv/bin/tallenne"), "export", "--company", COMPANY, "--reason",
             "arkistointi", str(out)],
            env={**os.environ, **settings_env(settings), "TALLENNE_S3_ENDPOINT": slow_s3.endpoint},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while not any(p.name.endswith(".zip.part") and p.stat().st_size > 0
                          for p in (out.iterdir() if out.exists() else [])):
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the export never started writing"
                await asyncio.sleep(0.02)
            process.send_signal(signal.SIGINT)
            _, err = await asyncio.to_thread(process.communicate, timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 130, err
    assert list(out.iterdir()) == []  # no .part, no zip: no partial copy of the calls
    assert "Traceback" not in err


async def test_cli_export_meeting_damaged_audio_marks_the_call_and_leaves_no_file(
        api: Api, db: asyncpg.Connection, settings: Settings, tmp_path: Path) -> None:
    """As the HTTP download: the call is marked corrupt and the alarm audited; no part of the
    zip stays on disk, and the command says which call in one line."""
    (made,) = await ingest(api, COMPANY, 1)
    (key,) = await bucket_keys(settings)
    store = object_store(settings)
    try:
        data = bytearray(await store.get_bytes(key))
        data[100] ^= 0x01
        await store.put_bytes(key, bytes(data))
    finally:
        await store.close()
    out = tmp_path / "out"
    done = await asyncio.to_thread(
        subprocess.run,
        [str(ROOT / ".venv/bin/tallenne"), "export", "--company", COMPANY, "--reason",
         "arkistointi", str(out)],
        env={**os.environ, **settings_env(settings)}, capture_output=True, text=True,
        timeout=120, check=False)
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("tallenne: error: ") and made["id"] in last
    assert "Traceback" not in done.stderr
    assert list(out.iterdir()) == []
    assert await db.fetchval("SELECT state FROM recordings WHERE id = $1::uuid",
                             made["id"]) == "corrupt"
    alarm = await db.fetchrow("SELECT actor, outcome, detail->>'found_by' AS found_by"
                              " FROM audit_events WHERE action = 'recording.integrity_alarm'")
    assert alarm is not None and (alarm["actor"], alarm["outcome"], alarm["found_by"]) == (
        "cli", "failure", "export")
