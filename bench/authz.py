"""What least privilege costs: the same scoped reads as the service's runtime role (owns
nothing, no BYPASSRLS, privileges through the group role) and as the old setup's role that
owned the tables, in the same run.

    .venv/bin/python -m bench.authz [--quick] [--rows N]

Two reads, each as a quality user of two companies with row-level security on: a recording
search (`storage.recordings.search` on a scoped connection, as GET /api/v1/recordings runs
it) and a replay row (`storage.recordings.get_for_replay`, the one self-scoping statement of
GET …/audio). Runtime and owner requests alternate, so drift hits both alike. The owner
side is the role that owned the tables before the split (row-level security is forced on
it too, so it sees the same rows). Prints p50/p95 of each; the last line is
`authz: ratio X.XX (goal >= 0.9) PASS|FAIL`, ratio = owner p95 / runtime p95 (the best p95
of three alternating rounds on each side) of the read that fares worse.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg

from bench.search import USER_COMPANIES, load, percentile, query_mix
from bench.stack import bench_stack
from storage import recordings as store
from storage.db import Scope, create_pool, scoped
from storage.errors import NotFound

GOAL = 0.9
ROUNDS = 3


async def timed(work: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await work()
    return (time.perf_counter() - started) * 1000


async def run(n: int, rounds: int) -> int:
    async with bench_stack(TALLENNE_PURGE_ENABLED="false") as stack:
        companies, customers = await load(stack, n)
        scope = Scope.of(companies[c] for c in USER_COMPANIES)
        conn = await asyncpg.connect(stack.superuser_url)
        try:
            wanted: list[uuid.UUID] = [r["id"] for r in await conn.fetch(
                "SELECT id FROM recordings ORDER BY random() LIMIT $1", rounds)]
            owners = await conn.fetch(
                "SELECT DISTINCT pg_get_userbyid(relowner) AS owner FROM pg_class"
                " WHERE relname IN ('recordings', 'companies', 'customers')")
            assert [r["owner"] for r in owners] == ["tallenne_owner"], owners
        finally:
            await conn.close()
        runtime = await create_pool(stack.app_url, max_size=2)
        owner = await create_pool(stack.owner_url, max_size=2)
        pools = {"runtime": runtime, "owner": owner}
        try:
            for name, pool in pools.items():
                async with pool.acquire() as probe:
                    row = await probe.fetchrow(
                        "SELECT current_user AS who, rolsuper, rolbypassrls FROM pg_roles"
                        " WHERE rolname = current_user")
                    assert row is not None and not row["rolsuper"] and not row["rolbypassrls"]
                    print(f"{name}: connects as {row['who']}", flush=True)
            mix = query_mix(random.Random(7), companies, customers, rounds)
            mix = [(k, f) for k, f in mix
                   if f.company_id is None or scope.allows(f.company_id)]
            times: dict[tuple[str, str, int], list[float]] = {}

            async def search(pool: asyncpg.Pool, where: store.SearchFilter) -> None:
                async with scoped(pool, scope) as c:
                    await store.search(c, where, after=None, limit=101)

            async def replay_row(pool: asyncpg.Pool, recording_id: uuid.UUID) -> None:
                async with pool.acquire() as c:
                    try:
                        await store.get_for_replay(c, scope, recording_id)
                    except NotFound:
                        pass  # another company's call: found by nobody in this scope

            for i in range(min(50, len(mix))):  # warm-up of both pools, not measured
                for pool in pools.values():
                    await search(pool, mix[i][1])
                    await replay_row(pool, wanted[i])
            # Alternating rounds, the best p95 of each side: one busy moment of a shared
            # machine must not decide.
            for round_ in range(ROUNDS):
                for i, (_, where) in enumerate(mix):
                    order = list(pools.items()) if (i + round_) % 2 == 0 \
                        else list(reversed(pools.items()))
                    for name, pool in order:
                        times.setdefault(("search", name, round_), []).append(
                            await timed(lambda p=pool, w=where: search(p, w)))  # type: ignore[misc]
                for i, recording_id in enumerate(wanted):
                    order = list(pools.items()) if (i + round_) % 2 == 0 \
                        else list(reversed(pools.items()))
                    for name, pool in order:
                        times.setdefault(("replay row", name, round_), []).append(
                            await timed(lambda p=pool, r=recording_id: replay_row(p, r)))  # type: ignore[misc]
        finally:
            await runtime.close()
            await owner.close()

    ratios = []
    print(f"\nscoped reads over {n:,} recordings as a quality user of"
          f" {', '.join(USER_COMPANIES)}:")
    for read in ("search", "replay row"):
        p95 = {}
        for name in ("runtime", "owner"):
            per_round = [times[(read, name, r)] for r in range(ROUNDS)]
            p95[name] = min(percentile(values, 95) for values in per_round)
            every = [v for values in per_round for v in values]
            print(f"  {read:>10} as {name:>7}: {ROUNDS} rounds of {len(per_round[0])} reads,"
                  f" p50 {statistics.median(every):6.2f} ms  best p95 {p95[name]:6.2f} ms")
        ratio = p95["owner"] / p95["runtime"]
        print(f"  {read:>10}: owner p95 / runtime p95 = {ratio:.2f}")
        ratios.append(ratio)
    ratio = min(ratios)
    verdict = "PASS" if ratio >= GOAL else "FAIL"
    print(f"authz: ratio {ratio:.2f} (goal >= {GOAL}) {verdict}", flush=True)
    return 0 if verdict == "PASS" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.authz", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20k rows, 3 x 200 reads per side")
    parser.add_argument("--rows", type=int, help="recordings to load (default 300k)")
    args = parser.parse_args(argv)
    rows = args.rows or (20_000 if args.quick else 300_000)
    rounds = 200 if args.quick else 1000
    return asyncio.run(run(rows, rounds))


if __name__ == "__main__":
    sys.exit(main())
