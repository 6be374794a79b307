"""`tallenne import DIR --company CODE [--watch]` and `tallenne reconcile`: pairs of audio and
sidecar stored exactly once through the API's ingest path, bad pairs set aside with a reason,
the watcher picking up late pairs and stopping on SIGTERM; reconciliation from the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import asyncpg
import pytest

from service.cli import main as cli
from service.settings import Settings
from tests import audiogen
from tests.helpers import settings_env
from tests.service.recording_factory import COMPANY, bucket_keys, metadata, object_store

ROOT = Path(__file__).resolve().parents[2]
FORMATS = ["wav_pcm", "wav_mulaw", "mp3", "ogg_opus", "flac", "m4a_aac"]


def cli_env(settings: Settings) -> dict[str, str]:
    return settings_env(settings)


def subprocess_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLENNE_")}
    env.update(cli_env(settings))
    return env


def drop(folder: Path, stem: str, kind: str = "wav_pcm", *, sidecar: Any = None,
         seconds: float = 2.0, **meta: Any) -> dict[str, Any]:
    """Put `stem.<ext>` and `stem.json` into the folder; returns the sidecar's metadata."""
    audio = audiogen.make_audio(kind, seconds)
    shutil.copyfile(audio, folder / f"{stem}{audiogen.SUFFIXES[kind]}")
    values = metadata(**meta)
    values.pop("company")  # the sidecar may leave the company to --company
    text = sidecar if isinstance(sidecar, str) else json.dumps(values)
    (folder / f"{stem}.json").write_text(text, encoding="utf-8")
    return values


async def run_import(settings: Settings, folder: Path, capsys: pytest.CaptureFixture[str],
                     company: str = COMPANY) -> tuple[int, dict[str, int], str]:
    with mock.patch.dict(os.environ, cli_env(settings)):
        code = await asyncio.to_thread(cli.main, ["import", str(folder), "--company", company])
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    return code, summary, captured.err


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


async def test_pairs_of_every_format_are_stored_once_and_moved_to_done(
    db: asyncpg.Connection, settings: Settings, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "pbx-drop"
    folder.mkdir()
    sent = {kind: drop(folder, f"call-{kind}", kind) for kind in FORMATS}

    code, summary, err = await run_import(settings, folder, capsys)
    assert code == 0, err
    assert summary == {"imported": len(FORMATS), "already_stored": 0, "failed": 0,
                       "left_to_retry": 0}
    assert "importing [" in err  # the progress bar
    assert names(folder) == {"done"}
    assert names(folder / "done") == {
        f"call-{kind}{suffix}" for kind in FORMATS for suffix in (audiogen.SUFFIXES[kind], ".json")
    }
    rows = await db.fetch("SELECT external_id, state, format, codec, object_key, customer_id"
                          " FROM recordings")
    by_call = {r["external_id"]: r for r in rows}
    assert len(rows) == len(FORMATS)
    for kind, values in sent.items():
        row = by_call[values["external_id"]]
        assert (row["state"], row["format"], row["codec"]) == ("stored", *audiogen.EXPECTED[kind])
    assert sorted(await bucket_keys(settings)) == sorted(r["object_key"] for r in rows)
    audited = await db.fetch("SELECT actor, actor_kind, role, company, detail FROM audit_events"
                             " WHERE action = 'recording.ingest'")
    assert len(audited) == len(FORMATS)
    assert {(a["actor"], a["actor_kind"], a["role"], a["company"]) for a in audited} == {
        ("import:pbx-drop", "system", "ingest", COMPANY)}
    assert all(json.loads(a["detail"])["created"] is True for a in audited)


async def test_bad_pairs_go_to_failed_with_a_reason_and_neighbours_are_imported(
    db: asyncpg.Connection, settings: Settings, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    drop(folder, "a-good", "wav_alaw")
    (folder / "b-text.wav").write_text("Tämä ei ole ääntä.\n" * 200, encoding="utf-8")
    (folder / "b-text.json").write_text(json.dumps(metadata()), encoding="utf-8")
    drop(folder, "c-badjson", sidecar='{"external_id": "x", ')
    missing = metadata()
    del missing["started_at"]
    drop(folder, "d-missing")
    (folder / "d-missing.json").write_text(json.dumps(missing), encoding="utf-8")
    drop(folder, "e-other-company")
    (folder / "e-other-company.json").write_text(
        json.dumps(metadata(company="kemin-energia")), encoding="utf-8")
    shutil.copyfile(audiogen.make_audio("mp3", 2.0), folder / "f-lonely.mp3")
    drop(folder, "g-good", "ogg_opus")
    drop(folder, "h-twice", "wav_pcm")
    shutil.copyfile(audiogen.make_audio("mp3", 2.0), folder / "h-twice.mp3")

    code, summary, err = await run_import(settings, folder, capsys)
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("tallenne: error: 6 failed")
    assert summary == {"imported": 2, "already_stored": 0, "failed": 6, "left_to_retry": 0}
    assert names(folder) == {"done", "failed"}
    assert names(folder / "done") == {"a-good.wav", "a-good.json", "g-good.opus", "g-good.json"}
    failed = folder / "failed"
    assert names(failed) == {
        "b-text.wav", "b-text.json", "b-text.error",
        "c-badjson.wav", "c-badjson.json", "c-badjson.error",
        "d-missing.wav", "d-missing.json", "d-missing.error",
        "e-other-company.wav", "e-other-company.json", "e-other-company.error",
        "f-lonely.mp3", "f-lonely.error",
        "h-twice.wav", "h-twice.mp3", "h-twice.json", "h-twice.error",
    }

    def reason(stem: str) -> str:
        return (failed / f"{stem}.error").read_text(encoding="utf-8")

    assert "not audio" in reason("b-text")
    assert "not valid JSON" in reason("c-badjson")
    assert "started_at" in reason("d-missing")
    assert "kemin-energia" in reason("e-other-company")
    assert "no sidecar f-lonely.json" in reason("f-lonely")
    assert "several audio files share the sidecar h-twice.json" in reason("h-twice")
    assert "d-missing: failed: the metadata is not valid; metadata.started_at:" in err
    assert all(reason(s).startswith("not imported: ") for s in ("b-text", "f-lonely"))
    assert await db.fetchval("SELECT count(*) FROM recordings") == 2
    assert len(await bucket_keys(settings)) == 2


async def test_running_again_or_dropping_a_stored_pair_again_stores_nothing_twice(
    db: asyncpg.Connection, settings: Settings, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    drop(folder, "one", "flac")
    drop(folder, "two", "mp3")
    assert (await run_import(settings, folder, capsys))[1]["imported"] == 2
    keys = sorted(await bucket_keys(settings))

    code, summary, _ = await run_import(settings, folder, capsys)
    assert (code, summary["imported"], summary["already_stored"]) == (0, 0, 0)

    # The same call dropped again after success is recognised, not refused.
    for name in ("one.flac", "one.json"):
        shutil.copyfile(folder / "done" / name, folder / name)
    code, summary, err = await run_import(settings, folder, capsys)
    assert code == 0, err
    assert summary == {"imported": 0, "already_stored": 1, "failed": 0, "left_to_retry": 0}
    assert "one.flac: already stored as recording" in err
    assert names(folder) == {"done"}
    assert {"one~2.flac", "one~2.json"} <= names(folder / "done")

    # A move interrupted after the sidecar went ahead: the audio follows it.
    os.replace(folder / "done" / "two.mp3", folder / "two.mp3")
    code, summary, err = await run_import(settings, folder, capsys)
    assert (code, summary["already_stored"], summary["failed"]) == (0, 1, 0), err
    assert "two.mp3" in names(folder / "done") and names(folder) == {"done"}

    assert await db.fetchval("SELECT count(*) FROM recordings") == 2
    assert sorted(await bucket_keys(settings)) == keys
    created = [json.loads(r["detail"])["created"] for r in await db.fetch(
        "SELECT detail FROM audit_events WHERE action = 'recording.ingest' ORDER BY seq")]
    assert created == [True, True, False, False]


async def test_pair_that_meets_an_unreachable_store_stays_for_the_next_run(
    db: asyncpg.Connection, settings: Settings, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from service.cli.commands import import_folder
    from service.recordings import ingest
    from storage.errors import Unavailable

    async def s3_down(*args: Any, **kwargs: Any) -> Any:
        raise Unavailable("the object store cannot be reached")

    folder = tmp_path / "drop"
    folder.mkdir()
    drop(folder, "call", "wav_pcm")
    monkeypatch.setattr(import_folder, "store_recording", s3_down)
    code, summary, err = await run_import(settings, folder, capsys)
    assert code == 1
    assert summary == {"imported": 0, "already_stored": 0, "failed": 0, "left_to_retry": 1}
    assert "call.wav: not stored now, will retry: the object store cannot be reached" in err
    assert names(folder) == {"call.wav", "call.json"}

    monkeypatch.setattr(import_folder, "store_recording", ingest.store_recording)
    code, summary, err = await run_import(settings, folder, capsys)
    assert (code, summary["imported"]) == (0, 1), err
    assert names(folder) == {"done"}
    assert await db.fetchval("SELECT count(*) FROM recordings WHERE state = 'stored'") == 1


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@dataclass
class Watcher:
    process: subprocess.Popen[bytes]
    out: bytes = b""
    err: bytes = b""


@asynccontextmanager
async def watching(settings: Settings, folder: Path) -> AsyncIterator[Watcher]:
    """`tallenne import FOLDER --watch` running for the block, then stopped with SIGTERM;
    its output is on the Watcher afterwards."""
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "import", str(folder), "--company", COMPANY,
         "--watch"],
        cwd=ROOT, env=subprocess_env(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    watcher = Watcher(process)
    try:
        yield watcher
        process.send_signal(signal.SIGTERM)
        watcher.out, watcher.err = await asyncio.to_thread(process.communicate, timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


async def test_watch_picks_up_a_pair_added_later_and_stops_on_sigterm(
    db: asyncpg.Connection, settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "watched"
    folder.mkdir()
    drop(folder, "early", "wav_mulaw")
    async with watching(settings, folder) as watcher:
        await asyncio.to_thread(wait_for, lambda: (folder / "done" / "early.json").exists(),
                                60, "the pair present at start")
        # Audio whose sidecar has not arrived yet is waited for, not failed.
        shutil.copyfile(audiogen.make_audio("m4a_aac", 3.0), folder / "late.m4a")
        await asyncio.sleep(5)
        assert "late.m4a" in names(folder) and not (folder / "failed").exists()
        late = metadata()
        late.pop("company")
        (folder / "late.json").write_text(json.dumps(late), encoding="utf-8")
        await asyncio.to_thread(wait_for, lambda: (folder / "done" / "late.json").exists(),
                                30, "the pair added later")
        assert watcher.process.poll() is None
    assert watcher.process.returncode == 0, watcher.err.decode()
    summary = json.loads(watcher.out.decode().strip().splitlines()[-1])
    assert summary == {"imported": 2, "already_stored": 0, "failed": 0, "left_to_retry": 0}
    assert names(folder / "done") == {"early.wav", "early.json", "late.m4a", "late.json"}
    stored = await db.fetchval("SELECT count(*) FROM recordings WHERE state = 'stored'"
                               " AND external_id = $1", late["external_id"])
    assert stored == 1


async def test_watch_waits_for_audio_that_is_still_being_written(
    db: asyncpg.Connection, settings: Settings, tmp_path: Path
) -> None:
    """A sender that pauses mid-copy leaves a truncated file for a while: the watcher retries
    it (once it changes) instead of setting it aside as broken."""
    folder = tmp_path / "watched"
    folder.mkdir()
    whole = audiogen.make_audio("wav_pcm", 4.0).read_bytes()
    (folder / "slow.wav").write_bytes(whole[: len(whole) // 2])
    values = metadata()
    values.pop("company")
    (folder / "slow.json").write_text(json.dumps(values), encoding="utf-8")
    async with watching(settings, folder) as watcher:
        await asyncio.sleep(8)
        assert "slow.wav" in names(folder) and not (folder / "failed").exists()
        (folder / "slow.wav").write_bytes(whole)  # the sender finishes the copy
        await asyncio.to_thread(wait_for, lambda: (folder / "done" / "slow.wav").exists(),
                                30, "the finished file")
    assert "may still be being written" in watcher.err.decode()
    summary = json.loads(watcher.out.decode().strip().splitlines()[-1])
    assert summary == {"imported": 1, "already_stored": 0, "failed": 0, "left_to_retry": 0}
    assert await db.fetchval("SELECT size_bytes FROM recordings WHERE external_id = $1",
                             values["external_id"]) == len(whole)


async def test_cli_reconcile_removes_orphans_and_stale_pending_rows_and_reports_them(
    db: asyncpg.Connection, settings: Settings
) -> None:
    store = object_store(settings)
    orphan = f"recordings/2026/01/{uuid.uuid4()}"
    stale_id = uuid.uuid4()
    stale_key = f"recordings/2026/01/{stale_id}"
    try:
        await store.ensure_bucket()
        await store.put_bytes(orphan, b"\x00" * 100)
        await store.put_bytes(stale_key, b"\x00" * 50)
    finally:
        await store.close()
    await db.execute(
        "INSERT INTO recordings (id, company_id, external_id, started_at, ended_at, direction,"
        " purpose, format, codec, duration_s, sample_rate, channels, size_bytes, sha256,"
        " object_key, key_owner, key_owner_id, wrapped_key, created_at)"
        " SELECT $1, id, 'crashed-upload', now() - interval '2 hours', now() - interval '1 hour',"
        " 'inbound', 'quality', 'wav', 'pcm_s16le', 60, 8000, 1, 960000, repeat('0', 64), $2,"
        " 'company', id, '\\x00', now() - interval '1 hour' FROM companies WHERE code = $3",
        stale_id, stale_key, COMPANY,
    )

    def reconcile() -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "service.cli", "reconcile"], cwd=ROOT,
            env=subprocess_env(settings), capture_output=True, timeout=120, check=False,
        )

    done = await asyncio.to_thread(reconcile)
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert report == {"stale_pending_rows": [str(stale_id)], "orphan_objects": [orphan],
                      "failed_deletes": []}
    assert b"reconcile: objects checked: 2" in done.stderr  # progress, as the bucket is walked
    assert await bucket_keys(settings) == []
    assert await db.fetchval("SELECT count(*) FROM recordings") == 0
    assert await db.fetchval("SELECT count(*) FROM audit_events"
                             " WHERE action = 'recording.reconcile'") == 1

    again = await asyncio.to_thread(reconcile)
    assert again.returncode == 0
    assert json.loads(again.stdout.decode().strip().splitlines()[-1]) == {
        "stale_pending_rows": [], "orphan_objects": [], "failed_deletes": []}
