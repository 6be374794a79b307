"""Fault injection with real processes: S3, PostgreSQL and the service itself are killed with
SIGKILL mid-work. Afterwards, once the reconciler has run, every acknowledged upload is
readable byte-identical, every unacknowledged one is absent or complete, and PostgreSQL and
S3 agree (no pending row, no object without a row, no row without its object). A command
whose PostgreSQL is killed under it says so in one line, never with a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from devstack.embedded import (
    EmbeddedPostgres,
    EmbeddedS3,
    EmbeddedStack,
    free_ports,
    load_or_create_secrets,
)
from service.app import create_app
from service.http.keys import OBJECTS, POOL
from service.recordings.reconciler import reconcile
from service.settings import Settings
from storage.db import create_pool
from storage.migrate import migrate_url
from tests import audiogen
from tests.conftest import Stack
from tests.helpers import Api, bearer, settings_env, until_waiting
from tests.service.recording_factory import COMPANY, bucket_keys, form, metadata, object_store
from tests.service.retention_factory import expired_recordings, purge_process

ROOT = Path(__file__).resolve().parents[2]
UPLOADS = 20


def distinct_audio(count: int, seconds: float = 4.0) -> list[bytes]:
    return [audiogen.make_audio("wav_pcm", seconds, tone_hz=300.0 + 17 * i).read_bytes()
            for i in range(count)]


async def post_recording(session: aiohttp.ClientSession, url: str, token: str,
                         meta: dict[str, Any], audio: bytes) -> int | str:
    """The status, or the name of the error when no answer came."""
    try:
        async with session.post(f"{url}/api/v1/recordings", data=form(meta, audio,
                                filename="call.wav", content_type="audio/wav"),
                                headers=bearer(token),
                                timeout=aiohttp.ClientTimeout(total=60)) as response:
            await response.read()
            return response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return exc.__class__.__name__


async def assert_consistent(db_url: str, settings: Settings) -> dict[str, tuple[str, str]]:
    """PostgreSQL and S3 agree; returns external_id -> (recording id, state)."""
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch("SELECT id, external_id, state, object_key FROM recordings")
    finally:
        await conn.close()
    assert [r["external_id"] for r in rows if r["state"] == "pending"] == []
    keys = set(await bucket_keys(settings))
    assert keys == {r["object_key"] for r in rows}, "objects without rows or rows without objects"
    return {r["external_id"]: (str(r["id"]), r["state"]) for r in rows}


async def replay(client: Any, base: str, token: str, recording_id: str) -> bytes:
    async with client.get(f"{base}/api/v1/recordings/{recording_id}/audio",
                          params={"reason": "fault drill"}, headers=bearer(token)) as r:
        assert r.status == 200, await r.text()
        return bytes(await r.read())


async def check_outcomes(client: TestClient[Any, Any], quality: str, metas: list[dict[str, Any]],
                         audios: list[bytes], statuses: list[int | str],
                         stored: dict[str, tuple[str, str]]) -> None:
    for meta, audio, status in zip(metas, audios, statuses, strict=True):
        found = stored.get(meta["external_id"])
        if status in (200, 201):
            assert found is not None, f"acknowledged upload {meta['external_id']} is gone"
        if found is not None:
            response = await client.get(f"/api/v1/recordings/{found[0]}/audio",
                                        params={"reason": "fault drill"},
                                        headers=bearer(quality))
            assert response.status == 200, await response.text()
            assert await response.read() == audio


async def test_s3_killed_during_concurrent_uploads_loses_nothing_acknowledged(
    api: Api, settings: Settings, stack: Stack, database: str, tmp_path: Path
) -> None:
    secret = load_or_create_secrets(tmp_path)
    s3 = EmbeddedS3(tmp_path, secret)
    await asyncio.to_thread(s3.start)
    try:
        own = settings.model_copy(update={
            "s3_endpoint": s3.endpoint, "s3_access_key": SecretStr(secret["s3_access_key"]),
            "s3_secret_key": SecretStr(secret["s3_secret_key"]), "s3_timeout_s": 3.0,
        })
        audios = distinct_audio(UPLOADS)
        metas = [metadata() for _ in audios]
        async with TestClient(TestServer(create_app(own))) as client:
            api = Api(client, stack.superuser_url(database))
            token = await api.token("ingest", [COMPANY])
            base = str(client.make_url("")).rstrip("/")
            session = client.session
            tasks = [asyncio.create_task(post_recording(session, base, token, m, a))
                     for m, a in zip(metas, audios, strict=True)]
            deadline = time.monotonic() + 20
            while sum(t.done() for t in tasks) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.to_thread(s3.kill)
            statuses = await asyncio.gather(*tasks)
            assert all(s in (200, 201, 503) for s in statuses), statuses
            await asyncio.to_thread(s3.start, dict(s3.ports))
            await reconcile(client.app[POOL], client.app[OBJECTS], grace=timedelta(0))
            stored = await assert_consistent(stack.superuser_url(database), own)
            quality = await api.token("quality", [COMPANY])
            await check_outcomes(client, quality, metas, audios, statuses, stored)
            assert statuses.count(201) >= 3
            # The service recovered without restart: the refused calls go through now.
            retried = [await post_recording(session, base, token, m, a)
                       for m, a, s in zip(metas, audios, statuses, strict=True) if s == 503]
            assert all(s == 201 for s in retried), retried
    finally:
        await asyncio.to_thread(s3.stop)


@contextlib.asynccontextmanager
async def own_postgres(settings: Settings,
                       directory: Path) -> AsyncIterator[tuple[EmbeddedPostgres, Settings]]:
    """A PostgreSQL of the test's own (one it may kill), and the settings pointing at it."""
    holder = EmbeddedStack(directory)
    holder.secret = load_or_create_secrets(holder.data_dir)
    postgres = EmbeddedPostgres(holder.data_dir, holder.secret)
    holder.postgres = postgres
    await asyncio.to_thread(postgres.start)
    try:
        await asyncio.to_thread(holder._ensure_app_database)
        yield postgres, settings.model_copy(update={
            "database_url": SecretStr(postgres.app_url()),
            "database_owner_url": SecretStr(postgres.owner_url())})
    finally:
        await asyncio.to_thread(postgres.stop)


async def test_postgres_killed_makes_the_service_not_ready_and_it_recovers_without_restart(
    settings: Settings, tmp_path: Path
) -> None:
    async with own_postgres(settings, tmp_path / "pg") as (postgres, own):
        audios = distinct_audio(10, seconds=2.0)
        metas = [metadata() for _ in audios]
        async with TestClient(TestServer(create_app(own))) as client:
            api = Api(client, postgres.superuser_url("tallenne"))
            token = await api.token("ingest", [COMPANY])
            base = str(client.make_url("")).rstrip("/")
            assert (await client.get("/readyz")).status == 200
            tasks = [asyncio.create_task(post_recording(client.session, base, token, m, a))
                     for m, a in zip(metas, audios, strict=True)]
            deadline = time.monotonic() + 20
            while sum(t.done() for t in tasks) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.to_thread(postgres.kill)
            statuses = await asyncio.gather(*tasks)
            assert all(s in (200, 201, 503) for s in statuses), statuses
            response = await client.get("/readyz")
            assert response.status == 503
            assert "PostgreSQL" in (await response.json())["detail"]
            assert (await client.get("/healthz")).status == 200

            await asyncio.to_thread(postgres.start, postgres.port)
            deadline = time.monotonic() + 15
            while (await client.get("/readyz")).status != 200:
                assert time.monotonic() < deadline, "the service did not become ready again"
                await asyncio.sleep(0.2)
            await reconcile(client.app[POOL], client.app[OBJECTS], grace=timedelta(0))
            stored = await assert_consistent(postgres.superuser_url("tallenne"), own)
            quality = await api.token("quality", [COMPANY])
            await check_outcomes(client, quality, metas, audios, statuses, stored)
            again = await post_recording(client.session, base, token, metadata(), audios[0])
            assert again == 201


async def test_cli_purge_whose_postgres_is_killed_says_so_in_one_line_without_a_traceback(
    settings: Settings, tmp_path: Path
) -> None:
    async with own_postgres(settings, tmp_path / "pg") as (postgres, own):
        await migrate_url(postgres.owner_url())
        db = await asyncpg.connect(postgres.superuser_url("tallenne"))
        try:
            await expired_recordings(db, own, 3)
            await db.execute("BEGIN")
            # The purge's first batch waits for this lock when PostgreSQL is killed.
            await db.execute("LOCK TABLE recording_tombstones IN ACCESS EXCLUSIVE MODE")
            process = purge_process(own)
            try:
                await until_waiting(db, 1, timeout_s=60)
                await asyncio.to_thread(postgres.kill)
                _, err = await asyncio.to_thread(process.communicate, timeout=60)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.communicate()
        finally:
            db.terminate()
    text = err.decode()
    assert process.returncode == 1, text
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("tallenne: error:")]
    assert len(errors) == 1 and "PostgreSQL" in errors[0], text


def _service_env(settings: Settings, port: int) -> dict[str, str]:
    return {**os.environ, **settings_env(settings), "TALLENNE_PORT": str(port),
            "TALLENNE_LOG_LEVEL": "WARNING"}


async def _start_service(env: dict[str, str], base: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=env,
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while True:
            assert process.poll() is None, "the service exited at start"
            assert time.monotonic() < deadline, "the service did not become ready"
            try:
                async with session.get(f"{base}/readyz") as response:
                    if response.status == 200:
                        return process
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


async def test_service_killed_mid_upload_leaves_postgres_and_s3_in_agreement(
    api: Api, settings: Settings, stack: Stack, database: str
) -> None:
    (port,) = free_ports(1)
    base = f"http://127.0.0.1:{port}"
    env = _service_env(settings, port)
    token = await api.token("ingest", [COMPANY])
    # Large enough that the S3 upload of a few of them is under way when the kill lands.
    big = [audiogen.make_audio("wav_pcm", 300.0, sample_rate=16000, tone_hz=200.0 + i)
           .read_bytes() for i in range(6)]
    metas = [metadata() for _ in big]
    superuser = stack.superuser_url(database)
    process = await _start_service(env, base)
    try:
        watcher = await asyncpg.connect(superuser)
        async with aiohttp.ClientSession() as session:
            tasks = [asyncio.create_task(post_recording(session, base, token, m, a))
                     for m, a in zip(metas, big, strict=True)]
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not await watcher.fetchval(
                    "SELECT count(*) FROM recordings WHERE state = 'pending'"):
                await asyncio.sleep(0.005)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
            statuses = await asyncio.gather(*tasks)
        await watcher.close()

        process = await _start_service(env, base)
        pool = await create_pool(superuser, max_size=2)
        objects = object_store(settings)
        try:
            await reconcile(pool, objects, grace=timedelta(0))
        finally:
            await pool.close()
            await objects.close()
        stored = await assert_consistent(superuser, settings)
        quality = await api.token("quality", [COMPANY])
        async with aiohttp.ClientSession() as session:
            for meta, audio, status in zip(metas, big, statuses, strict=True):
                found = stored.get(meta["external_id"])
                if status in (200, 201):
                    assert found is not None
                if found is not None:
                    assert await replay(session, base, quality, found[0]) == audio
            # The telephony system retries what was not acknowledged: each is stored once.
            for meta, audio in zip(metas, big, strict=True):
                assert await post_recording(session, base, token, meta, audio) in (200, 201)
        stored = await assert_consistent(superuser, settings)
        assert {m["external_id"] for m in metas} <= set(stored)
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)


def _standby_of(primary: EmbeddedPostgres, directory: Path) -> EmbeddedPostgres:
    """A streaming standby of `primary`, cloned by pg_basebackup (-R: it follows the primary)."""
    from devstack.embedded import _pg_bin

    standby = EmbeddedPostgres(directory, primary.secret)
    directory.mkdir(parents=True, exist_ok=True)
    standby._prepare_user()
    standby._chown(directory)
    subprocess.run(
        [str(_pg_bin("pg_basebackup")), "-h", "127.0.0.1", "-p", str(primary.port),
         "-U", "postgres", "-D", str(standby.pgdata), "-R", "-X", "stream", "-c", "fast"],
        check=True, capture_output=True,
        env={**os.environ, "PGPASSWORD": primary.secret["pg_superuser_password"]},
        **standby._as_user_kwargs(),
    )
    return standby


async def test_postgres_failover_to_a_standby_answers_503_meanwhile_and_loses_no_upload(
    settings: Settings, tmp_path: Path
) -> None:
    holder = EmbeddedStack(tmp_path / "primary")
    holder.secret = load_or_create_secrets(holder.data_dir)
    primary = EmbeddedPostgres(holder.data_dir, holder.secret)
    holder.postgres = primary
    standby: EmbeddedPostgres | None = None
    await asyncio.to_thread(primary.start)
    try:
        await asyncio.to_thread(holder._ensure_app_database)
        standby = await asyncio.to_thread(_standby_of, primary, tmp_path / "standby")
        await asyncio.to_thread(standby.start)
        # Synchronous replication: a commit (an acknowledged upload) is on the standby too.
        admin = await asyncpg.connect(primary.superuser_url())
        await admin.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
        await admin.execute("SELECT pg_reload_conf()")
        await admin.close()
        password = holder.secret["pg_app_password"]
        dsn = (f"postgresql://tallenne:{password}@127.0.0.1:{primary.port},"
               f"127.0.0.1:{standby.port}/tallenne?target_session_attrs=read-write")
        # Migrated once as the owner at start-up; served as the runtime role.
        own = settings.model_copy(update={"database_url": SecretStr(dsn),
                                          "database_owner_url": SecretStr(primary.owner_url())})
        audios = distinct_audio(8, seconds=2.0)
        metas = [metadata() for _ in audios]
        async with TestClient(TestServer(create_app(own))) as client:
            api = Api(client, primary.superuser_url("tallenne"))
            token = await api.token("ingest", [COMPANY])
            quality = await api.token("quality", [COMPANY])
            base = str(client.make_url("")).rstrip("/")
            tasks = [asyncio.create_task(post_recording(client.session, base, token, m, a))
                     for m, a in zip(metas, audios, strict=True)]
            deadline = time.monotonic() + 20
            while sum(t.done() for t in tasks) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.to_thread(primary.kill)
            statuses = await asyncio.gather(*tasks)
            assert all(s in (200, 201, 503) for s in statuses), statuses

            # No primary answers (the standby is read-only): 503 with Retry-After, never 500.
            requests: list[tuple[str, str, dict[str, Any]]] = [
                ("GET", "/api/v1/recordings", {}),
                ("POST", "/api/v1/recordings", {"data": form(metadata(), audios[0],
                                                             filename="call.wav",
                                                             content_type="audio/wav")}),
                ("GET", "/readyz", {}),
            ]
            for method, path, kwargs in requests:
                response = await client.request(method, path, headers=bearer(quality if
                                                 method == "GET" else token), **kwargs)
                assert response.status == 503, (path, await response.text())
                assert response.content_type == "application/problem+json"
                assert int(response.headers["Retry-After"]) > 0

            # The standby is promoted; the service finds it through the same DSN.
            promoter = await asyncpg.connect(standby.superuser_url())
            await promoter.execute("SELECT pg_promote()")
            await promoter.close()
            deadline = time.monotonic() + 30
            while (await client.get("/readyz")).status != 200:
                assert time.monotonic() < deadline, "the service did not find the new primary"
                await asyncio.sleep(0.2)
            listed = await client.get("/api/v1/recordings", headers=bearer(quality))
            assert listed.status == 200, await listed.text()
            await reconcile(client.app[POOL], client.app[OBJECTS], grace=timedelta(0))
            stored = await assert_consistent(standby.superuser_url("tallenne"), own)
            await check_outcomes(client, quality, metas, audios, statuses, stored)
            assert await post_recording(client.session, base, token, metadata(),
                                        audios[0]) == 201
    finally:
        if standby is not None:
            await asyncio.to_thread(standby.stop)
        await asyncio.to_thread(primary.stop)
