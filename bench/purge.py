"""Purge benchmark: raw S3 `remove_objects` + SQL `DELETE` of N expired recordings against
tallenne's purge of the same kind of data, a web-event month dropped as a partition, and the
plan of the expiry query over a table of live recordings.

    .venv/bin/python -m bench.purge [--quick]

The last line is `purge: ratio X.XX (goal >= 0.8) PASS|FAIL`: purged objects per second of
tallenne's purge over the raw path's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from datetime import UTC, datetime

import asyncpg

from bench.stack import BenchStack, bench_stack
from service.resources import open_resources
from service.settings import Settings
from storage import purge
from storage.db import Scope, apply_scope

GOAL = 0.8
OBJECT_SIZE = 8 * 1024
AS_OF = datetime(2030, 1, 1, tzinfo=UTC)


async def expired_set(stack: BenchStack, n: int, tag: str) -> list[tuple[uuid.UUID, str]]:
    """`n` stored recordings of 2020 (expired by AS_OF): rows by one INSERT, objects by
    parallel PUTs."""
    conn = await asyncpg.connect(stack.superuser_url)
    try:
        rows = await conn.fetch(
            "INSERT INTO recordings (id, company_id, external_id, state, started_at, ended_at,"
            " direction, purpose, format, codec, duration_s, sample_rate, channels, size_bytes,"
            " sha256, object_key, key_owner, wrapped_key)"
            " SELECT g.id, c.id, $2 || g.id::text, 'stored', '2020-01-01', '2020-01-01',"
            " 'inbound', 'quality', 'wav', 'pcm_s16le', 1, 8000, 1, $3, repeat('0', 64),"
            " 'recordings/2020/01/01/' || g.id::text, 'company', '\\x00'::bytea"
            " FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, $1)) g,"
            " companies c WHERE c.code = 'oulun-sahkonmyynti' RETURNING id, object_key",
            n, tag, OBJECT_SIZE,
        )
    finally:
        await conn.close()
    store = stack.objects(threads=32)
    payload = os.urandom(OBJECT_SIZE)
    try:
        await asyncio.gather(*(store.put_bytes(r["object_key"], payload) for r in rows))
    finally:
        await store.close()
    return [(r["id"], r["object_key"]) for r in rows]


async def raw_purge(stack: BenchStack, items: list[tuple[uuid.UUID, str]], batch: int) -> float:
    store = stack.objects(threads=16)
    conn = await asyncpg.connect(stack.superuser_url)
    started = time.perf_counter()
    try:
        for start in range(0, len(items), batch):
            chunk = items[start:start + batch]
            left = await store.delete([key for _, key in chunk])
            assert not left
            await conn.execute("DELETE FROM recordings WHERE id = ANY($1::uuid[])",
                               [rid for rid, _ in chunk])
    finally:
        await conn.close()
        await store.close()
    return time.perf_counter() - started


def product_settings(stack: BenchStack, batch: int) -> Settings:
    env = {k.removeprefix("TALLENNE_").lower(): v for k, v in stack.env.items()
           if k.startswith("TALLENNE_")}
    env.update({"purge_enabled": "false", "purge_batch_size": str(batch)})
    return Settings(**env)  # type: ignore[arg-type]


async def product_purge(stack: BenchStack, batch: int) -> tuple[float, int]:
    """The purge `tallenne purge` runs (same resources, same code), timed from its start."""
    from service.retention.scheduler import one_off_purge_context, run_now

    async with open_resources(product_settings(stack, batch)) as resources, \
            one_off_purge_context(resources) as context:
        started = time.perf_counter()
        report = await run_now(context, AS_OF, actor="bench")
        elapsed = time.perf_counter() - started
    assert report.state == "finished", report.error
    return elapsed, sum(b.items for b in report.purged if b.kind == "recording")


async def partition_drop(stack: BenchStack, rows: int) -> None:
    conn = await asyncpg.connect(stack.superuser_url)
    try:
        # Made as the service makes a month's partition: by the owner's function, so the
        # service's role owns nothing (it refuses to start otherwise).
        await conn.execute("SELECT tallenne_create_web_events_partition("
                           "'web_events_2020_01', '2020-01-01', '2020-02-01')")
        started = time.perf_counter()
        await conn.execute(
            "INSERT INTO web_events (ts, company_id, site, event, url, session_id)"
            " SELECT '2020-01-01'::timestamptz + (g * 2678399.0 / $1) * interval '1 second',"
            " c.id, 'www', 'view',"
            " '/', 's' FROM generate_series(1, $1) g, companies c"
            " WHERE c.code = 'oulun-sahkonmyynti'", rows)
        print(f"web events: {rows:,} rows of 2020-01 written in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
    finally:
        await conn.close()
    async with open_resources(product_settings(stack, 200)) as resources:
        job = purge.PurgeJob(resources.pool, resources.objects, uuid.uuid4(), AS_OF)
        async with resources.pool.acquire() as c:
            await purge.start_run(c, job.run_id, as_of=AS_OF, started_by="bench",
                                  dry_run=False)
            started = time.perf_counter()
            await job.web_event_partitions()
            elapsed = time.perf_counter() - started
            await purge.finish_run(c, job.run_id, state="finished", counts={})
    print(f"web events: partition drop of {job.tally.total:,} expired rows in {elapsed:.2f} s"
          f" ({', '.join(job.dropped)})", flush=True)


async def expiry_plan(stack: BenchStack, live: int) -> None:
    conn = await asyncpg.connect(stack.superuser_url)
    try:
        await conn.execute(
            "INSERT INTO recordings (id, company_id, external_id, state, started_at, ended_at,"
            " direction, purpose, format, codec, duration_s, sample_rate, channels, size_bytes,"
            " sha256, object_key, key_owner, wrapped_key)"
            " SELECT g.id, c.id, 'live-' || g.id::text, 'stored', now(), now(), 'inbound',"
            " 'transaction_verification', 'wav', 'pcm_s16le', 1, 8000, 1, 1, repeat('0', 64),"
            " 'recordings/live/' || g.id::text, 'company', '\\x00'::bytea"
            " FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, $1)) g,"
            " companies c WHERE c.code = 'oulun-sahkonmyynti'", live)
        await conn.execute("ANALYZE recordings")
        async with conn.transaction():
            await apply_scope(conn, Scope.everything())
            plan = await conn.fetch(
                "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) SELECT r.id, r.object_key"
                " FROM recordings r JOIN companies co ON co.id = r.company_id"
                " WHERE r.retain_until <= $1 AND r.state <> 'pending' AND r.legal_holds = '{}'"
                " ORDER BY r.retain_until, r.id LIMIT 200 FOR UPDATE OF r SKIP LOCKED",
                datetime(2026, 1, 1, tzinfo=UTC))
    finally:
        await conn.close()
    lines = [r[0] for r in plan]
    print(f"expiry query over {live:,} live recordings:")
    for line in lines:
        print("   " + line)
    seq = any("Seq Scan on recordings" in line for line in lines)
    print(f"expiry query: {'SEQUENTIAL SCAN over recordings' if seq else 'no seq scan'}",
          flush=True)


async def run(n: int, web_rows: int, live: int, batch: int, rounds: int) -> int:
    async with bench_stack(TALLENNE_PURGE_ENABLED="false") as stack:
        raw_s = product_s = float("inf")
        # Alternating rounds, best of each: one slow S3 moment should not decide the ratio.
        for i in range(rounds):
            raw_items = await expired_set(stack, n, f"raw{i}-")
            raw_s = min(raw_s, await raw_purge(stack, raw_items, batch))
            await expired_set(stack, n, f"product{i}-")
            elapsed, purged = await product_purge(stack, batch)
            product_s = min(product_s, elapsed)
            assert purged == n, f"purged {purged} of {n}"
            left = await stack.objects().list_keys("recordings/")
            assert not left, f"{len(left)} objects left"
        raw_rate, product_rate = n / raw_s, n / product_s
        print(f"raw remove_objects + DELETE: {n} recordings in {raw_s:.2f} s"
              f" ({raw_rate:,.0f}/s, best of {rounds})", flush=True)
        print(f"tallenne purge: {n} recordings in {product_s:.2f} s ({product_rate:,.0f}/s,"
              f" batch {batch}, {purge.WORKERS} batches in flight, tombstones + purge log +"
              f" audit + checkpoint, best of {rounds})", flush=True)
        await partition_drop(stack, web_rows)
        await expiry_plan(stack, live)
    ratio = product_rate / raw_rate
    verdict = "PASS" if ratio >= GOAL else "FAIL"
    print(f"purge: ratio {ratio:.2f} (goal >= {GOAL}) {verdict}", flush=True)
    return 0 if verdict == "PASS" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="3,000 recordings, 200k web events, 100k live recordings")
    args = parser.parse_args(argv)
    if args.quick:
        return asyncio.run(run(3000, 200_000, 100_000, 200, rounds=2))
    return asyncio.run(run(10000, 10_000_000, 1_000_000, 200, rounds=3))


if __name__ == "__main__":
    raise SystemExit(main())
