"""Backup benchmark: `tallenne backup` (the dump, the key snapshot, every object streamed,
hashed and sealed again with AES-256-GCM into 0600 files, the manifest) against a plain copy
of the same objects from S3 into files, with the same number of copies in flight.

    .venv/bin/python -m bench.backup [--quick]

The last line is `backup: ratio X.XX (goal >= 0.7) PASS|FAIL`: object bytes per second of the
whole encrypted backup over the plain copy's (best of alternating rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

import asyncpg

from bench.stack import BenchStack, bench_stack
from service.audit.checkpoints import opened_checkpoint_bucket
from service.cli.commands.backup import backup_key, master_keys, pg_tools
from service.cli.malloc import tune_malloc
from service.resources import open_resources
from service.settings import Settings
from storage import backup, key_snapshot
from storage.objects import ObjectStore

GOAL = 0.7
CHUNK = backup.CHUNK


async def stored_objects(stack: BenchStack, count: int, size: int) -> list[str]:
    """`count` recordings of `size` bytes each: rows by one INSERT, objects by parallel PUTs
    (random bytes, as incompressible as the ciphertext they stand for)."""
    conn = await asyncpg.connect(stack.superuser_url)
    try:
        rows = await conn.fetch(
            "INSERT INTO recordings (id, company_id, external_id, state, started_at, ended_at,"
            " direction, purpose, format, codec, duration_s, sample_rate, channels, size_bytes,"
            " sha256, object_key, key_owner, wrapped_key)"
            " SELECT g.id, c.id, 'bench-' || g.id::text, 'stored', now(), now(),"
            " 'inbound', 'quality', 'wav', 'pcm_s16le', 1, 8000, 1, $2, repeat('0', 64),"
            " 'recordings/bench/' || g.id::text, 'company', '\\x00'::bytea"
            " FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, $1)) g,"
            " companies c WHERE c.code = 'oulun-sahkonmyynti' RETURNING object_key",
            count, size,
        )
    finally:
        await conn.close()
    store = stack.objects(threads=8)
    slots = asyncio.Semaphore(8)

    async def put(key: str) -> None:
        async with slots:
            await store.put_bytes(key, os.urandom(size))

    try:
        await asyncio.gather(*(put(r["object_key"]) for r in rows))
    finally:
        await store.close()
    return [r["object_key"] for r in rows]


async def plain_copy(store: ObjectStore, keys: list[str], directory: Path) -> float:
    """The baseline: each object streamed from S3 into a file, as it is, 8 at a time."""
    await asyncio.to_thread(directory.mkdir)
    slots = asyncio.Semaphore(backup.COPY_SLOTS)

    async def copy(n: int, key: str) -> None:
        async with slots:
            with (directory / f"{n}.bin").open("wb") as out:
                async for chunk in store.iter_range(key, chunk_size=CHUNK):
                    await asyncio.to_thread(out.write, chunk)

    started = time.perf_counter()
    await asyncio.gather(*(copy(n, key) for n, key in enumerate(keys)))
    return time.perf_counter() - started


def product_settings(stack: BenchStack) -> Settings:
    env = {k.removeprefix("TALLENNE_").lower(): v for k, v in stack.env.items()
           if k.startswith("TALLENNE_")}
    env["purge_enabled"] = "false"
    return Settings(**env)  # type: ignore[arg-type]


async def run(count: int, size: int, rounds: int) -> int:
    scratch = Path(tempfile.mkdtemp(prefix="tallenne-bench-backup-"))
    try:
        async with bench_stack(TALLENNE_PURGE_ENABLED="false") as stack:
            keys = await stored_objects(stack, count, size)
            total = count * size
            settings = product_settings(stack)
            key = backup_key(settings, masters=master_keys(settings))
            # pg_dump runs as the schema owner, as `tallenne backup` does.
            assert settings.database_owner_url is not None
            dsn = settings.database_owner_url.get_secret_value()
            raw_s = product_s = float("inf")
            async with open_resources(settings) as resources, \
                    opened_checkpoint_bucket(settings) as checkpoints:
                async def snapshot() -> dict[str, object]:
                    info = await key_snapshot.write_snapshot(
                        resources.pool, resources.key_objects, resources.keyring.masters)
                    return {"snapshot_id": info.snapshot_id, "created_at": info.created_at}

                store = stack.objects(threads=settings.s3_threads)
                try:
                    # Alternating rounds, best of each: one slow S3 moment must not decide.
                    for i in range(rounds):
                        raw_dir = scratch / f"plain-{i}"
                        raw_s = min(raw_s, await plain_copy(store, keys, raw_dir))
                        shutil.rmtree(raw_dir)
                        target = scratch / f"backup-{i}"
                        started = time.perf_counter()
                        manifest = await backup.take_backup(
                            dsn, resources.objects, target, pg_tools(), key, snapshot,
                            checkpoints.reader)
                        product_s = min(product_s, time.perf_counter() - started)
                        assert len(manifest.objects) == count and not manifest.missing
                        if i == rounds - 1:
                            _, verified = await backup.verify_backup(target, key)
                            assert not verified.problems, verified.problems[:3]
                            print(f"backup --verify: {verified.files} files, "
                                  f"{verified.bytes / 1e6:,.0f} MB, no problems", flush=True)
                        shutil.rmtree(target)
                finally:
                    await store.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    raw_rate, product_rate = total / raw_s, total / product_s
    print(f"plain copy: {count} objects of {size / 2**20:.0f} MiB ({total / 1e6:,.0f} MB) in"
          f" {raw_s:.2f} s ({raw_rate / 1e6:,.0f} MB/s, best of {rounds})", flush=True)
    print(f"tallenne backup: the same objects plus dump, key snapshot and manifest in"
          f" {product_s:.2f} s ({product_rate / 1e6:,.0f} MB/s, SHA-256 + AES-256-GCM,"
          f" best of {rounds})", flush=True)
    ratio = product_rate / raw_rate
    verdict = "PASS" if ratio >= GOAL else "FAIL"
    print(f"backup: ratio {ratio:.2f} (goal >= {GOAL}) {verdict}", flush=True)
    return 0 if verdict == "PASS" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 objects of 4 MiB, 2 rounds")
    args = parser.parse_args(argv)
    # This process runs the backup as `tallenne backup` does, and so with its malloc set-up
    # (the plain copy then has it too).
    tune_malloc()
    if args.quick:
        return asyncio.run(run(64, 4 * 2**20, rounds=2))
    return asyncio.run(run(256, 8 * 2**20, rounds=3))


if __name__ == "__main__":
    raise SystemExit(main())
