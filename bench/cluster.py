"""The production shape against its own object store, same run: ingest and ranged replay
through nginx and two service replicas on a distributed SeaweedFS (tests/cluster.py: a
master, three volume servers with replication 001, a filer, an S3 gateway), against the same
bytes written and read by a plain S3 client straight at the cluster's S3 gateway.

    .venv/bin/python -m bench.cluster [--quick]

The product does strictly more per request (multipart parse, hashing, AES-GCM, PostgreSQL
transactions, audit, a proxy hop), so the figures of merit are its throughput relative to
raw S3's: ingest (MB/s, goal >= 0.8x) and random 64 KiB ranged replay (MB/s, goal >= 0.6x).
Raw and product take turns in slices so that load from elsewhere falls on both. The last line
is `cluster: ratio X (goal >= Y) PASS|FAIL` for the figure furthest below its goal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg

from bench.ingest import write_wav
from storage import accounts
from storage.objects import ObjectStore
from tests.cluster import Cluster, missing_tools

COMPANY = "oulun-sahkonmyynti"
INGEST_GOAL = 0.8
REPLAY_GOAL = 0.6
RANGE = 64 * 1024
SLICES = 3
REASON = "benchmark"


@dataclass(frozen=True)
class Plan:
    file_size: int
    files: int  # per side
    concurrency: int
    recording_size: int
    ranges: int  # per side


# --quick still moves enough that one slow request does not decide the figure: each slice
# holds three rounds of `concurrency` uploads and 90 ranges.
QUICK = Plan(file_size=4 * 2**20, files=27, concurrency=3, recording_size=16 * 2**20,
             ranges=270)
FULL = Plan(file_size=32 * 2**20, files=24, concurrency=4, recording_size=64 * 2**20,
            ranges=600)


@dataclass
class Tally:
    seconds: float = 0.0
    nbytes: int = 0

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / self.seconds / 1e6 if self.seconds else 0.0


async def make_token(cluster: Cluster, role: str) -> str:
    conn = await asyncpg.connect(cluster.superuser_url)
    try:
        found = await accounts.companies_by_code(conn, [COMPANY])
        _, secret = await accounts.create_token(
            conn, f"bench-{role}-{uuid.uuid4().hex[:6]}", role, [c.id for c in found], False)
    finally:
        await conn.close()
    return secret


def raw_store(cluster: Cluster, threads: int) -> ObjectStore:
    return ObjectStore(cluster.s3_endpoint, cluster.secret["s3_access_key"],
                       cluster.secret["s3_secret_key"], cluster.bucket, region="eu-north-1",
                       threads=threads, timeout_s=300)


async def raw_puts(store: ObjectStore, files: list[Path], concurrency: int, tally: Tally) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def put(path: Path) -> None:
        async with gate:
            with path.open("rb") as f:
                await store.put_stream(f"raw/{uuid.uuid4()}", f, os.fstat(f.fileno()).st_size)

    started = time.perf_counter()
    await asyncio.gather(*(put(p) for p in files))
    tally.seconds += time.perf_counter() - started
    tally.nbytes += sum(p.stat().st_size for p in files)


def _metadata(i: int) -> dict[str, str]:
    ended = datetime.now(UTC) - timedelta(minutes=10 + i)
    return {"company": COMPANY, "external_id": f"bench-{uuid.uuid4()}",
            "started_at": (ended - timedelta(minutes=4)).isoformat(),
            "ended_at": ended.isoformat(), "direction": "inbound", "agent": "bench",
            "queue": "bench", "purpose": "quality"}


async def product_upload(session: aiohttp.ClientSession, url: str, token: str, i: int,
                         path: Path) -> dict[str, object]:
    with path.open("rb") as f:
        form = aiohttp.FormData()
        form.add_field("metadata", json.dumps(_metadata(i)), content_type="application/json")
        form.add_field("audio", f, filename="call.wav", content_type="audio/wav")
        async with session.post(f"{url}/api/v1/recordings", data=form,
                                headers={"Authorization": f"Bearer {token}"}) as response:
            if response.status != 201:
                raise RuntimeError(f"upload answered {response.status}: "
                                   f"{await response.text()}")
            body: dict[str, object] = await response.json()
            return body


async def product_uploads(session: aiohttp.ClientSession, url: str, token: str,
                          files: list[Path], concurrency: int, tally: Tally) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def post(i: int, path: Path) -> None:
        async with gate:
            await product_upload(session, url, token, i, path)

    started = time.perf_counter()
    await asyncio.gather(*(post(i, p) for i, p in enumerate(files)))
    tally.seconds += time.perf_counter() - started
    tally.nbytes += sum(p.stat().st_size for p in files)


def _raw_range(store: ObjectStore, key: str, offset: int) -> int:
    response = store.client.get_object(store.bucket, key, offset, RANGE)
    try:
        return len(response.read())
    finally:
        response.close()
        response.release_conn()


async def raw_ranges(store: ObjectStore, key: str, offsets: list[int], concurrency: int,
                     tally: Tally) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def read(offset: int) -> int:
        async with gate:
            return await asyncio.to_thread(_raw_range, store, key, offset)

    started = time.perf_counter()
    got = await asyncio.gather(*(read(o) for o in offsets))
    tally.seconds += time.perf_counter() - started
    tally.nbytes += sum(got)


async def product_ranges(session: aiohttp.ClientSession, url: str, token: str, offsets: list[int],
                         concurrency: int, tally: Tally) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def read(offset: int) -> int:
        headers = {"Authorization": f"Bearer {token}",
                   "Range": f"bytes={offset}-{offset + RANGE - 1}"}
        async with gate, session.get(url, params={"reason": REASON}, headers=headers) as resp:
            if resp.status != 206:
                raise RuntimeError(f"range answered {resp.status}: {await resp.text()}")
            return len(await resp.read())

    started = time.perf_counter()
    got = await asyncio.gather(*(read(o) for o in offsets))
    tally.seconds += time.perf_counter() - started
    tally.nbytes += sum(got)


async def measure(cluster: Cluster, plan: Plan, work: Path) -> tuple[Tally, Tally, Tally, Tally]:
    ingest_token = await make_token(cluster, "ingest")
    quality_token = await make_token(cluster, "quality")
    files = []
    for i in range(2 * plan.files):
        path = work / f"call-{i}.wav"
        await asyncio.to_thread(write_wav, path, plan.file_size)
        files.append(path)
    raw_files, product_files = files[:plan.files], files[plan.files:]
    store = raw_store(cluster, threads=max(16, plan.concurrency))
    raw_in, product_in, raw_out, product_out = Tally(), Tally(), Tally(), Tally()
    timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
    connector = aiohttp.TCPConnector(limit=plan.concurrency)
    try:
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            # A warm-up upload each way: connections, buckets and volumes exist afterwards.
            await raw_puts(store, raw_files[:1], 1, Tally())
            await product_upload(session, cluster.base_url, ingest_token, 0, product_files[0])
            step = -(-plan.files // SLICES)
            for start in range(0, plan.files, step):
                await raw_puts(store, raw_files[start:start + step], plan.concurrency, raw_in)
                await product_uploads(session, cluster.base_url, ingest_token,
                                      product_files[start:start + step], plan.concurrency,
                                      product_in)

            recording = work / "long-call.wav"
            await asyncio.to_thread(write_wav, recording, plan.recording_size)
            body = await product_upload(session, cluster.base_url, ingest_token, 99, recording)
            conn = await asyncpg.connect(cluster.superuser_url)
            try:
                key = await conn.fetchval("SELECT object_key FROM recordings WHERE id = $1",
                                          uuid.UUID(str(body["id"])))
                stored_size = (await store.stat(key)).size
            finally:
                await conn.close()
            plain_size = int(str(body["size_bytes"]))
            url = f"{cluster.base_url}/api/v1/recordings/{body['id']}/audio"
            rng = random.Random(18)
            step = -(-plan.ranges // SLICES)
            for _ in range(SLICES):
                raw_offsets = [rng.randrange(stored_size - RANGE) for _ in range(step)]
                plain_offsets = [rng.randrange(plain_size - RANGE) for _ in range(step)]
                await raw_ranges(store, key, raw_offsets, plan.concurrency, raw_out)
                await product_ranges(session, url, quality_token, plain_offsets,
                                     plan.concurrency, product_out)
    finally:
        await store.close()
    return raw_in, product_in, raw_out, product_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.cluster", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; under a minute")
    args = parser.parse_args(argv)
    why = missing_tools()
    if why:
        print(f"cluster: cannot run: {why}", file=sys.stderr)
        return 2
    plan = QUICK if args.quick else FULL
    work = Path(tempfile.mkdtemp(prefix="tallenne-bench-cluster-"))
    cluster = Cluster(work / "cluster", replicas=2)
    started = time.perf_counter()
    try:
        print("cluster: starting SeaweedFS, PostgreSQL, 2 replicas and nginx…", file=sys.stderr,
              flush=True)
        cluster.start()
        print(f"cluster: up in {time.perf_counter() - started:.1f} s; measuring…",
              file=sys.stderr, flush=True)
        raw_in, product_in, raw_out, product_out = asyncio.run(measure(cluster, plan, work))
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    assert cluster.weed is not None
    ingest_ratio = product_in.mb_per_s / raw_in.mb_per_s
    replay_ratio = product_out.mb_per_s / raw_out.mb_per_s
    print(f"cluster: {cluster.weed.volumes} volume servers, replication "
          f"{cluster.weed.replication}: replication factor {cluster.weed.copies} "
          f"(copies of every object); {len(cluster.services)} replicas behind nginx")
    print(f"ingest ({plan.files} x {plan.file_size / 2**20:.0f} MiB, {plan.concurrency} at "
          f"once): product {product_in.mb_per_s:.1f} MB/s, raw S3 {raw_in.mb_per_s:.1f} MB/s, "
          f"ratio {ingest_ratio:.2f} (goal >= {INGEST_GOAL})")
    print(f"ranged replay ({plan.ranges} x 64 KiB, {plan.concurrency} at once): product "
          f"{product_out.mb_per_s:.1f} MB/s, raw S3 {raw_out.mb_per_s:.1f} MB/s, "
          f"ratio {replay_ratio:.2f} (goal >= {REPLAY_GOAL})")
    ratio, goal = min((ingest_ratio, INGEST_GOAL), (replay_ratio, REPLAY_GOAL),
                      key=lambda pair: pair[0] / pair[1])
    verdict = "PASS" if ingest_ratio >= INGEST_GOAL and replay_ratio >= REPLAY_GOAL else "FAIL"
    print(f"cluster: ratio {ratio:.2f} (goal >= {goal}) {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
