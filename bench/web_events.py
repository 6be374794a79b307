"""Web-event ingest throughput: the product's HTTP endpoints against raw asyncpg COPY.

    .venv/bin/python -m bench.web_events [--quick] [--rows N]

Starts its own embedded PostgreSQL and S3 and the app on a free port, then in the same run
and database COPYs N rows straight into a table shaped like `web_events`, posts the same
rows as gzip NDJSON batches of 5,000 lines (4 concurrent) to POST /api/v1/web-events, and
as gzip OTLP protobuf requests of 5,000 log records (4 concurrent) to
POST /api/v1/otlp/v1/logs. Goals: NDJSON >= 0.8x, OTLP >= 0.7x raw COPY. Each path's ratio
is printed; the last line is the one furthest below (or least above) its goal:
`web_events: ratio X.XX (goal >= Y) PASS|FAIL`.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import ipaddress
import json
import resource
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from pydantic import SecretStr

from devstack.embedded import RUNTIME_GROUP, EmbeddedStack, load_or_create_secrets
from service.app import create_app
from service.settings import Settings
from storage import accounts

GOAL = 0.8
OTLP_GOAL = 0.7
BATCH_LINES = 5000
CONCURRENCY = 4
COMPANY = "kemin-energia"


def make_events(n: int) -> list[dict[str, Any]]:
    start = datetime.now(UTC) - timedelta(days=2)
    return [
        {
            "ts": (start + timedelta(milliseconds=i * 50)).isoformat(),
            "site": "kemin-energia.fi",
            "event": ("page_view", "login", "download")[i % 3],
            "url": f"https://kemin-energia.fi/asiakas/sivu/{i % 500}",
            "session_id": f"s-{i // 20}",
            "customer_number": f"{100000 + i % 5000}" if i % 4 == 0 else None,
            "ip": f"10.{i % 200}.{(i // 200) % 250}.{i % 250}",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
            "referrer": "https://www.google.fi/",
            "attributes": {"lang": "fi", "n": i},
        }
        for i in range(n)
    ]


async def raw_copy(dsn: str, owner_dsn: str, events: list[dict[str, Any]],
                   company_id: uuid.UUID) -> float:
    # The owner makes the table (the service's role owns nothing); the service's role COPYs.
    owner = await asyncpg.connect(owner_dsn)
    try:
        await owner.execute("DROP TABLE IF EXISTS bench_web_events")
        await owner.execute("CREATE TABLE bench_web_events (LIKE web_events INCLUDING ALL)")
        await owner.execute(f"GRANT INSERT ON bench_web_events TO {RUNTIME_GROUP}")
        try:
            return await _timed_copy(dsn, events, company_id)
        finally:
            await owner.execute("DROP TABLE bench_web_events")
    finally:
        await owner.close()


async def _timed_copy(dsn: str, events: list[dict[str, Any]], company_id: uuid.UUID) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        records = [
            (
                datetime.fromisoformat(e["ts"]), company_id, e["site"], e["event"], e["url"],
                e["session_id"], e["customer_number"],
                ipaddress.ip_network(f"{e['ip']}/24", strict=False), e["user_agent"],
                e["referrer"], json.dumps(e["attributes"]),
            )
            for e in events
        ]
        columns = ("ts", "company_id", "site", "event", "url", "session_id", "customer_number",
                   "ip", "user_agent", "referrer", "attributes")
        started = time.perf_counter()
        for i in range(0, len(records), BATCH_LINES):
            await conn.copy_records_to_table(
                "bench_web_events", records=records[i:i + BATCH_LINES], columns=columns
            )
        return time.perf_counter() - started
    finally:
        await conn.close()


def ndjson_bodies(events: list[dict[str, Any]]) -> list[bytes]:
    return [
        gzip.compress("".join(json.dumps(e) + "\n" for e in events[i:i + BATCH_LINES]).encode(), 6)
        for i in range(0, len(events), BATCH_LINES)
    ]


def _set(attributes: Any, key: str, value: str) -> None:
    attributes.add(key=key).value.string_value = value


def otlp_bodies(events: list[dict[str, Any]]) -> list[bytes]:
    """The same events as a web site's OpenTelemetry SDK exports them: one resource naming
    the site (service.name), one record per event with semantic-convention attributes."""
    bodies = []
    for i in range(0, len(events), BATCH_LINES):
        request = ExportLogsServiceRequest()
        resource_logs = request.resource_logs.add()
        _set(resource_logs.resource.attributes, "service.name", events[i]["site"])
        records = resource_logs.scope_logs.add().log_records
        for e in events[i:i + BATCH_LINES]:
            ts = datetime.fromisoformat(e["ts"])
            record = records.add(time_unix_nano=int(ts.timestamp() * 1e6) * 1000,
                                 event_name=e["event"])
            attributes = record.attributes
            _set(attributes, "url.full", e["url"])
            _set(attributes, "session.id", e["session_id"])
            if e["customer_number"]:
                _set(attributes, "enduser.id", e["customer_number"])
            _set(attributes, "client.address", e["ip"])
            _set(attributes, "user_agent.original", e["user_agent"])
            _set(attributes, "http.request.header.referer", e["referrer"])
            _set(attributes, "lang", e["attributes"]["lang"])
            attributes.add(key="n").value.int_value = e["attributes"]["n"]
        bodies.append(gzip.compress(request.SerializeToString(), 6))
    return bodies


async def through_http(url: str, token: str, bodies: list[bytes], content_type: str,
                       expected: int) -> float:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type,
               "Content-Encoding": "gzip"}
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    accepted = 0
    is_otlp = content_type == "application/x-protobuf"

    async def shipper(session: aiohttp.ClientSession) -> None:
        nonlocal accepted
        while not queue.empty():
            body = queue.get_nowait()
            while True:
                async with session.post(url, data=body, headers=headers) as response:
                    if response.status in (429, 503):
                        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                        continue
                    if is_otlp:
                        answer = await response.read()
                        if response.status != 200 or answer:  # empty: no partial success
                            raise RuntimeError(f"request failed: {response.status} {answer!r}")
                        accepted += BATCH_LINES
                        break
                    report = await response.json()
                    if response.status != 200 or report["rejected"]:
                        raise RuntimeError(f"batch failed: {response.status} {report}")
                    accepted += report["accepted"]
                    break

    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(shipper(session) for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    if min(accepted, expected) != expected:
        raise RuntimeError(f"accepted {accepted} of {expected}")
    return elapsed


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run(rows: int, data_dir: Path) -> tuple[float, float]:
    if rows % BATCH_LINES:
        raise ValueError(f"--rows must be a multiple of {BATCH_LINES}")
    stack = EmbeddedStack(data_dir)
    info = stack.start()
    try:
        secret = load_or_create_secrets(data_dir)
        settings = Settings(
            database_url=SecretStr(info.database_url),
            database_owner_url=SecretStr(info.database_owner_url), s3_endpoint=info.s3_endpoint,
            s3_access_key=SecretStr(info.s3_access_key),
            s3_secret_key=SecretStr(info.s3_secret_key),
            master_key=SecretStr(secret["master_key"]),
            personal_id_key=SecretStr(secret["personal_id_key"]),
            audit_signing_key=SecretStr(secret["audit_signing_key"]),
            data_dir=data_dir, log_level="WARNING",
        )
        runner = web.AppRunner(create_app(settings), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            conn = await asyncpg.connect(info.database_url)
            try:
                company = (await accounts.companies_by_code(conn, [COMPANY]))[0]
                _, token = await accounts.create_token(
                    conn, "bench", "ingest", [company.id], False
                )
            finally:
                await conn.close()
            events = make_events(rows)
            raw_s = await raw_copy(info.database_url, info.database_owner_url, events,
                                   company.id)
            before = rss_mib()
            http_s = await through_http(
                f"http://127.0.0.1:{port}/api/v1/web-events", token, ndjson_bodies(events),
                "application/x-ndjson", rows,
            )
            after = rss_mib()
            otlp_s = await through_http(
                f"http://127.0.0.1:{port}/api/v1/otlp/v1/logs", token, otlp_bodies(events),
                "application/x-protobuf", rows,
            )
        finally:
            await runner.cleanup()
    finally:
        stack.stop()
    raw_rate, http_rate, otlp_rate = rows / raw_s, rows / http_s, rows / otlp_s
    print(f"raw COPY:        {rows} rows in {raw_s:.2f} s = {raw_rate:,.0f} rows/s")
    print(f"POST web-events: {rows} rows in {http_s:.2f} s = {http_rate:,.0f} rows/s "
          f"(gzip NDJSON, {BATCH_LINES} lines/batch, concurrency {CONCURRENCY})")
    print(f"POST otlp/v1/logs: {rows} rows in {otlp_s:.2f} s = {otlp_rate:,.0f} rows/s "
          f"(gzip protobuf, {BATCH_LINES} records/request, concurrency {CONCURRENCY})")
    print(f"peak RSS of the process (bench + service): {before:.0f} MiB before the HTTP run, "
          f"{after:.0f} MiB after")
    return http_rate / raw_rate, otlp_rate / raw_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="100,000 rows instead of 1,000,000")
    parser.add_argument("--rows", type=int, default=None)
    args = parser.parse_args()
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    data_dir = Path(tempfile.mkdtemp(prefix="tallenne-bench-"))
    try:
        ndjson_ratio, otlp_ratio = asyncio.run(run(rows, data_dir))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    results = [(ndjson_ratio, GOAL, "NDJSON"), (otlp_ratio, OTLP_GOAL, "OTLP protobuf")]
    for ratio, goal, label in results:
        verdict = "PASS" if ratio >= goal else "FAIL"
        print(f"web_events {label}: ratio {ratio:.2f} (goal >= {goal}) {verdict}")
    ratio, goal, _ = min(results, key=lambda r: r[0] / r[1])
    verdict = "PASS" if all(r >= g for r, g, _ in results) else "FAIL"
    print(f"web_events: ratio {ratio:.2f} (goal >= {goal}) {verdict}")
    sys.exit(0 if verdict == "PASS" else 1)


if __name__ == "__main__":
    main()
