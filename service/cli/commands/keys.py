"""`tallenne keys rotate` and `tallenne keys snapshot`: the key store's master-key rotation
and the key snapshot written on demand. Reports are JSON on stdout.

Rotation: give the service a new TALLENNE_MASTER_KEY with a higher TALLENNE_MASTER_KEY_VERSION
and the old key in TALLENNE_PREVIOUS_MASTER_KEYS ("1:BASE64"), restart it, run
`tallenne keys rotate` (every owner key re-wrapped under the new version, then the key
snapshot overwritten), and once it reports nothing left under older versions remove the old
key from the configuration.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from aiohttp import web

from service.cli.commands import with_app
from service.http.keys import AUDIT, KEY_OBJECTS, KEYRING, POOL
from service.settings import Settings
from storage import key_snapshot, keys
from storage.audit import AuditEntry
from storage.db import Scope, scoped


async def _versions(app: web.Application) -> dict[str, int]:
    async with scoped(app[POOL], Scope.everything()) as conn:
        rows = await conn.fetch(
            "SELECT kek_version, count(*) AS n FROM (SELECT kek_version FROM customer_keys"
            " UNION ALL SELECT kek_version FROM company_keys) k GROUP BY kek_version")
    return {str(r["kek_version"]): int(r["n"]) for r in rows}


def cmd_rotate(args: argparse.Namespace, settings: Settings) -> int:
    async def work(app: web.Application) -> int:
        masters = app[KEYRING].masters
        async with app[POOL].acquire() as conn:
            counts = await keys.rotate(conn, masters)
        info = await key_snapshot.write_snapshot(app[POOL], app[KEY_OBJECTS], masters)
        versions = await _versions(app)
        await app[AUDIT].append(AuditEntry(
            actor="cli", actor_kind="system", action="keys.rotate",
            detail={"kek_version": masters.version, "rewrapped": counts,
                    "key_snapshot": info.snapshot_id},
        ))
        older = sum(n for v, n in versions.items() if int(v) != masters.version)
        print(json.dumps({"ok": older == 0, "kek_version": masters.version,
                          "rewrapped": counts, "keys_by_version": versions,
                          "key_snapshot": info.report()}, indent=1))
        return 0 if older == 0 else 1

    return with_app(settings.model_copy(update={"purge_enabled": False}), work)


def cmd_snapshot(args: argparse.Namespace, settings: Settings) -> int:
    async def work(app: web.Application) -> int:
        info = await key_snapshot.write_snapshot(app[POOL], app[KEY_OBJECTS],
                                                 app[KEYRING].masters)
        await app[AUDIT].append(AuditEntry(
            actor="cli", actor_kind="system", action="keys.snapshot",
            detail={"key_snapshot": info.snapshot_id},
        ))
        print(json.dumps({"ok": True, "bucket": app[KEY_OBJECTS].bucket,
                          "object": key_snapshot.OBJECT_KEY, **info.report()}, indent=1))
        return 0

    return with_app(settings.model_copy(update={"purge_enabled": False}), work)


def register(sub: Any) -> None:
    group = sub.add_parser("keys", help="the key store: master-key rotation, key snapshot")
    commands = group.add_subparsers(dest="sub", required=True)
    p = commands.add_parser("rotate", help="re-wrap every customer and company key under the "
                            "current master key version, then overwrite the key snapshot")
    p.set_defaults(func=cmd_rotate)
    p = commands.add_parser("snapshot", help="overwrite the key snapshot in the key bucket now")
    p.set_defaults(func=cmd_snapshot)
