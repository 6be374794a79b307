"""A database connection lost in the middle of a request (a failover, an administrator,
a network cut): a read is answered from a fresh connection, a write answers 503 with
Retry-After for the client to retry; never a 500. A client that hangs up is no lost
database."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from devstack.embedded import free_ports
from service.settings import Settings
from storage import accounts, recordings
from tests import audiogen
from tests.helpers import Api, bearer, settings_env
from tests.service.recording_factory import COMPANY, form, metadata

ROOT = Path(__file__).resolve().parents[2]


async def _cut_off_while_waiting(db: asyncpg.Connection, request: Any,
                                 hold: Callable[[], Awaitable[object]]) -> Any:
    """Start `request` while `hold` (run in a transaction of the test's own) keeps a lock it
    needs, end the service's backend that waits on the lock, then let go: what the client
    sees of a connection lost mid-query."""
    lock = db.transaction()
    await lock.start()
    await hold()
    task = asyncio.ensure_future(request)
    try:
        deadline = time.monotonic() + 20
        while True:
            waiting = await db.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
            if waiting:
                break
            assert time.monotonic() < deadline, "the request never reached the lock"
            await asyncio.sleep(0.02)
        for row in waiting:
            await db.execute("SELECT pg_terminate_backend($1)", row["pid"])
    finally:
        await lock.rollback()
    return await task


async def test_a_read_that_loses_its_connection_is_answered_from_a_fresh_one(
    api: Api, db: asyncpg.Connection
) -> None:
    ingest = await api.token("ingest", [COMPANY])
    stored = await api.client.post("/api/v1/recordings", headers=bearer(ingest), data=form(
        metadata(), audiogen.make_audio("wav_pcm", 1.0).read_bytes(), filename="call.wav",
        content_type="audio/wav"))
    assert stored.status == 201, await stored.text()
    quality = await api.token("quality", [COMPANY])
    response = await _cut_off_while_waiting(
        db, api.client.get("/api/v1/recordings", headers=bearer(quality)),
        lambda: db.execute("LOCK TABLE recordings IN ACCESS EXCLUSIVE MODE"))
    assert response.status == 200, await response.text()
    assert [item["id"] for item in (await response.json())["items"]] \
        == [(await stored.json())["id"]]


async def test_a_write_that_loses_its_connection_answers_503_with_retry_after(
    api: Api, db: asyncpg.Connection
) -> None:
    ingest = await api.token("ingest", [COMPANY])
    audio = audiogen.make_audio("wav_pcm", 1.0).read_bytes()
    meta = metadata()
    company_id = await db.fetchval("SELECT id FROM companies WHERE code = $1", COMPANY)
    # The call's own ingest lock, taken inside the write's transaction: the upload's reads
    # before it (which a lost connection would only retry) go through.
    response = await _cut_off_while_waiting(db, api.client.post(
        "/api/v1/recordings", headers=bearer(ingest),
        data=form(meta, audio, filename="call.wav", content_type="audio/wav")),
        lambda: recordings.lock_call(db, company_id, meta["external_id"]))
    assert response.status == 503, await response.text()
    assert response.content_type == "application/problem+json"
    assert int(response.headers["Retry-After"]) > 0
    # The client's retry goes through on a fresh connection; the call is stored once.
    again = await api.client.post("/api/v1/recordings", headers=bearer(ingest),
                                  data=form(meta, audio, filename="call.wav",
                                            content_type="audio/wav"))
    assert again.status == 201, await again.text()
    assert await db.fetchval("SELECT count(*) FROM recordings WHERE external_id = $1",
                             meta["external_id"]) == 1


async def _token(db: asyncpg.Connection, role: str) -> str:
    companies = await accounts.companies_by_code(db, [COMPANY])
    _, secret = await accounts.create_token(db, f"test-{role}", role,
                                            [c.id for c in companies], False)
    return secret


async def _service_backends(db: asyncpg.Connection) -> set[int]:
    """Backend pids of the service's pooled connections."""
    rows = await db.fetch("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                          " AND application_name = 'tallenne'")
    return {row["pid"] for row in rows}


def _requests_counted(metrics: str, route: str, status: int) -> float:
    found = re.search(r'^tallenne_http_requests_total\{method="GET",route="' + re.escape(route)
                      + f'",status="{status}"' + r'\} (\S+)$', metrics, re.MULTILINE)
    return float(found[1]) if found else 0.0


def _log_lines(log: Path) -> list[dict[str, Any]]:
    """The service's JSON log lines (its stderr also carries the start-up announcement)."""
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


async def test_a_listener_who_leaves_mid_replay_leaves_the_database_connections_alone(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """A player stopped mid-stream closes its connection while the audio is being written:
    the client went away, the database did not. The service (run as in production, where
    aiohttp lets a handler finish after its client left) keeps its pooled connections,
    counts no 503 and blames no backing service in its log."""
    (port,) = free_ports(1)
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "service.log"
    env = {**os.environ, **settings_env(settings), "TALLENNE_PORT": str(port),
           "TALLENNE_LOG_LEVEL": "INFO"}
    with log.open("wb") as stderr:
        service = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=env,
                                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            while True:
                assert service.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the service did not become ready"
                try:
                    async with session.get(f"{base}/readyz") as ready:
                        if ready.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            # About 11 MB: more than the socket buffers between the service and a player
            # that stopped reading can hold.
            audio = audiogen.make_audio("wav_pcm", 60.0, sample_rate=48000,
                                        channels=2).read_bytes()
            async with session.post(f"{base}/api/v1/recordings",
                                    headers=bearer(await _token(db, "ingest")),
                                    data=form(metadata(), audio, filename="call.wav",
                                              content_type="audio/wav")) as stored:
                assert stored.status == 201, await stored.text()
                recording_id = (await stored.json())["id"]
            quality = await _token(db, "quality")
            path = f"/api/v1/recordings/{recording_id}/audio?reason=quality+review"
            async with session.get(f"{base}{path}", headers={
                    **bearer(quality), "Range": "bytes=0-99"}) as first:
                assert first.status == 206, await first.text()
            before = await _service_backends(db)
            assert before
            async with session.get(f"{base}/metrics") as metrics:
                lost_before = _requests_counted(await metrics.text(),
                                                "/api/v1/recordings/{id}/audio", 503)

            # The player reads the headers and a little audio, then goes away.
            request_id = f"player-{uuid.uuid4().hex}"
            player = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            player.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            player.setblocking(False)
            await asyncio.get_running_loop().sock_connect(player, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=player)
            writer.write((f"GET {path} HTTP/1.1\r\nHost: tallenne\r\n"
                          f"Authorization: Bearer {quality}\r\nX-Request-Id: {request_id}\r\n"
                          "Range: bytes=0-\r\n\r\n").encode())
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 206"), head
            await reader.readexactly(64 * 1024)
            writer.transport.abort()

            deadline = time.monotonic() + 20
            while not (answered := [line for line in _log_lines(log) if line["msg"] == "request"
                                    and line.get("request_id") == request_id]):
                assert time.monotonic() < deadline, "the replay left by its player never ended"
                await asyncio.sleep(0.1)
            assert answered[0]["status"] == 499, answered
            assert {(line["level"], line["msg"]) for line in _log_lines(log)
                    if line.get("request_id") == request_id} == {
                ("info", "client went away"), ("info", "request")}
            assert not [line for line in _log_lines(log) if line["msg"] == "backing service lost"]
            async with session.get(f"{base}/metrics") as metrics:
                assert _requests_counted(await metrics.text(), "/api/v1/recordings/{id}/audio",
                                         503) == lost_before
            # Replays after it are served on the connections the service had before.
            for reason in ("quality+review", "complaint+4711"):
                async with session.get(f"{base}/api/v1/recordings/{recording_id}/audio"
                                       f"?reason={reason}",
                                       headers={**bearer(quality), "Range": "bytes=0-99"}) as again:
                    assert again.status == 206, await again.text()
            assert before <= await _service_backends(db)
    finally:
        service.terminate()
        service.wait(30)
