"""`tallenne audit …`: verify the audit trail, export its signed checkpoints for a witness."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from devstack.environment import resolved
from service.cli.commands import migrate_if_owner
from service.settings import Settings
from storage.db import create_pool


def register(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the audit trail").add_subparsers(dest="sub",
                                                                          required=True)
    p = audit.add_parser("verify", help="verify the hash chain against the signed "
                         "checkpoints; exit 0 only when intact")
    p.set_defaults(func=cmd_audit_verify)
    p = audit.add_parser("export-checkpoints", help="print the signed checkpoints "
                         "(C2SP signed notes) and their verifier key as JSON, for an outside "
                         "witness")
    p.set_defaults(func=cmd_audit_export_checkpoints)


def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    """The chain recomputed and held against every signed checkpoint."""
    from service.audit.checkpoints import checkpoint_bucket, note_signer
    from storage.checkpoints import verify_trail

    async def main(ready: Settings) -> int:
        assert ready.database_url is not None
        signer = note_signer(ready)
        bucket = checkpoint_bucket(ready)
        await migrate_if_owner(ready)
        pool = await create_pool(ready.database_url.get_secret_value(), max_size=2)
        try:
            async with pool.acquire() as conn:
                report = await verify_trail(conn, bucket.reader, signer.verifier)
        finally:
            await pool.close()
            await bucket.close()
        print(json.dumps({"ok": report.ok, "events": report.events,
                          "first_bad": report.first_bad, "problem": report.problem,
                          "checkpoints": report.checkpoints}))
        return 0 if report.ok else 1

    with resolved(settings) as ready:
        return asyncio.run(main(ready))


def cmd_audit_export_checkpoints(args: argparse.Namespace, settings: Settings) -> int:
    """Every signed checkpoint of the bucket, with the key that verifies them, for a witness."""
    from service.audit.checkpoints import checkpoint_bucket, note_signer
    from storage.checkpoints import parse_key, signed_notes

    async def main(ready: Settings) -> int:
        verifier = note_signer(ready).verifier
        bucket = checkpoint_bucket(ready)
        try:
            notes = await signed_notes(bucket.reader)
        finally:
            await bucket.close()
        checkpoints = []
        for stored in notes:
            epoch, seq = parse_key(stored.key) or (0, 0)
            checkpoints.append({"object_key": stored.key, "epoch": epoch, "seq": seq,
                                "note": stored.note, "deleted": stored.deleted})
        print(json.dumps({"origin": verifier.name, "verifier_key": verifier.verifier_key(),
                          "checkpoints": checkpoints}, indent=1))
        return 0

    with resolved(settings) as ready:
        return asyncio.run(main(ready))
