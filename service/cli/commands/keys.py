"""`tallenne keys rotate` and `tallenne keys snapshot`: the key store's master-key rotation
and the key snapshot written on demand. Reports are JSON on stdout; progress goes to stderr.

Rotation: give the service a new TALLENNE_MASTER_KEY with a higher TALLENNE_MASTER_KEY_VERSION
and the old key in TALLENNE_PREVIOUS_MASTER_KEYS ("1:BASE64"), restart it, run
`tallenne keys rotate` (every owner key re-wrapped under the new version, then the key
snapshot overwritten), and once it reports nothing left under older versions remove the old
key from the configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from service.cli.commands import Progress, with_resources
from service.resources import Resources
from service.settings import Settings
from storage import key_snapshot, keys
from storage.audit import AuditEntry
from storage.db import Scope, scoped


async def _versions(resources: Resources) -> dict[str, int]:
    async with scoped(resources.pool, Scope.everything()) as conn:
        by_version = await key_snapshot.count_by_version(conn)
    return {str(version): n for version, n in by_version.items()}


def cmd_rotate(args: argparse.Namespace, settings: Settings) -> int:
    async def work(resources: Resources) -> int:
        masters = resources.keyring.masters
        before = await _versions(resources)
        older = sum(n for v, n in before.items() if int(v) != masters.version)
        bar = Progress("keys rotate: re-wrapped", older or None)
        async with resources.pool.acquire() as conn:
            counts = await keys.rotate(conn, masters, on_batch=bar.advance)
        bar.finish()
        print("keys rotate: writing the key snapshot", file=sys.stderr, flush=True)
        info = await key_snapshot.write_snapshot(resources.pool, resources.key_objects, masters)
        versions = await _versions(resources)
        await resources.audit.append(AuditEntry(
            actor="cli", actor_kind="system", action="keys.rotate",
            detail={"kek_version": masters.version, "rewrapped": counts,
                    "key_snapshot": info.snapshot_id},
        ))
        older = sum(n for v, n in versions.items() if int(v) != masters.version)
        print(json.dumps({"ok": older == 0, "kek_version": masters.version,
                          "rewrapped": counts, "keys_by_version": versions,
                          "key_snapshot": info.report()}, indent=1))
        return 0 if older == 0 else 1

    return with_resources(settings, work)


def cmd_snapshot(args: argparse.Namespace, settings: Settings) -> int:
    async def work(resources: Resources) -> int:
        info = await key_snapshot.write_snapshot(resources.pool, resources.key_objects,
                                                 resources.keyring.masters)
        await resources.audit.append(AuditEntry(
            actor="cli", actor_kind="system", action="keys.snapshot",
            detail={"key_snapshot": info.snapshot_id},
        ))
        print(json.dumps({"ok": True, "bucket": resources.key_objects.bucket,
                          "object": key_snapshot.OBJECT_KEY, **info.report()}, indent=1))
        return 0

    return with_resources(settings, work)


def register(sub: Any) -> None:
    group = sub.add_parser("keys", help="the key store: master-key rotation, key snapshot")
    commands = group.add_subparsers(dest="sub", required=True)
    p = commands.add_parser("rotate", help="re-wrap every customer and company key under the "
                            "current master key version, then overwrite the key snapshot")
    p.set_defaults(func=cmd_rotate)
    p = commands.add_parser("snapshot", help="overwrite the key snapshot in the key bucket now")
    p.set_defaults(func=cmd_snapshot)
