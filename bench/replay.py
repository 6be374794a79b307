"""Replay through the product vs a raw S3 GET of the same stored object, same run.

    .venv/bin/python -m bench.replay [--quick]

The product does strictly more per request (session/token check, scope, grouped audit,
key unwrap, AES-GCM per 64 KiB segment, SHA-256 on full reads), so the figures of merit are
its throughput and time to first byte relative to raw S3's: for the whole file and for 100
random 64 KiB ranges, raw and product reads alternating. The last line is
`replay: ratio X.XX (goal >= 0.7) PASS|FAIL`, the worse of the two throughput ratios; the
worse TTFB ratio (goal < 2×) is printed above it, and PASS needs both goals met.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import psutil

from bench.ingest import write_wav
from bench.stack import BenchStack, bench_stack
from storage.crypto import STORED_SEGMENT_SIZE
from storage.objects import ObjectStore
from storage.sealed_audio import READ_CHUNK

COMPANY = "oulun-sahkonmyynti"
GOAL = 0.7
TTFB_GOAL = 2.0
RANGE = 64 * 1024
RANGES = 100
REASON = "benchmark"


@dataclass
class Timing:
    ttfb_s: list[float]
    total_s: list[float]
    nbytes: int

    @property
    def ttfb_ms(self) -> float:
        return statistics.median(self.ttfb_s) * 1000

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / sum(self.total_s) / 1e6


async def stored_object(stack: BenchStack, size: int) -> tuple[str, str, int]:
    """Upload a WAV of `size` bytes through the product: (recording id, object key, size)."""
    token = await stack.token("ingest", [COMPANY])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "call.wav"
        await asyncio.to_thread(write_wav, path, size)
        form = aiohttp.FormData()
        form.add_field("metadata", json.dumps({
            "company": COMPANY, "external_id": "bench-replay", "direction": "inbound",
            "started_at": "2026-03-02T10:00:00+02:00", "ended_at": "2026-03-02T11:00:00+02:00",
            "purpose": "quality"}), content_type="application/json")
        with path.open("rb") as audio:
            form.add_field("audio", audio, filename="call.wav", content_type="audio/wav")
            async with aiohttp.ClientSession() as session, session.post(
                    f"{stack.base_url}/api/v1/recordings", data=form,
                    headers={"Authorization": f"Bearer {token}"}) as response:
                assert response.status == 201, await response.text()
                body = await response.json()
    conn = await asyncpg.connect(stack.superuser_url)
    try:
        key = await conn.fetchval("SELECT object_key FROM recordings WHERE id = $1",
                                  body["id"])
    finally:
        await conn.close()
    return body["id"], key, int(body["size_bytes"])


def _raw_get(objects: ObjectStore, key: str, offset: int, length: int | None,
             timing: Timing) -> None:
    """A plain minio GET read to the end in one thread, in the same chunks as the product
    reads the stored object (a small first one, then about 1 MiB)."""
    started = time.perf_counter()
    first: float | None = None
    response = objects.client.get_object(objects.bucket, key, offset, length or 0)
    try:
        size = STORED_SEGMENT_SIZE
        while chunk := response.read(size):
            if first is None:
                first = time.perf_counter()
            size = READ_CHUNK
            timing.nbytes += len(chunk)
    finally:
        response.close()
        response.release_conn()
    done = time.perf_counter()
    timing.ttfb_s.append((first or done) - started)
    timing.total_s.append(done - started)


@dataclass
class RawReader:
    """Reads the stored object straight from S3."""

    objects: ObjectStore
    key: str

    async def read(self, offset: int, length: int | None, timing: Timing) -> None:
        await asyncio.to_thread(_raw_get, self.objects, self.key, offset, length, timing)


@dataclass
class ServiceReader:
    """Replays the recording through the product's audio endpoint."""

    session: aiohttp.ClientSession
    url: str
    token: str

    async def read(self, offset: int, length: int | None, timing: Timing) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        if length is not None:
            headers["Range"] = f"bytes={offset}-{offset + length - 1}"
        started = time.perf_counter()
        first: float | None = None
        async with self.session.get(self.url, params={"reason": REASON},
                                    headers=headers) as response:
            assert response.status in (200, 206), response.status
            async for chunk in response.content.iter_chunked(1 << 20):
                if first is None:
                    first = time.perf_counter()
                timing.nbytes += len(chunk)
        done = time.perf_counter()
        timing.ttfb_s.append((first or done) - started)
        timing.total_s.append(done - started)


def sha256_ms(nbytes: int) -> float:
    """What SHA-256 alone costs on this machine for `nbytes`: the floor of a verified read."""
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    started = time.process_time()
    for _ in range(64):
        digest.update(block)
    return (time.process_time() - started) / 64 / (1 << 20) * nbytes * 1000


async def measure(raw: RawReader, product: ServiceReader, plain_size: int, stored_size: int,
                  full_reads: int, service_cpu: Callable[[], float],
                  ) -> list[tuple[str, float, float]]:
    """Raw and product reads alternate, one by one, so both see the same machine."""
    rng = random.Random(11)
    plain_ranges = [(rng.randrange(plain_size - RANGE), RANGE) for _ in range(RANGES)]
    # The same share of the stored object at the same relative places.
    raw_ranges = [(offset * stored_size // plain_size, RANGE) for offset, _ in plain_ranges]
    whole: list[tuple[int, int | None]] = [(0, None)] * full_reads
    # Warm both paths once (connection pools, page cache) before measuring.
    await raw.read(0, None, Timing([], [], 0))
    await product.read(0, None, Timing([], [], 0))
    rows = []
    for name, raw_spans, plain_spans in (("full file", whole, whole),
                                         ("64 KiB ranges", raw_ranges, plain_ranges)):
        raw_t, product_t = Timing([], [], 0), Timing([], [], 0)
        cpu_s = 0.0
        for (raw_offset, raw_length), (offset, length) in zip(raw_spans, plain_spans,
                                                              strict=True):
            await raw.read(raw_offset, raw_length, raw_t)
            before = service_cpu()
            await product.read(offset, length, product_t)
            cpu_s += service_cpu() - before
        ratio = product_t.mb_per_s / raw_t.mb_per_s
        ttfb_ratio = product_t.ttfb_ms / raw_t.ttfb_ms
        rows.append((name, ratio, ttfb_ratio))
        print(f"{name:>14}: raw {raw_t.mb_per_s:8.1f} MB/s TTFB {raw_t.ttfb_ms:6.2f} ms |"
              f" service {product_t.mb_per_s:8.1f} MB/s TTFB {product_t.ttfb_ms:6.2f} ms |"
              f" throughput ratio {ratio:.2f}, TTFB ratio {ttfb_ratio:.2f}", flush=True)
        per_read = cpu_s / len(plain_spans) * 1000
        floor = (f"; SHA-256 alone {sha256_ms(plain_size):.1f} ms"
                 if plain_spans[0][1] is None else "")
        print(f"{'':>14}  service CPU {per_read:.2f} ms per read{floor}", flush=True)
    return rows


async def run(size: int, full_reads: int) -> int:
    async with bench_stack() as stack:
        recording_id, key, plain_size = await stored_object(stack, size)
        objects = stack.objects()
        token = await stack.token("quality", [COMPANY])
        try:
            stored_size = (await objects.stat(key)).size
            async with aiohttp.ClientSession(auto_decompress=False) as session:
                raw = RawReader(objects, key)
                product = ServiceReader(
                    session, f"{stack.base_url}/api/v1/recordings/{recording_id}/audio", token)
                service = psutil.Process(stack.service.pid)

                def service_cpu() -> float:
                    times = service.cpu_times()
                    return float(times.user + times.system)

                rows = await measure(raw, product, plain_size, stored_size, full_reads,
                                     service_cpu)
        finally:
            await objects.close()
    print(f"object: {plain_size / 1e6:.1f} MB plaintext, {stored_size / 1e6:.1f} MB stored;"
          f" {full_reads} full reads, {RANGES} ranges of {RANGE} bytes")
    worst_ttfb = max(r[2] for r in rows)
    print(f"replay TTFB: ratio {worst_ttfb:.2f} (goal < {TTFB_GOAL:.0f}x)"
          f" {'PASS' if worst_ttfb < TTFB_GOAL else 'FAIL'}")
    worst = min(r[1] for r in rows)
    verdict = "PASS" if worst >= GOAL and worst_ttfb < TTFB_GOAL else "FAIL"
    print(f"replay: ratio {worst:.2f} (goal >= {GOAL}) {verdict}", flush=True)
    return 0 if verdict == "PASS" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 32 MB file, 3 full reads")
    args = parser.parse_args(argv)
    size, reads = (32 << 20, 3) if args.quick else (256 << 20, 5)
    return asyncio.run(run(size, reads))


if __name__ == "__main__":
    sys.exit(main())
