"""`tallenne backup DIR` and `tallenne restore DIR`: a consistent backup of metadata and audio,
and its restore into an empty deployment with the erasure ledger re-applied and everything
verified. The report is JSON on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from service.commands import Progress, app_resources
from service.environment import resolved
from service.reconciler import reconcile
from service.settings import Settings
from service.typedefs import AUDIT, OBJECTS, POOL
from storage import backup
from storage.audit import AuditEntry
from storage.checkpoints import verify_trail
from storage.erasure import reapply_erasures


def pg_tools() -> backup.PgTools:
    from service.embedded import _pg_bin

    return backup.PgTools(_pg_bin("pg_dump").parent)


def _dsn(settings: Settings) -> str:
    assert settings.database_url is not None, "resolved settings name a database"
    return settings.database_url.get_secret_value()


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def run_backup(settings: Settings, directory: Path) -> dict[str, Any]:
    async with app_resources(settings) as app:
        _say(f"backup: dumping the database into {directory}")
        progress = Progress("backup: objects")

        def total(n: int) -> None:
            progress.total = n

        manifest = await backup.take_backup(
            _dsn(settings), app[OBJECTS], directory, pg_tools(),
            advance=progress.advance, on_total=total,
        )
        progress.finish()
        await app[AUDIT].append(AuditEntry(
            actor="backup", actor_kind="system", action="backup.take",
            detail={"objects": len(manifest.objects), "missing": len(manifest.missing),
                    "audit_head_seq": manifest.database["audit_head_seq"]},
        ))
    by_kind: dict[str, int] = {}
    for entry in manifest.objects:
        by_kind[entry.kind] = by_kind.get(entry.kind, 0) + 1
    return {
        "ok": True,
        "directory": str(directory),
        "created_at": manifest.created_at,
        "objects": by_kind,
        "bytes": sum(e.size for e in manifest.objects),
        "missing": manifest.missing,
        "audit_head_seq": manifest.database["audit_head_seq"],
    }


async def run_restore(settings: Settings, directory: Path) -> dict[str, Any]:
    manifest = backup.Manifest.load(directory)
    backup.check_prefixes(manifest)
    _say("restore: loading the database dump")
    await backup.restore_database(_dsn(settings), directory, manifest, pg_tools())
    async with app_resources(settings) as app:
        pool, objects = app[POOL], app[OBJECTS]
        uploaded = 0
        already = 0
        # Ledger and checkpoint objects first: the ledger decides which recordings come back.
        for entry in (e for e in manifest.objects if e.kind != "recording"):
            if await backup.upload_object(objects, directory, entry):
                uploaded += 1
            else:
                already += 1
        _say("restore: re-applying the erasure ledger")
        async with pool.acquire() as conn:
            erased_again = await reapply_erasures(conn, objects)
            live = await backup.live_recording_keys(conn)
        recordings = [e for e in manifest.objects if e.kind == "recording"]
        progress = Progress("restore: recordings", len(recordings))
        skipped_erased = 0
        for entry in recordings:
            if entry.key not in live:
                skipped_erased += 1
            elif await backup.upload_object(objects, directory, entry):
                uploaded += 1
            else:
                already += 1
            progress.advance()
        progress.finish()
        _say("restore: reconciling PostgreSQL and S3")
        reconciled = await reconcile(pool, objects, grace=timedelta(0))
        async with pool.acquire() as conn:
            live = await backup.live_recording_keys(conn)
        in_manifest = {e.key for e in recordings}
        without_audio = sorted(live - in_manifest)
        await app[AUDIT].append(AuditEntry(
            actor="restore", actor_kind="system", action="backup.restore",
            detail={"backup_created_at": manifest.created_at, "objects_uploaded": uploaded,
                    "customers_erased_again": erased_again,
                    "stale_pending_rows": len(reconciled.stale_pending_rows)},
        ))
        _say("restore: verifying the audit chain")
        async with pool.acquire() as conn:
            trail = await verify_trail(conn, objects)
    ok = trail.ok and not without_audio and not reconciled.failed_deletes
    return {
        "ok": ok,
        "backup_created_at": manifest.created_at,
        "objects_uploaded": uploaded,
        "objects_already_present": already,
        "objects_verified": uploaded + already,
        "recordings_restored": len(live),
        "recordings_skipped_as_erased": skipped_erased,
        "customers_erased_again": erased_again,
        "reconcile": {"stale_pending_rows": len(reconciled.stale_pending_rows),
                      "orphan_objects": len(reconciled.orphan_objects),
                      "failed_deletes": reconciled.failed_deletes},
        "recordings_without_audio": without_audio,
        "audit": {"ok": trail.ok, "events": trail.events, "first_bad": trail.first_bad,
                  "problem": trail.problem, "checkpoints": trail.checkpoints},
    }


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    root = Path(args.directory).resolve()
    if args.keep is not None and args.keep < 1:
        raise ValueError("--keep must be at least 1")
    directory = backup.dated_directory(root, datetime.now(UTC)) if args.keep else root
    with resolved(settings) as ready:
        report = asyncio.run(run_backup(ready, directory))
    if args.keep:
        pruned = backup.prune_backups(root, args.keep)
        report["pruned"] = [p.name for p in pruned]
    print(json.dumps(report, indent=1))
    return 0 if report["ok"] else 1


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    with resolved(settings) as ready:
        report = asyncio.run(run_restore(ready, Path(args.directory).resolve()))
    print(json.dumps(report, indent=1))
    return 0 if report["ok"] else 1


def register(sub: Any) -> None:
    p = sub.add_parser("backup", help="consistent backup of the metadata and the audio")
    p.add_argument("directory", help="a new or empty directory to write the backup into; "
                   "with --keep, the root of dated backup directories")
    p.add_argument("--keep", type=int, metavar="N",
                   help="rotate: back up into DIRECTORY/<UTC time>/ and delete the oldest "
                   "complete backups beyond N (for cron or a scheduled job)")
    p.set_defaults(func=cmd_backup)
    p = sub.add_parser("restore", help="restore a backup into an empty deployment")
    p.add_argument("directory", help="a directory written by `tallenne backup`")
    p.set_defaults(func=cmd_restore)
