"""Export throughput through the product vs raw S3 GETs of the same stored objects, same run.

    .venv/bin/python -m bench.export [--quick]

The product side is a whole `zip` export as a user sees it: POST /api/v1/exports, the job
planned and run in the service's background worker, then the download streamed (each call's
audio re-read from S3, decrypted, verified against its SHA-256, zipped, manifest and sums).
The raw side GETs every stored object of those calls one after the other, as the export does.
Both sides read with the same client (urllib3 in a worker thread, as the minio SDK reads),
in chunks of the same size, so that the client's own cost is the same on both. Rounds
alternate so both see the same machine. The service's resident memory is sampled every
10 ms during the downloads, beside them. Last line:
`export: ratio X.XX (goal >= 0.6) PASS|FAIL`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg
import urllib3

from bench.ingest import write_wav
from bench.stack import BenchStack, bench_stack
from storage import recordings
from storage.objects import ObjectStore
from storage.sealed_audio import READ_CHUNK

COMPANY = "oulun-sahkonmyynti"
GOAL = 0.6
REASON = "benchmark"


async def store_calls(stack: BenchStack, count: int, size: int) -> list[str]:
    """Upload `count` WAVs of `size` bytes through the product; their object keys."""
    token = await stack.token("ingest", [COMPANY])
    async with aiohttp.ClientSession() as session:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(count):
                path = Path(tmp) / f"call-{i}.wav"
                await asyncio.to_thread(write_wav, path, size)
                form = aiohttp.FormData()
                form.add_field("metadata", json.dumps({
                    "company": COMPANY, "external_id": f"bench-export-{i}",
                    "direction": "inbound", "started_at": "2026-03-02T10:00:00+02:00",
                    "ended_at": "2026-03-02T11:00:00+02:00", "purpose": "quality",
                    "caller": "0401234567"}), content_type="application/json")
                with path.open("rb") as audio:
                    form.add_field("audio", audio, filename="call.wav",
                                   content_type="audio/wav")
                    async with session.post(f"{stack.base_url}/api/v1/recordings", data=form,
                                            headers={"Authorization": f"Bearer {token}"}) as r:
                        assert r.status == 201, await r.text()
                await asyncio.to_thread(path.unlink)
    conn = await asyncpg.connect(stack.superuser_url)
    try:
        rows = await conn.fetch("SELECT object_key FROM recordings ORDER BY started_at, id")
    finally:
        await conn.close()
    return [r["object_key"] for r in rows]


async def analyses_settled(stack: BenchStack, timeout_s: float = 300.0) -> None:
    """Wait until the service has analysed the uploaded calls: its analysis worker runs after
    each 201 and would otherwise share the service's CPU (and GIL) with the export rounds
    only, not with the raw ones."""
    conn = await asyncpg.connect(stack.superuser_url)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not await recordings.count_to_analyse(conn, missing_only=True):
                return
            await asyncio.sleep(0.2)
        print(f"  (analyses still running after {timeout_s:.0f} s; measuring anyway)")
    finally:
        await conn.close()


def _drained(response: urllib3.BaseHTTPResponse) -> int:
    """Bytes read from `response` in READ_CHUNK pieces, as both sides read."""
    size = 0
    while chunk := response.read(READ_CHUNK):
        size += len(chunk)
    return size


def _raw_get(objects: ObjectStore, key: str) -> int:
    response = objects.client.get_object(objects.bucket, key)
    try:
        return _drained(response)
    finally:
        response.close()
        response.release_conn()


async def raw_round(objects: ObjectStore, keys: list[str]) -> tuple[int, float]:
    started = time.perf_counter()
    total = 0
    for key in keys:
        total += await asyncio.to_thread(_raw_get, objects, key)
    return total, time.perf_counter() - started


def _download(http: urllib3.PoolManager, url: str, headers: dict[str, str]) -> int:
    """The export's download, read as `_raw_get` reads an object."""
    response = http.request("GET", url, headers=headers, preload_content=False)
    try:
        assert response.status == 200, response.status
        return _drained(response)
    finally:
        response.release_conn()


async def sample_rss(stack: BenchStack, rss: list[int]) -> None:
    while True:
        rss.append(stack.service_rss())
        await asyncio.sleep(0.01)


async def export_round(stack: BenchStack, session: aiohttp.ClientSession,
                       http: urllib3.PoolManager, token: str,
                       rss: list[int]) -> tuple[int, float]:
    headers = {"Authorization": f"Bearer {token}"}
    started = time.perf_counter()
    async with session.post(f"{stack.base_url}/api/v1/exports", headers=headers,
                            json={"reason": REASON, "format": "zip"}) as response:
        assert response.status == 202, await response.text()
        export_id = (await response.json())["id"]
    while True:
        async with session.get(f"{stack.base_url}/api/v1/exports/{export_id}",
                               headers=headers) as response:
            state = (await response.json())["state"]
        if state == "done":
            break
        assert state in ("queued", "running"), state
        await asyncio.sleep(0.02)
    job_done = time.perf_counter()
    sampler = asyncio.create_task(sample_rss(stack, rss))
    try:
        total = await asyncio.to_thread(
            _download, http, f"{stack.base_url}/api/v1/exports/{export_id}/download", headers)
    finally:
        sampler.cancel()
    finished = time.perf_counter()
    print(f"  job {job_done - started:.2f} s, download {finished - job_done:.2f} s", flush=True)
    return total, finished - started


async def run(count: int, size: int, rounds: int) -> int:
    async with bench_stack() as stack:
        keys = await store_calls(stack, count, size)
        await analyses_settled(stack)
        token = await stack.token("quality", [COMPANY])
        objects = stack.objects()
        raw_bytes = raw_s = product_bytes = product_s = 0.0
        rss: list[int] = []
        try:
            http = urllib3.PoolManager()
            async with aiohttp.ClientSession(auto_decompress=False) as session:
                await raw_round(objects, keys)  # warm both paths
                await export_round(stack, session, http, token, [])
                baseline_rss = stack.service_rss()
                for i in range(rounds):
                    nbytes, seconds = await raw_round(objects, keys)
                    raw_bytes, raw_s = raw_bytes + nbytes, raw_s + seconds
                    nbytes, seconds = await export_round(stack, session, http, token, rss)
                    product_bytes, product_s = product_bytes + nbytes, product_s + seconds
                    print(f"round {i + 1}: raw {raw_bytes / raw_s / 1e6:7.1f} MB/s |"
                          f" export {product_bytes / product_s / 1e6:7.1f} MB/s", flush=True)
        finally:
            await objects.close()
    raw_rate = raw_bytes / raw_s / 1e6
    product_rate = product_bytes / product_s / 1e6
    ratio = product_rate / raw_rate
    growth = (max(rss) - baseline_rss) / (1 << 20) if rss else 0.0
    print(f"calls: {count} x {size / 1e6:.1f} MB; {rounds} rounds; raw S3 {raw_rate:.1f} MB/s,"
          f" export (job + download) {product_rate:.1f} MB/s; service RSS growth during"
          f" downloads {growth:.1f} MiB")
    verdict = "PASS" if ratio >= GOAL else "FAIL"
    print(f"export: ratio {ratio:.2f} (goal >= {GOAL}) {verdict}", flush=True)
    return 0 if verdict == "PASS" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 calls of 8 MB, 2 rounds")
    args = parser.parse_args(argv)
    count, size, rounds = (8, 8 << 20, 2) if args.quick else (24, 16 << 20, 3)
    return asyncio.run(run(count, size, rounds))


if __name__ == "__main__":
    sys.exit(main())
