"""A real log shipper posts unchanged: syslog-ng tails a file and sends NDJSON batches."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path

import asyncpg
import pytest

from tests.helpers import Api

pytestmark = pytest.mark.e2e

COMPANY = "kemin-energia"


def config_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                         check=True).stdout
    found = re.search(r"Config version:\s*([0-9]+\.[0-9]+)", out)
    return found.group(1) if found else "3.35"


def write_config(tmp: Path, version: str, source: Path, url: str, token: str) -> Path:
    conf = tmp / "syslog-ng.conf"
    conf.write_text(f"""@version: {version}
options {{ keep-hostname(yes); }};
source s_events {{
    file("{source}" flags(no-parse) follow-freq(0.2) default-priority(info));
}};
destination d_tallenne {{
    http(
        url("{url}")
        method("POST")
        headers("Authorization: Bearer {token}", "Content-Type: application/x-ndjson")
        body("${{MSG}}")
        delimiter("\\n")
        batch-lines(5)
        batch-timeout(300)
    );
}};
log {{ source(s_events); destination(d_tallenne); }};
""")
    return conf


async def start_syslog_ng(binary: str, conf: Path, tmp: Path) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        binary, "-F", "-f", str(conf),
        "--persist-file", str(tmp / "syslog-ng.persist"),
        "--pidfile", str(tmp / "syslog-ng.pid"),
        "--control", str(tmp / "syslog-ng.ctl"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    await asyncio.sleep(1.0)
    if process.returncode is not None:
        output = (await process.stdout.read()).decode() if process.stdout else ""
        pytest.fail(f"syslog-ng exited at start: {output[-2000:]}")
    return process


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def wait_for_rows(db: asyncpg.Connection, pattern: str, expected: int) -> int:
    count = 0
    for _ in range(100):
        count = await db.fetchval(
            "SELECT count(*) FROM web_events WHERE session_id LIKE $1", pattern)
        if count >= expected:
            break
        await asyncio.sleep(0.2)
    return int(count)


def syslog_ng_binary() -> str:
    binary = shutil.which("syslog-ng")
    if binary is None:
        pytest.skip("syslog-ng not installed (apt-get install syslog-ng-core syslog-ng-mod-http)")
    return binary


async def test_syslog_ng_http_destination_delivers_lines_as_events(
    api: Api, db: asyncpg.Connection, tmp_path: Path
) -> None:
    binary = syslog_ng_binary()
    token = await api.token("ingest", [COMPANY], name="syslog-ng")
    source = tmp_path / "events.log"
    source.write_text("")
    url = f"http://127.0.0.1:{api.client.server.port}/api/v1/web-events"
    conf = write_config(tmp_path, config_version(binary), source, url, token)
    process = await start_syslog_ng(binary, conf, tmp_path)
    try:
        lines = [
            {"ts": f"2026-01-05T10:00:{i:02d}+02:00", "site": "kemin-energia.fi",
             "event": "page_view", "url": f"https://kemin-energia.fi/p/{i}",
             "session_id": f"shipper-{i}", "ip": "198.51.100.23", "attributes": {"n": i}}
            for i in range(12)
        ]
        with source.open("a") as handle:
            for line in lines:
                handle.write(json.dumps(line) + "\n")
        assert await wait_for_rows(db, "shipper-%", len(lines)) == len(lines)
        ips = {str(r["ip"]) for r in await db.fetch("SELECT DISTINCT ip FROM web_events")}
        assert ips == {"198.51.100.0/24"}
    finally:
        await stop(process)


async def test_group_wide_token_without_company_stores_lines_under_their_sites_company(
    api: Api, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """README's syslog-ng http() setup with one token for the whole group: the lines name no
    company, the site registry decides."""
    binary = syslog_ng_binary()
    admin = await api.token("admin", all_companies=True, name="site-admin")
    sites = {"kemin-energia.fi": "kemin-energia", "tornionenergia.fi": "tornion-energia"}
    response = await api.client.put(
        "/api/v1/sites", json=[{"site": s, "company": c} for s, c in sites.items()],
        headers={"Authorization": f"Bearer {admin}"})
    assert response.status == 200, await response.text()
    codes = [r["code"] for r in await db.fetch("SELECT code FROM companies")]
    token = await api.token("ingest", codes, name="group-syslog-ng")
    source = tmp_path / "events.log"
    source.write_text("")
    url = f"http://127.0.0.1:{api.client.server.port}/api/v1/web-events"
    conf = write_config(tmp_path, config_version(binary), source, url, token)
    process = await start_syslog_ng(binary, conf, tmp_path)
    try:
        site_names = list(sites)
        lines = [
            {"ts": f"2026-01-05T11:00:{i:02d}+02:00", "site": site_names[i % 2],
             "event": "page_view", "url": f"https://{site_names[i % 2]}/p/{i}",
             "session_id": f"group-{i}", "ip": "198.51.100.23"}
            for i in range(20)
        ]
        with source.open("a") as handle:
            for line in lines:
                handle.write(json.dumps(line) + "\n")
        assert await wait_for_rows(db, "group-%", len(lines)) == len(lines)
        stored = await db.fetch(
            "SELECT e.site, c.code FROM web_events e JOIN companies c ON c.id = e.company_id")
        assert len(stored) == 20
        assert all(sites[r["site"]] == r["code"] for r in stored)
        assert {r["code"] for r in stored} == set(sites.values())
    finally:
        await stop(process)
