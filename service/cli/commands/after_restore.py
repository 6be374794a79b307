"""`tallenne after-restore`: what a deployment needs after PostgreSQL was restored by other
means than `tallenne restore` (a point-in-time recovery from the WAL archive, a promoted old
standby, a snapshot of the volume).

Such a restore brings back rows that were deleted after its target time: customers erased
since, their keys included, and calls erased one by one. It also moves the audit chain back
behind checkpoints signed since. The command, run once the restored database is up:
1. starts a new audit epoch with a signed checkpoint of the restored head (verification
   otherwise reports the roll-back as tampering);
2. erases again everyone in the erasure ledger (the bucket's copy, which the database
   restore did not touch, and the current key snapshot's list of erased customers);
3. writes the key snapshot of the restored deployment.
It reports JSON on stdout, progress on stderr, and exits 0 once the audit trail verifies.
Run again, it erases nothing twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any
from uuid import UUID

from devstack.environment import resolved
from service.audit.checkpoints import note_signer, opened_checkpoint_bucket
from service.cli.commands.backup import master_keys
from service.resources import open_resources
from service.settings import Settings
from storage import key_snapshot
from storage.audit import AuditEntry
from storage.checkpoints import start_epoch, verify_trail
from storage.erasure import reapply_erasures


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def run_after_restore(settings: Settings) -> dict[str, Any]:
    masters = master_keys(settings)
    signer = note_signer(settings)
    async with open_resources(settings) as resources, \
            opened_checkpoint_bucket(settings) as checkpoints:
        pool, objects = resources.pool, resources.objects
        _say("after-restore: reading the erased customers of the key snapshot")
        erased: dict[UUID, str] = {}
        snapshot_read = None
        if await resources.key_objects.exists(key_snapshot.OBJECT_KEY):
            snapshot = await key_snapshot.SnapshotSource(
                store=resources.key_objects).read(masters)
            erased, snapshot_read = snapshot.erased, str(snapshot.header.snapshot_id)
        else:
            _say("after-restore: no key snapshot yet; the bucket's erasure ledger alone")
        _say("after-restore: starting a new audit epoch at the restored head")
        epoch = await start_epoch(pool, checkpoints, signer)
        _say("after-restore: re-applying the erasure ledger")
        async with pool.acquire() as conn:
            again = await reapply_erasures(conn, objects, also=erased)
        _say("after-restore: writing the key snapshot of the restored deployment")
        written = await key_snapshot.write_snapshot(pool, resources.key_objects, masters)
        await resources.audit.append(AuditEntry(
            actor="after-restore", actor_kind="system", action="backup.after_restore",
            detail={"customers_erased_again": again.customers,
                    "recordings_erased_again": again.recordings,
                    "epoch": epoch.epoch, "key_snapshot_read": snapshot_read,
                    "key_snapshot_written": written.snapshot_id},
        ))
        _say("after-restore: verifying the audit chain")
        async with pool.acquire() as conn:
            trail = await verify_trail(conn, checkpoints.reader, signer.verifier)
    return {
        "ok": trail.ok,
        "epoch": epoch.epoch,
        "customers_erased_again": again.customers,
        "recordings_erased_again": again.recordings,
        "key_snapshot_written": written.snapshot_id,
        "audit_chain": {"ok": trail.ok, "events": trail.events, "problem": trail.problem},
    }


def cmd_after_restore(args: argparse.Namespace, settings: Settings) -> int:
    with resolved(settings) as ready:
        report = asyncio.run(run_after_restore(ready))
    print(json.dumps(report, indent=1))
    return 0 if report["ok"] else 1


def register(sub: Any) -> None:
    p = sub.add_parser(
        "after-restore",
        help="after PostgreSQL was restored by other means (point-in-time recovery): a new "
        "audit epoch, erasures re-applied, the key snapshot rewritten")
    p.set_defaults(func=cmd_after_restore)
