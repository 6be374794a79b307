"""`tallenne backup DIR`, `tallenne backup --verify DIR` and `tallenne restore DIR`: an
encrypted, consistent backup of metadata and audio (the owner keys left out: they travel only
in the key snapshot), its check without a restore, and its restore into an empty deployment
with the key snapshot loaded, the erasure ledger re-applied and everything verified. Reports
are JSON on stdout; progress goes to stderr.

Backup and restore connect with TALLENNE_DATABASE_OWNER_URL as the role that owns the schema
(pg_dump, pg_restore and the migrations need it); neither needs a superuser.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devstack.embedded import load_secrets
from devstack.environment import resolved
from service.audit.checkpoints import note_signer, opened_checkpoint_bucket
from service.cli.commands import Progress
from service.recordings.reconciler import reconcile
from service.resources import object_store, open_resources
from service.settings import Settings
from storage import backup, key_snapshot
from storage.audit import AuditEntry
from storage.checkpoints import start_epoch, verify_trail
from storage.crypto import load_master_key
from storage.db import Scope, apply_scope
from storage.erasure import reapply_erasures
from storage.errors import Conflict, InvalidInput
from storage.keys import MasterKeys, load_master_keys


def pg_tools() -> backup.PgTools:
    from devstack.embedded import _pg_bin

    return backup.PgTools(_pg_bin("pg_dump").parent)


def _dsn(settings: Settings) -> str:
    """The owner role's URL (TALLENNE_DATABASE_OWNER_URL), else TALLENNE_DATABASE_URL."""
    url = settings.database_owner_url or settings.database_url
    assert url is not None, "resolved settings name a database"
    return url.get_secret_value()


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def master_keys(settings: Settings) -> MasterKeys:
    if settings.master_key is None:
        raise ValueError("TALLENNE_MASTER_KEY is not set")
    previous = settings.previous_master_keys
    return load_master_keys(settings.master_key.get_secret_value(), settings.master_key_version,
                            previous.get_secret_value() if previous else None)


def backup_key(settings: Settings, *, masters: MasterKeys | None = None) -> bytes:
    """The backup key: configured, or (embedded mode) the one in data_dir/secrets.json. It
    must not be a master key."""
    text = settings.backup_key.get_secret_value() if settings.backup_key else None
    if text is None and settings.embedded_database:
        text = load_secrets(settings.data_dir).get("backup_key")
    if text is None:
        raise ValueError("TALLENNE_BACKUP_KEY is not set")
    key = load_master_key(text, "TALLENNE_BACKUP_KEY")
    if masters is not None and key in masters.keys.values():
        raise ValueError("TALLENNE_BACKUP_KEY must not be a master key")
    return key


async def run_backup(settings: Settings, directory: Path) -> dict[str, Any]:
    key = backup_key(settings, masters=master_keys(settings))
    async with open_resources(settings) as resources, \
            opened_checkpoint_bucket(settings) as checkpoints:
        _say(f"backup: dumping the database into {directory}")
        progress = Progress("backup: objects")

        def total(n: int) -> None:
            progress.total = n

        async def snapshot() -> dict[str, Any]:
            _say("backup: writing the key snapshot")
            info = await key_snapshot.write_snapshot(resources.pool, resources.key_objects,
                                                     resources.keyring.masters)
            return {"snapshot_id": info.snapshot_id, "created_at": info.created_at,
                    "bucket": resources.key_objects.bucket}

        manifest = await backup.take_backup(
            _dsn(settings), resources.objects, directory, pg_tools(), key, snapshot,
            checkpoints.reader,
            advance=progress.advance, on_total=total,
        )
        progress.finish()
        await resources.audit.append(AuditEntry(
            actor="backup", actor_kind="system", action="backup.take",
            detail={"objects": len(manifest.objects), "missing": len(manifest.missing),
                    "audit_head_seq": manifest.database["audit_head_seq"],
                    "key_snapshot": manifest.key_snapshot["snapshot_id"]},
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
        "key_snapshot": manifest.key_snapshot,
    }


async def run_verify(settings: Settings, directory: Path) -> dict[str, Any]:
    progress = Progress("verify: files")

    def total(n: int) -> None:
        progress.total = n

    manifest, result = await backup.verify_backup(
        directory, backup_key(settings), advance=progress.advance, on_total=total)
    progress.finish()
    return {
        "ok": not result.problems,
        "directory": str(directory),
        "created_at": manifest.created_at,
        "files_verified": result.files,
        "files": len(manifest.objects) + 1,
        "bytes_verified": result.bytes,
        "problems": result.problems,
        "audit_head_seq": manifest.database["audit_head_seq"],
        "key_snapshot": manifest.key_snapshot,
    }


def _snapshot_source(settings: Settings, path: Path | None) -> key_snapshot.SnapshotSource:
    if path is not None:
        if not path.is_file():
            raise InvalidInput(f"no key snapshot at {path}")
        return key_snapshot.SnapshotSource(path=path)
    return key_snapshot.SnapshotSource(store=object_store(settings, settings.key_bucket))


async def run_restore(
    settings: Settings, directory: Path, snapshot_file: Path | None = None
) -> dict[str, Any]:
    masters = master_keys(settings)
    manifest, cipher = backup.Manifest.load(directory, backup_key(settings, masters=masters))
    source = _snapshot_source(settings, snapshot_file)
    try:
        _say("restore: reading the key snapshot")
        found = await source.read(masters)
    finally:
        if source.store is not None:
            await source.store.close()
    taken = datetime.fromisoformat(manifest.key_snapshot["created_at"])
    if found.header.created_at < taken:
        raise InvalidInput(
            f"the key snapshot ({found.header.created_at.isoformat()}) is older than the one "
            f"this backup wrote ({taken.isoformat()}); give the current key snapshot")
    _say("restore: loading the database dump")
    await backup.restore_database(_dsn(settings), directory, manifest, cipher, pg_tools())
    signer = note_signer(settings)
    async with open_resources(settings) as resources, \
            opened_checkpoint_bucket(settings) as checkpoints:
        pool, objects = resources.pool, resources.objects
        _say("restore: loading the keys of the key snapshot")
        async with pool.acquire() as conn, conn.transaction():
            await apply_scope(conn, Scope.everything())
            if await key_snapshot.holds_keys(conn):
                raise Conflict("the key store is not empty; restore only into an empty "
                               "deployment")
            source = _snapshot_source(settings, snapshot_file) if snapshot_file else \
                key_snapshot.SnapshotSource(store=resources.key_objects)
            contents, loaded = await key_snapshot.load_keys(conn, source, masters)
        uploaded = 0
        already = 0
        # Ledger and checkpoint objects first: the ledger decides which recordings come back.
        for entry in (e for e in manifest.objects if e.kind != "recording"):
            target = checkpoints.reader if entry.kind == "checkpoint" else objects
            if await backup.upload_object(target, directory, entry, cipher):
                uploaded += 1
            else:
                already += 1
        # The restored chain may be behind checkpoints signed after the backup: a new
        # epoch, begun with a signed checkpoint of the restored head, says so.
        _say("restore: starting a new audit epoch at the restored head")
        epoch = await start_epoch(pool, checkpoints, signer)
        _say("restore: re-applying the erasure ledger")
        async with pool.acquire() as conn:
            erased_again = await reapply_erasures(conn, objects, also=contents.erased)
            live = await backup.live_recording_keys(conn)
        recordings = [e for e in manifest.objects if e.kind == "recording"]
        progress = Progress("restore: recordings", len(recordings))
        skipped_erased = 0
        for entry in recordings:
            if entry.key not in live:
                skipped_erased += 1
            elif await backup.upload_object(objects, directory, entry, cipher):
                uploaded += 1
            else:
                already += 1
            progress.advance()
        progress.finish()
        _say("restore: reconciling PostgreSQL and S3")
        reconciled = await reconcile(pool, objects, grace=timedelta(0))
        async with pool.acquire() as conn:
            live = await backup.live_recording_keys(conn)
            customers_without_key, recordings_without_key = await backup.keyless(conn)
        in_manifest = {e.key for e in recordings}
        without_audio = sorted(live - in_manifest)
        _say("restore: writing the key snapshot of the restored deployment")
        written = await key_snapshot.write_snapshot(pool, resources.key_objects, masters)
        await resources.audit.append(AuditEntry(
            actor="restore", actor_kind="system", action="backup.restore",
            detail={"backup_created_at": manifest.created_at, "objects_uploaded": uploaded,
                    "customers_erased_again": erased_again.customers,
                    "recordings_erased_again": erased_again.recordings,
                    "stale_pending_rows": len(reconciled.stale_pending_rows),
                    "key_snapshot_read": str(contents.header.snapshot_id),
                    "key_snapshot_written": written.snapshot_id},
        ))
        _say("restore: verifying the audit chain")
        async with pool.acquire() as conn:
            trail = await verify_trail(conn, checkpoints.reader, signer.verifier)
    ok = (trail.ok and not without_audio and not reconciled.failed_deletes
          and not recordings_without_key)
    return {
        "ok": ok,
        "backup_created_at": manifest.created_at,
        "objects_uploaded": uploaded,
        "objects_already_present": already,
        "objects_verified": uploaded + already,
        "recordings_restored": len(live),
        "recordings_skipped_as_erased": skipped_erased,
        "customers_erased_again": erased_again.customers,
        "recordings_erased_again": erased_again.recordings,
        "keys": {**loaded, "snapshot_read": str(contents.header.snapshot_id),
                 "snapshot_created_at": contents.header.created_at.isoformat(),
                 "snapshot_written": written.snapshot_id},
        "customers_without_key": customers_without_key,
        "recordings_without_key": recordings_without_key,
        "reconcile": {"stale_pending_rows": len(reconciled.stale_pending_rows),
                      "orphan_objects": len(reconciled.orphan_objects),
                      "failed_deletes": reconciled.failed_deletes},
        "recordings_without_audio": without_audio,
        "audit": {"ok": trail.ok, "events": trail.events, "first_bad": trail.first_bad,
                  "problem": trail.problem, "checkpoints": trail.checkpoints,
                  "epoch": epoch.epoch, "epoch_starts_at": epoch.seq},
    }


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    root = Path(args.directory).resolve()
    if args.verify:
        if args.keep is not None:
            raise ValueError("--verify checks one backup; it takes no --keep")
        report = asyncio.run(run_verify(settings, root))
        print(json.dumps(report, indent=1))
        return 0 if report["ok"] else 1
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
    snapshot = Path(args.key_snapshot).resolve() if args.key_snapshot else None
    with resolved(settings) as ready:
        report = asyncio.run(run_restore(ready, Path(args.directory).resolve(), snapshot))
    print(json.dumps(report, indent=1))
    return 0 if report["ok"] else 1


def register(sub: Any) -> None:
    p = sub.add_parser("backup", help="encrypted, consistent backup of the metadata and the "
                       "audio (owner keys excluded); --verify checks one")
    p.add_argument("directory", help="a new or empty directory to write the backup into; "
                   "with --keep, the root of dated backup directories; with --verify, a backup")
    p.add_argument("--keep", type=int, metavar="N",
                   help="rotate: back up into DIRECTORY/<UTC time>/ and delete the oldest "
                   "complete backups beyond N (for cron or a scheduled job)")
    p.add_argument("--verify", action="store_true",
                   help="check the backup in DIRECTORY (manifest, sizes, digests, decryption) "
                   "without restoring it; needs only TALLENNE_BACKUP_KEY")
    p.set_defaults(func=cmd_backup)
    p = sub.add_parser("restore", help="restore a backup into an empty deployment")
    p.add_argument("directory", help="a directory written by `tallenne backup`")
    p.add_argument("--key-snapshot", metavar="FILE",
                   help="the current key snapshot as a file (copied out of the old key "
                   "bucket); default: the key bucket's own")
    p.set_defaults(func=cmd_restore)
