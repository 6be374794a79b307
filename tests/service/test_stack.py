"""The embedded stack as a user runs it: start, stop, restart, faults, slow S3, locking."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from devstack.embedded import (
    EmbeddedS3,
    EmbeddedStack,
    StackError,
    _claim,
    free_ports,
    load_or_create_secrets,
)
from service.app import create_app
from service.settings import Settings
from storage import accounts
from tests import audiogen
from tests.conftest import Stack
from tests.helpers import bearer
from tests.proxy import LatencyProxy
from tests.service.recording_factory import COMPANY, metadata, upload

ROOT = Path(__file__).resolve().parents[2]


def test_stack_restarts_on_the_same_data_and_refuses_a_second_owner(tmp_path: Path) -> None:
    first = EmbeddedStack(tmp_path / "data")
    info = first.start()
    try:
        second = EmbeddedStack(tmp_path / "data")
        with pytest.raises(StackError, match="already running"):
            second.start()
    finally:
        first.stop()
    assert first.postgres is not None and first.postgres.process is None
    again = EmbeddedStack(tmp_path / "data")
    info_again = again.start()
    try:
        # Same generated credentials: the data and keys of the first run are reused.
        assert info_again.s3_access_key == info.s3_access_key
    finally:
        again.stop()


def test_embedded_servers_listen_only_on_loopback(stack) -> None:  # type: ignore[no-untyped-def]
    s3 = stack.embedded.s3
    out = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True, check=False).stdout
    weed_lines = [line for line in out.splitlines() if f"pid={s3.process.pid}," in line]
    assert weed_lines, "weed mini should be listening"
    for line in weed_lines:
        local = line.split()[3]
        assert local.startswith("127.0.0.1:"), line
    assert set(s3.ports) >= {"s3.port", "master.port", "volume.port", "filer.port",
                              "webdav.port", "admin.port", "s3.port.iceberg", "s3.port.lance"}


def _s3_settings(settings: Settings, endpoint: str, secret: dict[str, str]) -> Settings:
    return settings.model_copy(update={
        "s3_endpoint": endpoint,
        "s3_access_key": SecretStr(secret["s3_access_key"]),
        "s3_secret_key": SecretStr(secret["s3_secret_key"]),
        "s3_timeout_s": 3.0,
    })


@asynccontextmanager
async def own_s3(settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[EmbeddedS3, Settings]]:
    """An S3 server of the test's own (to kill and restart) and settings pointing at it."""
    secret = load_or_create_secrets(tmp_path)
    s3 = EmbeddedS3(tmp_path, secret)
    await asyncio.to_thread(s3.start)
    try:
        yield s3, _s3_settings(settings, s3.endpoint, secret)
    finally:
        await asyncio.to_thread(s3.stop)


async def test_readiness_follows_s3_being_killed_and_restarted(
    settings: Settings, tmp_path: Path
) -> None:
    async with own_s3(settings, tmp_path) as (s3, s3_settings), \
            TestClient(TestServer(create_app(s3_settings))) as client:
        assert (await client.get("/readyz")).status == 200
        await asyncio.to_thread(s3.kill)
        response = await client.get("/readyz")
        assert response.status == 503
        assert response.content_type == "application/problem+json"
        assert "S3" in (await response.json())["detail"]
        assert "Retry-After" in response.headers
        assert (await client.get("/healthz")).status == 200
        await asyncio.to_thread(s3.start, dict(s3.ports))
        assert (await client.get("/readyz")).status == 200


async def test_replay_with_s3_down_answers_503_and_shows_no_s3_credentials(
    settings: Settings, tmp_path: Path, db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with own_s3(settings, tmp_path) as (s3, s3_settings), \
            TestClient(TestServer(create_app(s3_settings))) as client:
        (company,) = await accounts.companies_by_code(db, [COMPANY])
        _, ingest = await accounts.create_token(db, "pbx", "ingest", [company.id], False)
        _, quality = await accounts.create_token(db, "qa", "quality", [company.id], False)
        audio = audiogen.make_audio("wav_pcm", 5.0)
        stored = await upload(client, ingest, metadata(), audio)
        assert stored.status == 201, await stored.text()
        url = f"/api/v1/recordings/{(await stored.json())['id']}/audio"
        params = {"reason": "complaint 7"}
        ranged = await client.get(url, params=params,
                                  headers={**bearer(quality), "Range": "bytes=0-99"})
        assert ranged.status == 206 and await ranged.read() == audio.read_bytes()[:100]

        await asyncio.to_thread(s3.kill)
        for headers in ({"Range": "bytes=100-199"}, {}):
            response = await client.get(url, params=params,
                                        headers={**bearer(quality), **headers})
            assert response.status == 503
            assert response.content_type == "application/problem+json"
            text = await response.text()
            assert "object store" in text
            for secret_part in ("X-Amz", "Signature", s3.endpoint):
                assert secret_part not in text
        logged = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
        assert "X-Amz-Signature" not in logged and "X-Amz-Credential" not in logged


async def test_slow_s3_does_not_stall_the_event_loop(settings: Settings, stack) -> None:  # type: ignore[no-untyped-def]
    host, port = stack.info.s3_endpoint.split(":")
    with LatencyProxy(host, int(port)) as proxy:
        app = create_app(_s3_settings(settings, proxy.endpoint, stack.secret))
        async with TestClient(TestServer(app)) as client:
            proxy.delay_s = 1.5
            slow = asyncio.create_task(client.get("/readyz"))
            await asyncio.sleep(0.2)
            answers = [await client.get("/healthz") for _ in range(5)]
            # /healthz answered five times while the S3 round trip was still under way.
            assert not slow.done()
            assert all(a.status == 200 for a in answers)
            assert (await slow).status == 200
            proxy.delay_s = 0


async def test_s3_slower_than_the_timeout_answers_503_with_retry_after(
    settings: Settings, stack: Stack
) -> None:
    host, port = stack.info.s3_endpoint.split(":")
    with LatencyProxy(host, int(port)) as proxy:
        app = create_app(_s3_settings(settings, proxy.endpoint, stack.secret))
        async with TestClient(TestServer(app)) as client:
            proxy.delay_s = 5
            response = await client.get("/readyz")
            assert response.status == 503
            assert response.headers["Retry-After"]
            proxy.delay_s = 0


def test_free_ports_are_distinct_bindable_and_never_an_outgoing_connections_port() -> None:
    # A server restarted on its own port (a volume server, PostgreSQL after a fault) must find
    # it free: ports the kernel gives outgoing connections could be taken in between.
    low, high = (int(f) for f in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = free_ports(40)
    assert len(set(ports)) == 40
    assert not [port for port in ports if low <= port <= high]
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", ports[0]))
        server.listen()
        clients = [socket.create_connection(("127.0.0.1", ports[0])) for _ in range(50)]
        try:
            assert not {c.getsockname()[1] for c in clients} & set(ports)
        finally:
            for client in clients:
                client.close()


def test_a_port_another_process_drew_is_never_drawn_until_that_process_ends() -> None:
    # Two test workers (or checkouts) starting servers at the same moment once drew the same
    # port: the first had not bound it yet when the second checked it.
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from devstack.embedded import free_ports;"
         " print(*free_ports(13), flush=True); sys.stdin.read()"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        theirs = [int(p) for p in child.stdout.readline().split()]
        assert len(theirs) == 13
        claims = [_claim(port) for port in theirs]
        assert claims == [None] * 13  # still unbound, yet not free for this process
    finally:
        child.communicate("")
    claims = [_claim(port) for port in theirs]
    try:
        assert None not in claims  # free again once the process that drew them is gone
    finally:
        for claim in claims:
            if claim is not None:
                claim.close()


def test_serve_refuses_a_taken_port_naming_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "service.cli", "serve"],
            env={**os.environ, "TALLENNE_PORT": str(port), "TALLENNE_DATA_DIR": str(tmp_path)},
            capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
        )
    assert result.returncode != 0
    assert f"port {port}" in result.stderr and "already in use" in result.stderr


def test_a_bad_setting_is_named_without_a_traceback_or_its_value(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve"],
        env={**os.environ, "TALLENNE_DATABASE_POOL_SIZE": "2", "TALLENNE_DATA_DIR": str(tmp_path)},
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )
    assert result.returncode == 2
    assert "TALLENNE_DATABASE_POOL_SIZE" in result.stderr
    assert "greater than or equal to 4" in result.stderr
    assert "Traceback" not in result.stderr and "input_value" not in result.stderr


def test_a_bad_log_level_is_named_in_one_line_and_any_case_of_a_good_one_works(
    tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve"],
        env={**os.environ, "TALLENNE_LOG_LEVEL": "verbose", "TALLENNE_DATA_DIR": str(tmp_path)},
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "tallenne: error: TALLENNE_LOG_LEVEL: Input should be 'CRITICAL', 'ERROR', 'WARNING',"
        " 'INFO' or 'DEBUG'"]
    assert Settings(log_level="debug").log_level == "DEBUG"


def test_serve_starts_answers_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    import urllib.request

    (port,) = free_ports(1)
    env = {**os.environ, "TALLENNE_PORT": str(port), "TALLENNE_DATA_DIR": str(tmp_path / "d")}
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline and status != 200:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    status = r.status
            except OSError:
                time.sleep(0.3)
        assert status == 200
        stack_pids = [int(p) for p in subprocess.run(
            ["pgrep", "-f", str(tmp_path / "d")], capture_output=True, text=True, check=False
        ).stdout.split()]
        assert stack_pids, "embedded servers should be running"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "stopped." in err
        still = subprocess.run(["pgrep", "-f", str(tmp_path / "d")], capture_output=True,
                               text=True, check=False).stdout.split()
        assert still == []
        assert not (tmp_path / "d" / "stack.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
