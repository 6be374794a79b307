"""Listener scale: how many people can listen at once through one replica, and through nginx
serving the same load from the same S3.

    .venv/bin/python -m bench.listeners [--quick]

Each simulated listener is someone else (a token of its own), gives its reason once (its
first request opens its audit window) and then plays a call in real time with 64 KiB ranges,
as a browser's player does: half of them a 64 kbit/s MP3 (a range lasts 8.2 s), half a
128 kbit/s WAV (4.1 s). A range is asked for when the one before it starts playing and is
due when it must start playing itself; the first range after a seek (every 15-25 s, to a
random place) is due 0.5 s after it was asked for. A stall is a range later than it was due.
A step starts N listeners (pressing play, 32 at a time; their rate and p95 printed apart),
then measures every range all N ask for during the listening window, each listener in the
middle of a range at its start, as in a steady state. N is ramped
(doubling, then halving the gap) to the largest N with no stall, no error and p95 range
latency < 100 ms. The same ramp runs against nginx (one worker, as the service is one
process) proxying the stored objects through presigned URLs, the steps interleaved.

Printed: the largest N of each, per core of the machine, and the cores the serving process
used meanwhile. The last line is
`listeners: ratio X (goal >= 0.5) PASS|FAIL; N per replica (goal >= 500)`, X being the
service's N over nginx's (per core alike: same machine); PASS needs both goals.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import aiohttp
import asyncpg
import psutil

from bench.ingest import write_wav
from bench.stack import BenchStack, bench_stack, nginx_proxy
from storage import accounts

COMPANY = "oulun-sahkonmyynti"
GOAL = 0.5
PER_REPLICA_GOAL = 500
RANGE = 64 * 1024
P95_LIMIT_MS = 100.0
SEEK_DUE_S = 0.5
SEEK_EVERY_S = (15.0, 25.0)


@dataclass(frozen=True)
class Call:
    recording_id: str
    key: str
    plain_size: int
    stored_size: int
    bytes_per_s: float
    presigned: str


@dataclass
class Window:
    latencies_s: list[float] = field(default_factory=list)
    start_latencies_s: list[float] = field(default_factory=list)
    start_seconds: float = 0.0
    stalls: int = 0
    errors: int = 0
    cpu_s: float = 0.0
    seconds: float = 0.0

    @property
    def p95_ms(self) -> float:
        if len(self.latencies_s) < 2:
            return math.inf
        return statistics.quantiles(self.latencies_s, n=20)[-1] * 1000

    @property
    def held(self) -> bool:
        return not self.stalls and not self.errors and self.p95_ms < P95_LIMIT_MS

    @property
    def cores(self) -> float:
        return self.cpu_s / self.seconds


Fetch = Callable[[aiohttp.ClientSession, Call, int, int], Awaitable[None]]


def service_fetch(base_url: str, tokens: list[str]) -> Fetch:
    async def fetch(session: aiohttp.ClientSession, call: Call, listener: int,
                    offset: int) -> None:
        end = min(offset + RANGE, call.plain_size) - 1
        async with session.get(
                f"{base_url}/api/v1/recordings/{call.recording_id}/audio",
                params={"reason": f"quality review, listener {listener}"},
                headers={"Authorization": f"Bearer {tokens[listener]}",
                         "Range": f"bytes={offset}-{end}"}) as response:
            if response.status != 206:
                raise RuntimeError(f"service answered {response.status}")
            await response.read()
    return fetch


def nginx_fetch(url_of: Callable[[Call], str]) -> Fetch:
    async def fetch(session: aiohttp.ClientSession, call: Call, listener: int,
                    offset: int) -> None:
        start = offset * call.stored_size // call.plain_size  # the same place, as stored
        end = min(start + RANGE, call.stored_size) - 1
        async with session.get(url_of(call), headers={"Range": f"bytes={start}-{end}"}
                               ) as response:
            if response.status != 206:
                raise RuntimeError(f"nginx answered {response.status}")
            await response.read()
    return fetch


START_CONCURRENCY = 32  # listeners starting at once (pressing play), in the start phase


async def play(session: aiohttp.ClientSession, fetch: Fetch, call: Call, listener: int,
               rng: random.Random, until: float, out: Window) -> None:
    """One listener in the middle of a call: asks for the next range at a random moment of
    the one playing (as in a steady state), then keeps real time, seeking now and then."""
    loop = asyncio.get_running_loop()
    last_start = call.plain_size - RANGE
    position = rng.randrange(0, last_start) & ~0xFFF
    duration = RANGE / call.bytes_per_s
    seek_at = loop.time() + rng.uniform(0, SEEK_EVERY_S[1])
    await asyncio.sleep(rng.uniform(0, duration))
    asked = loop.time()
    due = asked + duration
    while asked < until:
        try:
            await fetch(session, call, listener, position)
        except (aiohttp.ClientError, RuntimeError, TimeoutError):
            out.errors += 1
            return
        arrived = loop.time()
        out.latencies_s.append(arrived - asked)
        if arrived > due:
            out.stalls += 1
        plays_at = max(arrived, due)  # this range starts playing now (or when it was due)
        if plays_at >= seek_at or position + RANGE > last_start:
            # The listener jumps elsewhere while this range plays (or the call ends).
            seek_at = plays_at + rng.uniform(*SEEK_EVERY_S)
            await asyncio.sleep(max(0.0, plays_at + rng.uniform(0, 2.0) - loop.time()))
            position = rng.randrange(0, last_start) & ~0xFFF
            asked = loop.time()
            due = asked + SEEK_DUE_S
            continue
        # The next range is asked for when this one starts playing, due when it ends.
        await asyncio.sleep(max(0.0, plays_at - loop.time()))
        position += RANGE
        asked = loop.time()
        due = plays_at + duration


async def window(n: int, fetch: Fetch, calls: list[Call], cpu: Callable[[], float],
                 seconds: float, seed: int) -> Window:
    """N listeners press play (each gives its reason: the start phase, timed apart), then
    all of them listen for `seconds`, measured."""
    rng = random.Random(seed)
    out = Window()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(START_CONCURRENCY)

        async def start(i: int) -> None:
            call = calls[i % len(calls)]
            async with gate:
                asked = loop.time()
                try:
                    await fetch(session, call, i, 0)
                except (aiohttp.ClientError, RuntimeError, TimeoutError):
                    out.errors += 1
                    return
                out.start_latencies_s.append(loop.time() - asked)

        began = loop.time()
        await asyncio.gather(*(start(i) for i in range(n)))
        out.start_seconds = loop.time() - began
        measured_from = loop.time()
        cpu_before = cpu()
        await asyncio.gather(*(
            play(session, fetch, calls[i % len(calls)], i, random.Random(rng.random()),
                 measured_from + seconds, out)
            for i in range(n)))
        out.cpu_s = cpu() - cpu_before
        out.seconds = loop.time() - measured_from
    return out


def mp3_file(path: Path, seconds: float) -> None:
    """A 64 kbit/s MP3 of a tone (PyAV, libmp3lame)."""
    import av
    import numpy as np

    rate = 22050
    with av.open(str(path), "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=rate, layout="mono")
        assert isinstance(stream, av.AudioStream)
        stream.codec_context.bit_rate = 64_000
        t = np.arange(int(seconds * rate), dtype=np.float64) / rate
        samples = (0.4 * np.sin(2 * math.pi * 440 * t)).astype(np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = rate
        resampler = av.AudioResampler(format="s16p", layout="mono", rate=rate,
                                      frame_size=stream.codec_context.frame_size or 1152)
        pts = 0
        for piece in [*resampler.resample(frame), *resampler.resample(None)]:
            piece.pts = pts
            pts += piece.samples
            for packet in stream.encode(piece):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


async def store_calls(stack: BenchStack, seconds: float) -> list[Call]:
    """A 64 kbit/s MP3 and a 128 kbit/s WAV of `seconds` each, stored through the product."""
    token = await stack.token("ingest", [COMPANY])
    objects = stack.objects()
    calls = []
    conn = await asyncpg.connect(stack.superuser_url)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            mp3, wav = Path(tmp) / "call.mp3", Path(tmp) / "call.wav"
            await asyncio.to_thread(mp3_file, mp3, seconds)
            await asyncio.to_thread(write_wav, wav, int(seconds * 16_000) + 44)
            async with aiohttp.ClientSession() as session:
                for path, kind, bytes_per_s in ((mp3, "audio/mpeg", 8_000.0),
                                                (wav, "audio/wav", 16_000.0)):
                    form = aiohttp.FormData()
                    form.add_field("metadata", json.dumps({
                        "company": COMPANY, "external_id": f"bench-listen-{path.suffix}",
                        "direction": "inbound", "started_at": "2026-03-02T10:00:00+02:00",
                        "ended_at": "2026-03-02T11:00:00+02:00", "purpose": "quality"}),
                        content_type="application/json")
                    form.add_field("audio", path.read_bytes(), filename=path.name,
                                   content_type=kind)
                    async with session.post(
                            f"{stack.base_url}/api/v1/recordings", data=form,
                            headers={"Authorization": f"Bearer {token}"}) as response:
                        assert response.status == 201, await response.text()
                        body = await response.json()
                    key = await conn.fetchval(
                        "SELECT object_key FROM recordings WHERE id = $1", body["id"])
                    presigned = await asyncio.to_thread(
                        objects.client.presigned_get_object, objects.bucket, key,
                        timedelta(hours=2))
                    calls.append(Call(body["id"], key, int(body["size_bytes"]),
                                      (await objects.stat(key)).size, bytes_per_s, presigned))
    finally:
        await conn.close()
        await objects.close()
    return calls


async def listener_tokens(stack: BenchStack, count: int) -> list[str]:
    """A bearer token of its own for every listener (each is someone else)."""
    conn = await asyncpg.connect(stack.superuser_url)
    try:
        (company,) = await accounts.companies_by_code(conn, [COMPANY])
        return [(await accounts.create_token(conn, f"bench-listener-{i}", "quality",
                                             [company.id], False))[1]
                for i in range(count)]
    finally:
        await conn.close()


@dataclass
class Ramp:
    """Doubling from `start` until a step fails (or `cap`), then halving the gap."""

    name: str
    fetch: Fetch
    cpu: Callable[[], float]
    n: int
    cap: int
    refine: int
    best: int = 0
    best_window: Window | None = None
    failed_at: int | None = None
    done: bool = False

    def record(self, n: int, result: Window) -> None:
        verdict = "held" if result.held else "not held"
        starts = (statistics.quantiles(result.start_latencies_s, n=20)[-1] * 1000
                  if len(result.start_latencies_s) > 1 else math.inf)
        print(f"{self.name:>7} N={n:5d}: p95 {result.p95_ms:7.1f} ms, stalls {result.stalls},"
              f" errors {result.errors}, {len(result.latencies_s)} ranges,"
              f" {result.cores:.2f} cores; starts: {n / result.start_seconds:.0f}/s, p95"
              f" {starts:.0f} ms -> {verdict}",
              flush=True)
        if result.held:
            self.best, self.best_window = n, result
        else:
            self.failed_at = n
        if self.failed_at is None:
            self.n = n * 2
            self.done = self.n > self.cap
        else:
            gap = self.failed_at - self.best
            self.done = self.refine <= 0 or gap <= max(8, self.best // 8)
            self.refine -= 1
            self.n = self.best + gap // 2


async def run(quick: bool) -> int:
    seconds = 4.0 if quick else 30.0
    start, cap, refine = (250, 500, 0) if quick else (125, 6400, 3)
    async with bench_stack() as stack:
        calls = await store_calls(stack, 120.0 if quick else 600.0)
        tokens = await listener_tokens(stack, cap)
        service = psutil.Process(stack.service.pid)

        def service_cpu() -> float:
            times = service.cpu_times()
            return float(times.user + times.system)

        async with nginx_proxy(stack.info.s3_endpoint) as nginx:
            ramps = [
                Ramp("service", service_fetch(stack.base_url, tokens), service_cpu, start,
                     cap, refine),
                Ramp("nginx", nginx_fetch(lambda c: nginx.url(c.presigned)), nginx.cpu_s,
                     start, cap, refine),
            ]
            seed = 0
            while not all(r.done for r in ramps):
                for ramp in ramps:  # steps of the two interleave
                    if not ramp.done:
                        seed += 1
                        n = ramp.n
                        ramp.record(n, await window(n, ramp.fetch, calls, ramp.cpu, seconds,
                                                    seed))
    service_ramp, nginx_ramp = ramps
    cores = os.cpu_count() or 1
    for ramp in ramps:
        used = ramp.best_window.cores if ramp.best_window is not None else 0.0
        capped = " (the ramp's cap: more may hold)" if ramp.failed_at is None else ""
        print(f"{ramp.name}: holds {ramp.best} listeners{capped} = {ramp.best / cores:.0f} per"
              f" core ({cores} cores); the serving process used {used:.2f} cores for them",
              flush=True)
    print(f"per step: N starts ({START_CONCURRENCY} at a time), then {seconds:.0f} s measured;"
          f" p95 limit"
          f" {P95_LIMIT_MS:.0f} ms; 64 kbit/s MP3 and 128 kbit/s WAV, 64 KiB ranges")
    ratio = service_ramp.best / nginx_ramp.best if nginx_ramp.best else 0.0
    per_replica = service_ramp.best
    verdict = "PASS" if ratio >= GOAL and per_replica >= PER_REPLICA_GOAL else "FAIL"
    print(f"listeners: ratio {ratio:.2f} (goal >= {GOAL}) {verdict}; {per_replica} per replica"
          f" (goal >= {PER_REPLICA_GOAL})", flush=True)
    return 0 if verdict == "PASS" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="4 s measured per step, N = 250 and 500 only")
    args = parser.parse_args(argv)
    return asyncio.run(run(args.quick))


if __name__ == "__main__":
    sys.exit(main())
