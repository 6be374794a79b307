"""The production shape, run for real on this machine: a distributed SeaweedFS (master, three
volume servers keeping every file twice, a filer with its own store, an S3 gateway),
PostgreSQL, two `tallenne serve` processes configured by environment variables only, and
nginx balancing them with deploy/nginx.conf. Servers are killed with SIGKILL under load;
acknowledged recordings survive byte for byte, the audit chain verifies and PostgreSQL and
S3 agree afterwards."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from storage import accounts
from storage.objects import ObjectStore
from tests import audiogen
from tests.cluster import Cluster, missing_tools
from tests.helpers import bearer
from tests.service.recording_factory import COMPANY, form
from tests.service.recording_factory import metadata as call_metadata

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
REASON = "tuotantoharjoitus"
RETRY_FOR_S = 45.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    why = missing_tools()
    if why:
        pytest.skip(why)
    started = Cluster(tmp_path / "cluster", replicas=2, masters=3,
                      service_overrides={"TALLENNE_S3_TIMEOUT_S": "10"})
    started.start()
    try:
        yield started
    except BaseException:
        print(started.logs())
        raise
    finally:
        started.stop()


def metadata() -> dict[str, Any]:
    """A call of a few minutes ago: well inside its retention period, so the purge spares it
    unless the test moves its expiry."""
    ended = datetime.now(UTC) - timedelta(minutes=5)
    return call_metadata(started_at=(ended - timedelta(minutes=4)).isoformat(),
                         ended_at=ended.isoformat())


def audio_set(count: int, seconds: float) -> list[bytes]:
    return [audiogen.make_audio("wav_pcm", seconds, tone_hz=310.0 + 13 * i).read_bytes()
            for i in range(count)]


async def token(cluster: Cluster, role: str) -> str:
    conn = await asyncpg.connect(cluster.superuser_url)
    try:
        found = await accounts.companies_by_code(conn, [COMPANY])
        _, secret = await accounts.create_token(
            conn, f"rehearsal-{role}-{uuid.uuid4().hex[:6]}", role,
            [c.id for c in found], role == "admin")
    finally:
        await conn.close()
    return secret


def served_by(cluster: Cluster, request_id: str) -> str:
    """The replica address nginx sent a request to, from its access log (which names each
    request by the X-Request-Id its client sent)."""
    assert cluster.nginx is not None
    # nginx writes the line when it finalises the request, which can be a moment after its
    # client has read the last byte.
    deadline = time.monotonic() + 10
    while True:
        log = (cluster.nginx.directory / "access.log").read_text()
        for line in reversed(log.splitlines()):
            fields = line.split()
            if fields and fields[0] == request_id:
                return fields[1].split(",")[-1].strip()  # after a retry: the last one tried
        if time.monotonic() > deadline:
            raise AssertionError(f"request {request_id} is not in nginx's access log")
        time.sleep(0.05)


async def post(session: aiohttp.ClientSession, url: str, tok: str, meta: dict[str, Any],
               audio: bytes) -> tuple[int | str, dict[str, Any], str]:
    """(status or error name, JSON body, content type) of one upload."""
    try:
        async with session.post(f"{url}/api/v1/recordings",
                                data=form(meta, audio, filename="call.wav",
                                          content_type="audio/wav"),
                                headers=bearer(tok),
                                timeout=aiohttp.ClientTimeout(total=90)) as response:
            raw = await response.read()
            kind = response.headers.get("Content-Type", "")
            body = json.loads(raw) if "json" in kind and raw else {}
            return response.status, body, kind
    except (aiohttp.ClientError, TimeoutError) as exc:
        return exc.__class__.__name__, {}, ""


async def upload_until_acknowledged(session: aiohttp.ClientSession, url: str, tok: str,
                                    meta: dict[str, Any], audio: bytes) -> str:
    """What a telephony system does: retry a refused upload until it is acknowledged."""
    deadline = time.monotonic() + RETRY_FOR_S
    while True:
        status, body, kind = await post(session, url, tok, meta, audio)
        if status == 201:
            return str(body["id"])
        assert time.monotonic() < deadline, f"upload still refused: {status} {body}"
        if isinstance(status, int):
            assert status >= 500 and kind.startswith("application/problem+json"), (status, body)
        await asyncio.sleep(1.0)


async def get_audio(session: aiohttp.ClientSession, url: str, tok: str, recording_id: str,
                    byte_range: tuple[int, int] | None = None) -> tuple[int, bytes, str]:
    request_id = uuid.uuid4().hex
    headers = {**bearer(tok), "X-Request-Id": request_id}
    if byte_range is not None:
        headers["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
    async with session.get(f"{url}/api/v1/recordings/{recording_id}/audio",
                           params={"reason": REASON}, headers=headers,
                           timeout=aiohttp.ClientTimeout(total=60)) as response:
        return response.status, await response.read(), request_id


async def replay_until_complete(session: aiohttp.ClientSession, url: str, tok: str,
                                recording_id: str) -> bytes:
    deadline = time.monotonic() + RETRY_FOR_S
    while True:
        try:
            status, body, _ = await get_audio(session, url, tok, recording_id)
            if status == 200:
                return body
            assert status >= 500, (status, body[:300])
        except (aiohttp.ClientError, TimeoutError):
            pass
        assert time.monotonic() < deadline, f"{recording_id} is not replayable"
        await asyncio.sleep(1.0)


async def wait_pending(cluster: Cluster, timeout_s: float = 30.0) -> None:
    """Until an upload is under way (its row written, its object not yet complete)."""
    conn = await asyncpg.connect(cluster.superuser_url)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not await conn.fetchval(
                "SELECT count(*) FROM recordings WHERE state = 'pending'"):
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


async def test_production_rehearsal(cluster: Cluster) -> None:
    url = cluster.base_url
    ingest = await token(cluster, "ingest")
    quality = await token(cluster, "quality")
    admin = await token(cluster, "admin")
    stored: dict[str, bytes] = {}  # recording id -> the audio it was acknowledged with

    async with aiohttp.ClientSession() as session:
        # --- upload through nginx; replay whole and ranged from the other replica ----------
        first = audio_set(4, 20.0)
        metas = [metadata() for _ in first]
        uploads = await asyncio.gather(*(post(session, url, ingest, m, a)
                                         for m, a in zip(metas, first, strict=True)))
        for (status, body, _), audio in zip(uploads, first, strict=True):
            assert status == 201, body
            stored[str(body["id"])] = audio
        ids = list(stored)
        upstreams = {r.address for r in cluster.services}
        seen: set[str] = set()
        for recording_id in ids:
            audio = stored[recording_id]
            status, whole, rid = await get_audio(session, url, quality, recording_id)
            assert status == 200 and whole == audio
            seen.add(served_by(cluster, rid))
            for _ in range(3):
                first_byte = random.randrange(len(audio) - 70_000)
                span = (first_byte, first_byte + 65_535)
                status, part, rid = await get_audio(session, url, quality, recording_id, span)
                assert status == 206 and part == audio[span[0]:span[1] + 1]
                seen.add(served_by(cluster, rid))
        assert seen == upstreams, "nginx did not spread the replays over both replicas"

        # --- a purge started on both replicas at once ----------------------------------------
        expired = ids[:2]
        conn = await asyncpg.connect(cluster.superuser_url)
        try:
            await conn.execute(
                "UPDATE recordings SET retain_until = now() - interval '1 day'"
                " WHERE id = ANY($1::uuid[])", expired)
            keys_of_expired = [r["object_key"] for r in await conn.fetch(
                "SELECT object_key FROM recordings WHERE id = ANY($1::uuid[])", expired)]
        finally:
            await conn.close()
        started = await asyncio.gather(*(
            session.post(f"http://{r.address}/api/v1/purges", json={"dry_run": False},
                         headers=bearer(admin)) for r in cluster.services))
        runs = []
        for response in started:
            assert response.status == 202, await response.text()
            runs.append((await response.json())["id"])
        for run_id in runs:
            deadline = time.monotonic() + 60
            while True:
                async with session.get(f"{url}/api/v1/purges/{run_id}",
                                       headers=bearer(admin)) as response:
                    report = await response.json()
                if report["state"] != "running":
                    break
                assert time.monotonic() < deadline, report
                await asyncio.sleep(0.3)
            assert report["state"] == "finished", report
        for recording_id in expired:
            async with session.get(f"{url}/api/v1/recordings/{recording_id}",
                                   headers=bearer(quality)) as response:
                assert response.status == 404
            del stored[recording_id]
        objects = ObjectStore(cluster.s3_endpoint, cluster.secret["s3_access_key"],
                              cluster.secret["s3_secret_key"], cluster.bucket,
                              region="eu-north-1", threads=4)
        try:
            left = set(await objects.list_keys("recordings/"))
        finally:
            await objects.close()
        assert not left & set(keys_of_expired), "the purge left objects behind"
        assert len(left) == len(stored)

        # --- kill -9 a volume server while uploads are under way -----------------------------
        assert cluster.weed is not None
        # Two long calls (9.6 MB each) keep the store busy when the kill lands.
        burst = audio_set(6, 60.0) + [
            audiogen.make_audio("wav_pcm", 300.0, sample_rate=16000, tone_hz=250.0 + i)
            .read_bytes() for i in range(2)]
        metas = [metadata() for _ in burst]
        tasks = [asyncio.create_task(post(session, url, ingest, m, a))
                 for m, a in zip(metas, burst, strict=True)]
        await wait_pending(cluster)
        cluster.weed.kill_volume(0)
        outcomes = await asyncio.gather(*tasks)
        for (status, body, kind), meta, audio in zip(outcomes, metas, burst, strict=True):
            if status == 201:
                stored[str(body["id"])] = audio
                continue
            # Refused cleanly: a problem document the client can act on, then a retry.
            assert isinstance(status, int) and status >= 500, (status, body)
            assert kind.startswith("application/problem+json"), (status, kind)
            stored[await upload_until_acknowledged(session, url, ingest, meta, audio)] = audio
        cluster.weed.start_volume(0)

        # --- kill -9 another volume server while replays stream ------------------------------
        listeners = [await session.get(f"{url}/api/v1/recordings/{r}/audio",
                                       params={"reason": REASON}, headers=bearer(quality))
                     for r in stored]
        heads = []
        for listener in listeners:
            assert listener.status == 200
            heads.append(await listener.content.readexactly(64 * 1024))
        cluster.weed.kill_volume(1)
        for recording_id, listener, head in zip(stored, listeners, heads, strict=True):
            assert head == stored[recording_id][:len(head)]
            try:
                rest = await listener.read()
            except (aiohttp.ClientError, TimeoutError):
                continue  # cut off mid-stream; the player asks again
            finally:
                listener.release()
            assert head + rest == stored[recording_id]
        for recording_id, audio in stored.items():
            assert await replay_until_complete(session, url, quality, recording_id) == audio

        # --- kill -9 the replica a listener is being served by --------------------------------
        recording_id = next(iter(stored))
        audio = stored[recording_id]
        chunk = 64 * 1024
        heard = bytearray()
        killed: str | None = None
        while len(heard) < len(audio):
            span = (len(heard), min(len(heard) + chunk, len(audio)) - 1)
            status, part, rid = await get_audio(session, url, quality, recording_id, span)
            assert status == 206, (status, part[:300])
            assert killed is None or served_by(cluster, rid) != killed
            heard += part
            if killed is None and len(heard) >= 3 * chunk:
                killed = served_by(cluster, rid)
                victim = next(r for r in cluster.services if r.address == killed)
                victim.kill()
        assert killed is not None and bytes(heard) == audio

    # --- everything restarted: audit chain, reconciliation, every recording --------------
    cluster.restart()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/api/v1/audit/verify", headers=bearer(admin)) as response:
            assert response.status == 200, await response.text()
            verdict = await response.json()
        assert verdict["ok"] is True and verdict["first_bad"] is None, verdict
        for recording_id, audio in stored.items():
            assert await replay_until_complete(session, url, quality, recording_id) == audio

    result = await asyncio.to_thread(cluster.run_cli, "reconcile")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["orphan_objects"] == [] and report["stale_pending_rows"] == [], report
    conn = await asyncpg.connect(cluster.superuser_url)
    try:
        rows = await conn.fetch("SELECT id, state, object_key FROM recordings")
    finally:
        await conn.close()
    assert [r for r in rows if r["state"] == "pending"] == []
    assert {str(r["id"]) for r in rows} == set(stored)
    objects = ObjectStore(cluster.s3_endpoint, cluster.secret["s3_access_key"],
                          cluster.secret["s3_secret_key"], cluster.bucket,
                          region="eu-north-1", threads=4)
    try:
        keys = set(await objects.list_keys("recordings/"))
    finally:
        await objects.close()
    # No orphan (an object without its row), nothing missing (a row without its object).
    assert keys == {r["object_key"] for r in rows}
