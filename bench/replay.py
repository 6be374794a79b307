"""Replay through the product vs nginx reverse-proxying the same objects from the same S3,
with a raw S3 GET for context, all in one run.

    .venv/bin/python -m bench.replay [--quick]

Three paths read the same stored objects, one request at a time, interleaved (raw, nginx,
service, in an order that rotates): whole files (256 MB per path; with --quick 128 MB, the
same two files four times, so that the time to first byte is a median of eight reads, not
two) and 100 random 64 KiB ranges. The raw GET and nginx serve the object as stored (ciphertext,
through a URL presigned for the benchmark only); the product serves the plaintext it opens
on the way (token, scope, audit window, key unwrap, AES-GCM per segment). Per path: time to
first byte (median), MB/s and p95 request time; CPU seconds per GB of the service process
and of nginx (one worker, as the service is one process). Goals against nginx: whole-file
throughput >= 0.7x, ranged p95 <= 1.5x, TTFB < 2x; the last line is
`replay: ratio X (goal >= 0.7) PASS|FAIL` (the whole-file ratio; PASS needs all three).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import aiohttp
import asyncpg
import psutil

from bench.ingest import write_wav
from bench.stack import BenchStack, bench_stack, nginx_proxy

COMPANY = "oulun-sahkonmyynti"
GOAL = 0.7
P95_GOAL = 1.5
TTFB_GOAL = 2.0
RANGE = 64 * 1024
RANGES = 100
REASON = "benchmark"
PATHS = ("raw", "nginx", "service")


@dataclass
class Stats:
    ttfb_s: list[float] = field(default_factory=list)
    total_s: list[float] = field(default_factory=list)
    nbytes: int = 0
    cpu_s: float = 0.0  # of the process serving this path (none for raw)

    @property
    def ttfb_ms(self) -> float:
        return statistics.median(self.ttfb_s) * 1000

    @property
    def p95_ms(self) -> float:
        return statistics.quantiles(self.total_s, n=20)[-1] * 1000

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / sum(self.total_s) / 1e6

    @property
    def cpu_s_per_gb(self) -> float:
        return self.cpu_s / (self.nbytes / 1e9)


@dataclass(frozen=True)
class Stored:
    recording_id: str
    key: str
    plain_size: int
    stored_size: int
    presigned: str


@dataclass
class Route:
    """One way to the audio: a URL per object and the CPU clock of what serves it."""

    name: str
    url: Callable[[Stored], str]
    headers: dict[str, str]
    params: dict[str, str]
    plaintext: bool
    cpu: Callable[[], float]

    async def read(self, session: aiohttp.ClientSession, obj: Stored, offset: int,
                   length: int | None, stats: Stats) -> None:
        headers = dict(self.headers)
        if length is not None:
            if not self.plaintext:  # the same share of the stored object at the same place
                offset = offset * obj.stored_size // obj.plain_size
            headers["Range"] = f"bytes={offset}-{offset + length - 1}"
        cpu_before = self.cpu()
        started = time.perf_counter()
        first: float | None = None
        async with session.get(self.url(obj), params=self.params, headers=headers) as response:
            assert response.status in (200, 206), (self.name, response.status)
            async for chunk in response.content.iter_any():
                if first is None:
                    first = time.perf_counter()
                stats.nbytes += len(chunk)
        done = time.perf_counter()
        stats.cpu_s += self.cpu() - cpu_before
        stats.ttfb_s.append((first or done) - started)
        stats.total_s.append(done - started)


async def store_recordings(stack: BenchStack, count: int, size: int) -> list[Stored]:
    """Upload `count` WAVs of `size` bytes through the product."""
    token = await stack.token("ingest", [COMPANY])
    objects = stack.objects()
    found = []
    conn = await asyncpg.connect(stack.superuser_url)
    try:
        async with aiohttp.ClientSession() as session:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "call.wav"
                await asyncio.to_thread(write_wav, path, size)
                for i in range(count):
                    form = aiohttp.FormData()
                    form.add_field("metadata", json.dumps({
                        "company": COMPANY, "external_id": f"bench-replay-{i}",
                        "direction": "inbound", "started_at": "2026-03-02T10:00:00+02:00",
                        "ended_at": "2026-03-02T11:00:00+02:00", "purpose": "quality"}),
                        content_type="application/json")
                    with path.open("rb") as audio:
                        form.add_field("audio", audio, filename="call.wav",
                                       content_type="audio/wav")
                        async with session.post(
                                f"{stack.base_url}/api/v1/recordings", data=form,
                                headers={"Authorization": f"Bearer {token}"}) as response:
                            assert response.status == 201, await response.text()
                            body = await response.json()
                    key = await conn.fetchval(
                        "SELECT object_key FROM recordings WHERE id = $1", body["id"])
                    stored_size = (await objects.stat(key)).size
                    # A URL presigned for the benchmark only: the service never hands one out.
                    presigned = await asyncio.to_thread(
                        objects.client.presigned_get_object, objects.bucket, key,
                        timedelta(hours=2))
                    found.append(Stored(body["id"], key, int(body["size_bytes"]), stored_size,
                                        presigned))
    finally:
        await conn.close()
        await objects.close()
    return found


def cpu_of(process: psutil.Process) -> Callable[[], float]:
    def clock() -> float:
        times = process.cpu_times()
        return float(times.user + times.system)
    return clock


async def measure(session: aiohttp.ClientSession, paths: list[Route], stored: list[Stored],
                  rounds: int) -> dict[str, dict[str, Stats]]:
    """Whole files, then ranges; one request at a time, the paths' order rotating."""
    rng = random.Random(11)
    for path in paths:  # warm connections and caches on every path
        await path.read(session, stored[0], 0, None, Stats())
    results: dict[str, dict[str, Stats]] = {"whole": {}, "ranges": {}}
    for kind in results:
        results[kind] = {p.name: Stats() for p in paths}
    turn = 0
    for _ in range(rounds):
        for obj in stored:
            for path in paths[turn % 3:] + paths[:turn % 3]:
                await path.read(session, obj, 0, None, results["whole"][path.name])
            turn += 1
    for _ in range(RANGES):
        obj = rng.choice(stored)
        offset = rng.randrange(obj.plain_size - RANGE)
        for path in paths[turn % 3:] + paths[:turn % 3]:
            await path.read(session, obj, offset, RANGE, results["ranges"][path.name])
        turn += 1
    return results


def report(results: dict[str, dict[str, Stats]], stored: list[Stored], rounds: int) -> int:
    for kind, label in (("whole", "whole file"), ("ranges", "64 KiB ranges")):
        for name in PATHS:
            s = results[kind][name]
            cpu = f", {s.cpu_s_per_gb:6.2f} CPU s/GB" if name != "raw" else ""
            print(f"{label:>13} {name:>7}: {s.mb_per_s:8.1f} MB/s  TTFB {s.ttfb_ms:6.2f} ms"
                  f"  p95 {s.p95_ms:7.2f} ms{cpu}", flush=True)
    whole, ranges = results["whole"], results["ranges"]
    print(f"CPU seconds per GB served: service {whole['service'].cpu_s_per_gb:.2f} (whole"
          f" files), {ranges['service'].cpu_s_per_gb:.2f} (ranges); nginx"
          f" {whole['nginx'].cpu_s_per_gb:.2f} (whole files), {ranges['nginx'].cpu_s_per_gb:.2f}"
          " (ranges)")
    total = sum(o.plain_size for o in stored) * rounds
    print(f"objects: {len(stored)} of {stored[0].plain_size / 1e6:.1f} MB, {rounds} round(s):"
          f" {total / 1e6:.0f} MB of whole files per path; {RANGES} ranges of {RANGE} bytes")
    print(f"context, service vs raw GET: whole-file throughput"
          f" {whole['service'].mb_per_s / whole['raw'].mb_per_s:.2f}x, ranged p95"
          f" {ranges['service'].p95_ms / ranges['raw'].p95_ms:.2f}x, TTFB"
          f" {whole['service'].ttfb_ms / whole['raw'].ttfb_ms:.2f}x /"
          f" {ranges['service'].ttfb_ms / ranges['raw'].ttfb_ms:.2f}x")
    p95 = ranges["service"].p95_ms / ranges["nginx"].p95_ms
    print(f"replay ranged p95: ratio {p95:.2f} (goal <= {P95_GOAL}) "
          f"{'PASS' if p95 <= P95_GOAL else 'FAIL'}")
    ttfb = max(whole["service"].ttfb_ms / whole["nginx"].ttfb_ms,
               ranges["service"].ttfb_ms / ranges["nginx"].ttfb_ms)
    print(f"replay TTFB: ratio {ttfb:.2f} (goal < {TTFB_GOAL:.0f}, the worse of whole file"
          f" and ranges) {'PASS' if ttfb < TTFB_GOAL else 'FAIL'}")
    ratio = whole["service"].mb_per_s / whole["nginx"].mb_per_s
    verdict = "PASS" if ratio >= GOAL and p95 <= P95_GOAL and ttfb < TTFB_GOAL else "FAIL"
    print(f"replay: ratio {ratio:.2f} (goal >= {GOAL}) {verdict}", flush=True)
    return 0 if verdict == "PASS" else 1


async def run(count: int, size: int, rounds: int) -> int:
    async with bench_stack() as stack:
        stored = await store_recordings(stack, count, size)
        token = await stack.token("quality", [COMPANY])
        async with nginx_proxy(stack.info.s3_endpoint) as nginx:
            service_cpu = cpu_of(psutil.Process(stack.service.pid))
            paths = [
                Route("raw", lambda o: o.presigned, {}, {}, plaintext=False,
                      cpu=lambda: 0.0),
                Route("nginx", lambda o: nginx.url(o.presigned), {}, {}, plaintext=False,
                      cpu=nginx.cpu_s),
                Route("service",
                      lambda o: f"{stack.base_url}/api/v1/recordings/{o.recording_id}/audio",
                      {"Authorization": f"Bearer {token}"}, {"reason": REASON},
                      plaintext=True, cpu=service_cpu),
            ]
            connector = aiohttp.TCPConnector(limit=16)
            async with aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                             timeout=aiohttp.ClientTimeout(total=600),
                                             ) as session:
                results = await measure(session, paths, stored, rounds)
    return report(results, stored, rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 files of 16 MB read 4 times (128 MB per path) instead of 4 of"
                             " 64 MB read once")
    args = parser.parse_args(argv)
    count, size, rounds = (2, 16 << 20, 4) if args.quick else (4, 64 << 20, 1)
    return asyncio.run(run(count, size, rounds))


if __name__ == "__main__":
    sys.exit(main())
