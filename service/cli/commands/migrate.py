"""`tallenne migrate`: apply the database migrations as the schema's owner role."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from devstack.environment import resolved
from service.settings import Settings
from storage.migrate import migrate_url


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("migrate", help="apply database migrations")
    p.set_defaults(func=cmd_migrate)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    async def main(ready: Settings) -> int:
        if ready.database_owner_url is None:
            raise ValueError("set TALLENNE_DATABASE_OWNER_URL: migrations run as the role "
                             "that owns the schema, not as the service's own role")
        applied = await migrate_url(ready.database_owner_url.get_secret_value())
        print(f"applied {len(applied)} migration(s); database schema is up to date")
        return 0

    with resolved(settings) as ready:
        return asyncio.run(main(ready))
