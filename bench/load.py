"""Load: many concurrent clients doing a realistic mix against one service process.

    .venv/bin/python -m bench.load [--quick] [--clients N] [--seconds S]

Each client loops until the time is up, picking an operation by weight: upload of a small
G.711 µ-law WAV (the telephony system), search (the quality team), a ranged replay of 4 KiB
(a browser seeking), a batch of 50 web events (a log shipper). Answers 429/503 carry
Retry-After and are retried after it, as the real clients do; they are counted as "shed",
not as errors. An error is anything else that is not the expected status.

Printed: per operation the count, errors, shed, p50 and p95 latency; the service's RSS
sampled every half second. The last line is `load: ratio X.XX (goal >= 1.0) PASS|FAIL`:
1.00 when there were no errors and RSS grew less than 10 % over the second half of the run;
otherwise the fraction of successful requests (at most 0.99 when memory grew).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import struct
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

import aiohttp

from bench.stack import BenchStack, bench_stack

COMPANY = "oulun-sahkonmyynti"
GOAL = 1.0
MAX_GROWTH = 0.10
WEIGHTS = {"upload": 2, "search": 4, "replay": 3, "web_events": 1}
SEED_RECORDINGS = 20
MAX_RETRIES = 6


def mulaw_wav(seconds: float = 2.0, rate: int = 8000) -> bytes:
    """A G.711 µ-law WAV as PBXs write it (format 7, with its fact chunk)."""
    samples = int(seconds * rate)
    body = os.urandom(samples)
    fmt = struct.pack("<HHIIHHH", 7, 1, rate, rate, 1, 8, 0)
    chunks = (b"fmt " + struct.pack("<I", len(fmt)) + fmt
              + b"fact" + struct.pack("<II", 4, samples)
              + b"data" + struct.pack("<I", len(body)) + body)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def call_metadata() -> dict[str, object]:
    return {
        "company": COMPANY, "external_id": f"load-{uuid.uuid4().hex}",
        "started_at": "2026-03-02T10:00:00+02:00", "ended_at": "2026-03-02T10:00:02+02:00",
        "direction": random.choice(["inbound", "outbound"]),
        "agent": f"agent-{random.randint(1, 40)}", "queue": random.choice(["billing", "moving"]),
        "caller": "+358401234567", "callee": "+358855843100", "purpose": "quality",
        "tags": ["load"],
    }


def upload_form(audio: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("metadata", json.dumps(call_metadata()), content_type="application/json")
    form.add_field("audio", audio, filename="call.wav", content_type="audio/wav")
    return form


def web_event_batch(lines: int = 50) -> bytes:
    out = []
    for _ in range(lines):
        out.append(json.dumps({
            "ts": "2026-03-02T10:00:00+02:00", "site": "oulun-sahkonmyynti.fi",
            "event": random.choice(["page_view", "click", "login"]),
            "url": f"https://oulun-sahkonmyynti.fi/{random.randint(1, 500)}",
            "session_id": uuid.uuid4().hex, "ip": "192.0.2.44", "user_agent": "load/1.0",
        }))
    return ("\n".join(out) + "\n").encode()


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    shed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    samples: list[str] = field(default_factory=list)

    def error(self, op: str, what: str) -> None:
        self.errors[op] += 1
        if len(self.samples) < 10:
            self.samples.append(f"{op}: {what}")


@dataclass
class Tokens:
    ingest: str
    quality: str


async def seed(
    session: aiohttp.ClientSession, stack: BenchStack, token: str
) -> list[tuple[str, int]]:
    found = []
    for _ in range(SEED_RECORDINGS):
        audio = mulaw_wav()
        async with session.post(f"{stack.base_url}/api/v1/recordings", data=upload_form(audio),
                                headers={"Authorization": f"Bearer {token}"}) as response:
            body = await response.json()
            if response.status != 201:
                raise RuntimeError(f"seeding failed: {response.status} {body}")
            found.append((body["id"], body["size_bytes"]))
    return found


async def one_request(session: aiohttp.ClientSession, stack: BenchStack, tokens: Tokens,
                      op: str, calls: list[tuple[str, int]]) -> tuple[int, set[int]]:
    base = stack.base_url
    if op == "upload":
        async with session.post(f"{base}/api/v1/recordings", data=upload_form(mulaw_wav()),
                                headers={"Authorization": f"Bearer {tokens.ingest}"}) as r:
            await r.read()
            return r.status, {201}
    if op == "search":
        params = {"company": COMPANY, "limit": "20",
                  "agent": f"agent-{random.randint(1, 40)}"}
        async with session.get(f"{base}/api/v1/recordings", params=params,
                               headers={"Authorization": f"Bearer {tokens.quality}"}) as r:
            await r.read()
            return r.status, {200}
    if op == "replay":
        recording_id, size = random.choice(calls)
        start = random.randint(0, max(0, size - 4096))
        async with session.get(
            f"{base}/api/v1/recordings/{recording_id}/audio", params={"reason": "load test"},
            headers={"Authorization": f"Bearer {tokens.quality}",
                     "Range": f"bytes={start}-{start + 4095}"},
        ) as r:
            await r.read()
            return r.status, {206}
    async with session.post(f"{base}/api/v1/web-events", data=web_event_batch(),
                            headers={"Authorization": f"Bearer {tokens.ingest}",
                                     "Content-Type": "application/x-ndjson"}) as r:
        await r.read()
        return r.status, {200}


async def client(session: aiohttp.ClientSession, stack: BenchStack, tokens: Tokens,
                 calls: list[tuple[str, int]], until: float, tally: Tally) -> None:
    ops = list(WEIGHTS)
    weights = list(WEIGHTS.values())
    while time.monotonic() < until:
        op = random.choices(ops, weights)[0]
        started = time.perf_counter()
        for attempt in range(MAX_RETRIES + 1):
            try:
                status, expected = await one_request(session, stack, tokens, op, calls)
            except (aiohttp.ClientError, TimeoutError) as exc:
                tally.error(op, exc.__class__.__name__)
                break
            if status in expected:
                tally.latencies[op].append(time.perf_counter() - started)
                break
            if status in (429, 503) and attempt < MAX_RETRIES:
                tally.shed[op] += 1
                # Retry-After (1-2 s here) plus jitter, backing off as log shippers do.
                await asyncio.sleep((1.0 + random.random()) * (attempt + 1))
                continue
            tally.error(op, f"HTTP {status}")
            break


def p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def sample_rss(stack: BenchStack, until: float, out: list[tuple[float, int]]) -> None:
    while time.monotonic() < until:
        out.append((time.monotonic(), stack.service_rss()))
        await asyncio.sleep(0.5)


async def run(clients: int, seconds: float) -> float:
    async with bench_stack() as stack:
        tokens = Tokens(await stack.token("ingest", [COMPANY]),
                        await stack.token("quality", [COMPANY]))
        connector = aiohttp.TCPConnector(limit=clients)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            calls = await seed(session, stack, tokens.ingest)
            tally = Tally()
            rss: list[tuple[float, int]] = []
            began = time.monotonic()
            until = began + seconds
            await asyncio.gather(
                sample_rss(stack, until, rss),
                *(client(session, stack, tokens, calls, until, tally) for _ in range(clients)),
            )
            elapsed = time.monotonic() - began
    ok = sum(len(v) for v in tally.latencies.values())
    errors = sum(tally.errors.values())
    total = ok + errors
    print(f"load: {clients} clients for {elapsed:.0f} s, {total} requests "
          f"({total / elapsed:.0f}/s), {errors} errors, {sum(tally.shed.values())} shed and "
          "retried", flush=True)
    print(f"{'operation':<11} {'ok':>6} {'errors':>6} {'shed':>5} {'p50 ms':>8} {'p95 ms':>8}")
    for op in WEIGHTS:
        values = tally.latencies[op]
        print(f"{op:<11} {len(values):>6} {tally.errors[op]:>6} {tally.shed[op]:>5} "
              f"{p(values, 0.5):>8.1f} {p(values, 0.95):>8.1f}")
    for sample in tally.samples:
        print(f"  error sample: {sample}")
    mid = began + elapsed / 2
    first_half = [r for t, r in rss if t < mid]
    second_half = [r for t, r in rss if t >= mid]
    at_mid = statistics.median(first_half[-4:]) if first_half else 0
    at_end = max(second_half) if second_half else at_mid
    growth = (at_end - at_mid) / at_mid if at_mid else 0.0
    mib = [round(r / 2**20) for _, r in rss[:: max(1, len(rss) // 8)]]
    print(f"service RSS MiB over time: {mib}; second-half growth {growth * 100:+.1f} % "
          f"(goal < {MAX_GROWTH * 100:.0f} %)")
    if errors == 0 and growth < MAX_GROWTH:
        ratio = 1.0
    else:
        ratio = ok / total if total else 0.0
        if growth >= MAX_GROWTH:
            ratio = min(ratio, 0.99)
    ratio = math.floor(ratio * 100) / 100  # 0.998 must not print as a passing 1.00
    verdict = "PASS" if ratio >= GOAL else "FAIL"
    print(f"load: ratio {ratio:.2f} (goal >= {GOAL}) {verdict}", flush=True)
    return ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.load", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 clients for 15 s")
    parser.add_argument("--clients", type=int)
    parser.add_argument("--seconds", type=float)
    args = parser.parse_args(argv)
    clients = args.clients or (50 if args.quick else 200)
    seconds = args.seconds or (15.0 if args.quick else 60.0)
    ratio = asyncio.run(run(clients, seconds))
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
