"""Audit append throughput: the hash chain against a plain INSERT, same stack, same run.

    .venv/bin/python -m bench.audit_append [--quick]

16 concurrent writers append one event at a time through `AuditLog.append` (the way each
request does) while the head is signed into a checkpoint bucket every half second (the
service does it every five minutes), then 16 writers, one connection each, INSERT the same
rows into a table with the same columns and indexes but no chain, one event per transaction.
The last line is `audit_append: ratio X.XX (goal >= 0.5) PASS|FAIL`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import asyncpg

from devstack.embedded import RUNTIME_GROUP, EmbeddedStack, StackInfo
from storage.audit import COLUMNS, AuditEntry, AuditLog
from storage.checkpoints import CheckpointBucket, open_bucket, write_checkpoint
from storage.db import create_pool
from storage.migrate import migrate_url
from storage.objects import ObjectStore
from storage.signed_note import NoteSigner

WRITERS = 16
GOAL = 0.5


def _entry(writer: int, n: int) -> AuditEntry:
    return AuditEntry(
        actor=f"bench-{writer}", actor_kind="token", role="quality", action="recording.replay",
        target_type="recording", target_id=f"{writer:04d}-{n:08d}", company="tenergia",
        reason="quality review", request_id=f"req-{writer}-{n}", client_ip="10.0.0.0/24",
        detail={"range": [0, 65535]},
    )


async def chained_rate(
    pool: asyncpg.Pool, seconds: float, bucket: CheckpointBucket
) -> tuple[int, float, int]:
    log = AuditLog(pool)
    await log.start()
    deadline = time.perf_counter() + seconds
    counts = [0] * WRITERS
    signer = NoteSigner("bench.local/audit", os.urandom(32))
    signed = 0

    async def sign_every_half_second() -> None:
        nonlocal signed
        while time.perf_counter() < deadline:
            await asyncio.sleep(0.5)
            await write_checkpoint(pool, bucket, signer)
            signed += 1

    async def writer(index: int) -> None:
        for n in itertools.count():
            if time.perf_counter() >= deadline:
                return
            await log.append(_entry(index, n))
            counts[index] += 1

    started = time.perf_counter()
    await asyncio.gather(sign_every_half_second(), *(writer(i) for i in range(WRITERS)))
    elapsed = time.perf_counter() - started
    await log.stop()
    return sum(counts), elapsed, signed


async def plain_rate(dsn: str, owner_dsn: str, seconds: float) -> tuple[int, float]:
    # The owner makes the table (the service's role owns nothing); the service's role writes.
    setup = await asyncpg.connect(owner_dsn)
    await setup.execute("DROP TABLE IF EXISTS bench_plain_events")
    # Same columns, defaults and indexes; no trigger, no chain.
    await setup.execute("CREATE TABLE bench_plain_events (LIKE audit_events INCLUDING ALL)")
    await setup.execute(f"GRANT INSERT ON bench_plain_events TO {RUNTIME_GROUP}")
    await setup.close()
    connections = [await create_pool(dsn, max_size=1) for _ in range(WRITERS)]
    placeholders = ", ".join(f"${i}" for i in range(1, len(COLUMNS) + 1))
    sql = f"INSERT INTO bench_plain_events ({', '.join(COLUMNS)}) VALUES ({placeholders})"
    seqs = itertools.count(1)
    deadline = time.perf_counter() + seconds
    counts = [0] * WRITERS

    async def writer(index: int) -> None:
        async with connections[index].acquire() as conn:
            for n in itertools.count():
                if time.perf_counter() >= deadline:
                    return
                values = dict(vars(_entry(index, n)))
                values.update(seq=next(seqs), prev_hash=os.urandom(32), hash=os.urandom(32))
                async with conn.transaction():
                    await conn.execute(sql, *(values[c] for c in COLUMNS))
                counts[index] += 1

    started = time.perf_counter()
    await asyncio.gather(*(writer(i) for i in range(WRITERS)))
    elapsed = time.perf_counter() - started
    for pool in connections:
        await pool.close()
    return sum(counts), elapsed


async def run(info: StackInfo, seconds: float) -> float:
    dsn = info.database_url
    await migrate_url(info.database_owner_url)
    pool = await create_pool(dsn, max_size=WRITERS)
    store = ObjectStore(info.s3_endpoint, info.s3_access_key, info.s3_secret_key,
                        f"bench-audit-{uuid.uuid4().hex[:8]}", region="eu-north-1", threads=2)
    bucket = CheckpointBucket(writer=store, reader=store, keep_for=timedelta(minutes=1))
    try:
        await open_bucket(bucket)
        chained, chained_s, signed = await chained_rate(pool, seconds, bucket)
    finally:
        await pool.close()
        await store.close()
    plain, plain_s = await plain_rate(dsn, info.database_owner_url, seconds)
    chained_per_s = chained / chained_s
    plain_per_s = plain / plain_s
    print(f"chained (AuditLog.append, {WRITERS} writers): {chained} events in {chained_s:.1f} s"
          f" = {chained_per_s:,.0f}/s, {signed} signed checkpoints written meanwhile")
    print(f"plain INSERT ({WRITERS} writers, one row per transaction): {plain} rows in"
          f" {plain_s:.1f} s = {plain_per_s:,.0f}/s")
    return chained_per_s / plain_per_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.audit_append", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few seconds per side")
    args = parser.parse_args(argv)
    seconds = 4.0 if args.quick else 20.0
    with tempfile.TemporaryDirectory(prefix="tallenne-bench-") as tmp:
        stack = EmbeddedStack(Path(tmp))
        info = stack.start()
        try:
            ratio = asyncio.run(run(info, seconds))
        finally:
            stack.stop()
    verdict = "PASS" if ratio >= GOAL else "FAIL"
    print(f"audit_append: ratio {ratio:.2f} (goal >= {GOAL}) {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
