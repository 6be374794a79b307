"""Recording ingest through the product vs a raw S3 PUT of the same bytes, same run, same S3.

    .venv/bin/python -m bench.ingest [--quick]

The product does strictly more per file (multipart parse, spool, SHA-256, probe, AES-GCM,
two PostgreSQL transactions, an audit event), so the figure of merit is the ratio of its
throughput to raw S3's: goals 0.9x at 2 MB files (objects/s) and 0.8x at 50 MB (MB/s), with
service RSS growth under 100 MiB. The last line is `ingest: ratio X.XX (goal >= Y) PASS|FAIL`
for the round furthest from its goal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import struct
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import psutil

from bench.stack import BenchStack, bench_stack

COMPANY = "oulun-sahkonmyynti"
RSS_GROWTH_LIMIT = 100 * 2**20
SLICES = 4  # raw and product take turns this many times per round (as far as concurrency allows)


@dataclass(frozen=True)
class Round:
    size: int
    count: int
    concurrency: int
    goal: float


@dataclass(frozen=True)
class Result:
    seconds: float
    total_bytes: int
    count: int
    machine_cpu: float = 0.0  # mean utilisation of all cores during the run, percent

    @property
    def objects_per_s(self) -> float:
        return self.count / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.total_bytes / self.seconds / 1e6


def write_wav(path: Path, size: int, sample_rate: int = 8000) -> None:
    """A mono 16-bit PCM WAV of `size` bytes; noise, so no two files share content."""
    data_len = (size - 44) & ~1
    with path.open("wb") as f:
        f.write(b"RIFF" + struct.pack("<I", 36 + data_len) + b"WAVE")
        f.write(b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16))
        f.write(b"data" + struct.pack("<I", data_len))
        left = data_len
        while left:
            piece = os.urandom(min(left, 1 << 20))
            f.write(piece)
            left -= len(piece)


async def raw_puts(stack: BenchStack, files: list[Path], concurrency: int) -> Result:
    store = stack.objects(threads=max(16, concurrency))
    gate = asyncio.Semaphore(concurrency)

    async def put(path: Path) -> None:
        async with gate:
            with path.open("rb") as f:
                await store.put_stream(f"raw/{uuid.uuid4()}", f, os.fstat(f.fileno()).st_size)

    psutil.cpu_percent(None)
    started = time.perf_counter()
    await asyncio.gather(*(put(p) for p in files))
    elapsed = time.perf_counter() - started
    cpu = psutil.cpu_percent(None)
    await store.close()
    return Result(elapsed, sum(p.stat().st_size for p in files), len(files), cpu)


async def product_uploads(
    stack: BenchStack, token: str, files: list[Path], concurrency: int
) -> Result:
    gate = asyncio.Semaphore(concurrency)
    start_at = datetime(2026, 1, 1, tzinfo=UTC)

    async def post(session: aiohttp.ClientSession, i: int, path: Path) -> None:
        meta = {
            "company": COMPANY, "external_id": f"bench-{uuid.uuid4()}",
            "started_at": (start_at + timedelta(minutes=i)).isoformat(),
            "ended_at": (start_at + timedelta(minutes=i + 4)).isoformat(),
            "direction": "inbound", "agent": "bench", "queue": "bench", "purpose": "quality",
        }
        async with gate:
            with path.open("rb") as f:
                form = aiohttp.FormData()
                form.add_field("metadata", json.dumps(meta), content_type="application/json")
                form.add_field("audio", f, filename="call.wav", content_type="audio/wav")
                async with session.post(f"{stack.base_url}/api/v1/recordings", data=form,
                                        headers={"Authorization": f"Bearer {token}"}) as resp:
                    if resp.status != 201:
                        raise RuntimeError(f"upload answered {resp.status}: {await resp.text()}")

    timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        psutil.cpu_percent(None)
        started = time.perf_counter()
        await asyncio.gather(*(post(session, i, p) for i, p in enumerate(files)))
        elapsed = time.perf_counter() - started
        cpu = psutil.cpu_percent(None)
    return Result(elapsed, sum(p.stat().st_size for p in files), len(files), cpu)


def combined(results: list[Result]) -> Result:
    seconds = sum(r.seconds for r in results)
    return Result(
        seconds=seconds,
        total_bytes=sum(r.total_bytes for r in results),
        count=sum(r.count for r in results),
        machine_cpu=sum(r.machine_cpu * r.seconds for r in results) / seconds,
    )


async def run(rounds: list[Round]) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="tallenne-bench-audio-"))
    ratios: list[tuple[float, float]] = []
    try:
        async with bench_stack() as stack:
            token = await stack.token("ingest", [COMPANY])
            baseline_rss = stack.service_rss()
            peak_rss = baseline_rss
            sampling = True

            async def sample() -> None:
                nonlocal peak_rss
                while sampling:
                    peak_rss = max(peak_rss, stack.service_rss())
                    await asyncio.sleep(0.05)

            sampler = asyncio.create_task(sample())
            for spec in rounds:
                files = []
                for i in range(spec.count):
                    path = workdir / f"{spec.size}-{i}.wav"
                    await asyncio.to_thread(write_wav, path, spec.size)
                    files.append(path)
                # Warm both paths (connections, first key creation) outside the timing.
                await raw_puts(stack, files[:1], 1)
                await product_uploads(stack, token, [files[0]], 1)
                # Raw and product alternate slice by slice, so both meet the store in the
                # same state (SeaweedFS's speed drifts as its volumes fill).
                raws, products = [], []
                step = max(spec.concurrency, spec.count // SLICES)
                for start in range(0, spec.count, step):
                    part = files[start : start + step]
                    raws.append(await raw_puts(stack, part, spec.concurrency))
                    products.append(await product_uploads(stack, token, part,
                                                          spec.concurrency))
                raw, product = combined(raws), combined(products)
                ratio = product.mb_per_s / raw.mb_per_s
                ratios.append((ratio, spec.goal))
                label = f"{spec.count} x {spec.size / 1e6:.0f} MB, concurrency {spec.concurrency}"
                print(f"{label}: raw S3 PUT {raw.objects_per_s:.1f} obj/s {raw.mb_per_s:.1f} MB/s"
                      f" (CPU {raw.machine_cpu:.0f}% of {os.cpu_count()} cores);"
                      f" product {product.objects_per_s:.1f} obj/s {product.mb_per_s:.1f} MB/s"
                      f" (CPU {product.machine_cpu:.0f}%); ratio {ratio:.2f}", flush=True)
                for path in files:
                    path.unlink()
            sampling = False
            await sampler
            print(f"service RSS: baseline {baseline_rss / 2**20:.0f} MiB,"
                  f" peak {peak_rss / 2**20:.0f} MiB,"
                  f" growth {(peak_rss - baseline_rss) / 2**20:.0f} MiB", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    worst, goal = min(ratios, key=lambda pair: pair[0] / pair[1])
    growth_ok = peak_rss - baseline_rss < RSS_GROWTH_LIMIT
    if not growth_ok:
        print("service RSS grew by more than 100 MiB", flush=True)
    verdict = "PASS" if worst >= goal and growth_ok else "FAIL"
    print(f"ingest: ratio {worst:.2f} (goal >= {goal}) {verdict}", flush=True)
    return 0 if verdict == "PASS" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="40 x 2 MB at concurrency 16 and 4 x 50 MB at concurrency 4")
    args = parser.parse_args(argv)
    if args.quick:
        rounds = [Round(2_000_000, 40, 16, 0.9), Round(50_000_000, 4, 4, 0.8)]
    else:
        rounds = [Round(2_000_000, 200, 16, 0.9), Round(50_000_000, 16, 16, 0.8)]
    return asyncio.run(run(rounds))


if __name__ == "__main__":
    sys.exit(main())
