"""Bounded work per request: rejected lines past 1,000 only counted, JSON arrays read as they
arrive, decompression bounded, slow clients cut off, uploads in flight capped."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import asyncpg

from devstack.embedded import free_ports
from service.app import create_app
from service.http.keys import UPLOADS
from service.settings import Settings
from tests import audiogen
from tests.conftest import Stack, secure_origin_client
from tests.helpers import Api, bearer, settings_env
from tests.service.recording_factory import COMPANY, form, upload
from tests.service.recording_factory import metadata as call_metadata
from tests.service.test_web_events import A, event, post

ROOT = Path(__file__).resolve().parents[2]


async def test_only_the_first_1000_rejected_lines_are_listed_then_counted(
        api: Api, db: asyncpg.Connection) -> None:
    token = await api.token("ingest", [A])
    lines = [json.dumps(event(session_id="good-1")).encode()]
    lines += [b'{"not": "an event"}'] * 2500
    lines += [json.dumps(event(session_id="good-2")).encode()]
    response = await post(api, token, b"\n".join(lines) + b"\n")
    assert response.status == 200, await response.text()
    report = await response.json()
    assert report["accepted"] == 2
    assert report["rejected_total"] == 2500
    assert len(report["rejected"]) == 1000
    assert [r["line"] for r in report["rejected"][:2]] == [2, 3]
    assert report["rejected"][-1]["line"] == 1001
    assert await db.fetchval("SELECT count(*) FROM web_events") == 2


async def test_a_small_gzip_of_bad_lines_gives_a_bounded_report(api: Api) -> None:
    token = await api.token("ingest", [A])
    body = gzip.compress(b"x\n" * 300_000)
    assert len(body) < 4096
    response = await post(api, token, body, **{"Content-Encoding": "gzip"})
    assert response.status == 200, await response.text()
    report = await response.json()
    assert (report["accepted"], report["rejected_total"], len(report["rejected"])) == \
        (0, 300_000, 1000)
    assert len(await response.read()) < 200_000


async def test_a_json_array_is_read_element_by_element(
        api: Api, db: asyncpg.Connection) -> None:
    token = await api.token("ingest", [A])
    elements: list[object] = [event(session_id=f"s-{n}", attributes={"n": n, "x": "y" * 200})
                              for n in range(3000)]
    elements[10] = "not an object"
    elements[2000] = event(ts="yesterday")
    response = await post(api, token, json.dumps(elements).encode(), "application/json")
    assert response.status == 200, await response.text()
    report = await response.json()
    assert report["accepted"] == 2998
    assert [r["line"] for r in report["rejected"]] == [11, 2001]
    assert await db.fetchval("SELECT count(*) FROM web_events") == 2998
    stored = await db.fetchval("SELECT attributes FROM web_events WHERE session_id = 's-5'")
    assert json.loads(stored) == {"n": 5, "x": "y" * 200}


async def test_a_broken_json_array_stores_nothing(api: Api, db: asyncpg.Connection) -> None:
    token = await api.token("ingest", [A])
    whole = json.dumps([event(session_id=f"s-{n}") for n in range(6000)]).encode()
    for body in (whole[: len(whole) // 2], whole[:-1] + b"}", whole.replace(b'"s-7"', b"s-7")):
        response = await post(api, token, body, "application/json")
        assert response.status == 400, await response.text()
        assert response.headers["Content-Type"].startswith("application/problem+json")
    # A NUL fails its element only (reported in the batch answer), never the array.
    nul = json.dumps([event(session_id="a\u0000b")]).encode()
    report = await (await post(api, token, nul, "application/json")).json()
    assert report["accepted"] == 0 and "NUL" in report["rejected"][0]["error"]
    assert await db.fetchval("SELECT count(*) FROM web_events") == 0


async def test_a_gzip_bomb_to_a_json_endpoint_is_refused_not_inflated(api: Api) -> None:
    bomb = gzip.compress(b"{" + b" " * (200 * 1024**2) + b"}")
    response = await api.client.post("/api/v1/session", data=bomb, headers={
        "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert response.status == 413
    assert response.headers["Content-Type"].startswith("application/problem+json")


def test_aiohttp_is_pinned_to_a_version_with_bounded_decompression() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert '"aiohttp>=3.13.3,<4"' in text
    installed = tuple(int(p) for p in metadata.version("aiohttp").split(".")[:3])
    assert installed >= (3, 13, 3)


async def test_uploads_past_the_cap_answer_429_with_retry_after(
        settings: Settings, stack: Stack, database: str, db: asyncpg.Connection) -> None:
    app = create_app(settings.model_copy(update={"max_uploads_in_flight": 1}))
    async with secure_origin_client(app) as client:
        token = await Api(client, stack.superuser_url(database)).token("ingest", [COMPANY])
        audio = audiogen.make_audio("wav_pcm", 1.0)
        body = form(call_metadata(), audio)
        payload = body()
        raw = await payload.as_bytes()
        release = asyncio.Event()

        async def slow() -> AsyncIterator[bytes]:
            yield raw[:100]
            await release.wait()
            yield raw[100:]

        first = asyncio.ensure_future(client.post(
            "/api/v1/recordings", data=slow(),
            headers={**bearer(token), "Content-Type": payload.content_type}))
        # Wait until the slow upload holds the process's one slot.
        deadline = time.monotonic() + 30
        while app[UPLOADS].in_flight == 0 and time.monotonic() < deadline:
            assert not first.done()
            await asyncio.sleep(0.02)
        second = await upload(client, token, call_metadata(), audio)
        assert second.status == 429, await second.text()
        assert second.headers["Retry-After"] == "5"
        assert second.headers["Content-Type"].startswith("application/problem+json")
        release.set()
        assert (await first).status == 201
        third = await upload(client, token, call_metadata(), audio)
        assert third.status == 201, await third.text()
    assert await db.fetchval("SELECT count(*) FROM recordings") == 2


@contextmanager
def served(settings: Settings, **env: str) -> Iterator[int]:
    """The real `tallenne serve` on a free port; yields the port once it answers."""
    (port,) = free_ports(1)
    full = {**os.environ, **settings_env(settings), "TALLENNE_PORT": str(port),
            "TALLENNE_PURGE_ENABLED": "false", **env}
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=full,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, "the service exited"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        process.wait(30)


def _closed_while_trickling(port: int, head: bytes, trickle: bytes) -> bytes:
    """Send `head`, then a byte of `trickle` each 0.3 s; what the server sent before it
    closed the connection (AssertionError if it never does within 20 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head)
        sock.settimeout(0.3)
        received = b""
        deadline = time.monotonic() + 20
        for byte in trickle:
            if time.monotonic() > deadline:
                break
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return received
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return received
            if not data:
                return received
            received += data
        raise AssertionError("the server kept a slow connection open")


async def test_a_client_trickling_its_headers_is_disconnected(settings: Settings) -> None:
    with served(settings, TALLENNE_HEADER_TIMEOUT_S="1") as port:
        answered = await asyncio.to_thread(
            _closed_while_trickling, port, b"GET /healthz HTTP/1.1\r\n",
            b"X-Slow: " + b"a" * 200)
    assert answered == b""


async def test_a_client_stalling_its_body_gets_408(settings: Settings) -> None:
    with served(settings, TALLENNE_BODY_READ_TIMEOUT_S="1") as port:
        head = (b"POST /api/v1/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n{\"username\": ")

        def stall() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
                sock.sendall(head)
                received = b""
                while b"\r\n\r\n" not in received or b"}" not in received:
                    data = sock.recv(65536)
                    if not data:
                        break
                    received += data
                return received

        answered = await asyncio.to_thread(stall)
    assert answered.startswith(b"HTTP/1.1 408"), answered[:200]
    assert b"application/problem+json" in answered


async def test_a_json_array_nested_too_deeply_is_refused_whole(
        api: Api, db: asyncpg.Connection) -> None:
    token = await api.token("ingest", [A])
    deep: object = {"level": 0}
    for level in range(100):
        deep = {"level": level, "inner": deep}
    body = json.dumps([event(session_id="fine"), event(attributes={"deep": deep})]).encode()
    response = await post(api, token, body, "application/json")
    assert response.status == 400
    assert (await response.json())["errors"] == [{"loc": ["body"], "msg": "too deep"}]
    assert await db.fetchval("SELECT count(*) FROM web_events") == 0
    # Nesting within the limit is kept as sent.
    nested = {"a": {"b": {"c": [1, 2, {"d": None}]}}}
    response = await post(api, token, json.dumps([event(attributes=nested), 7]).encode(),
                          "application/json")
    report = await response.json()
    assert (report["accepted"], [r["line"] for r in report["rejected"]]) == (1, [2])
    stored = await db.fetchval("SELECT attributes FROM web_events")
    assert json.loads(stored) == nested
