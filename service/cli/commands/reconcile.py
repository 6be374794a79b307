"""`tallenne reconcile`: one reconciliation pass of recordings (PostgreSQL against S3), its
report printed as JSON on stdout."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from typing import Any

from aiohttp import web

from devstack.environment import resolved
from service.http.keys import OBJECTS, POOL, SETTINGS
from service.recordings.reconciler import reconcile
from service.settings import Settings


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "reconcile",
        help="remove stale pending recordings and objects with no row; prints the report",
    )
    p.set_defaults(func=cmd_reconcile)


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from service.app import database_ctx, object_store_ctx

    async def main(ready: Settings) -> int:
        # Only the pool and the object store: the full app would start its own background
        # pass, racing this one for the report.
        app = web.Application()
        app[SETTINGS] = ready
        app.cleanup_ctx.extend([database_ctx, object_store_ctx])
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        try:
            report = await reconcile(app[POOL], app[OBJECTS])
        finally:
            await runner.cleanup()
        # The command waits for any other instance's pass, so it never reports a skip.
        shown = {k: v for k, v in dataclasses.asdict(report).items() if k != "skipped"}
        print(json.dumps(shown), flush=True)
        if report.failed_deletes:
            print(f"tallenne: error: {len(report.failed_deletes)} objects could not be deleted",
                  file=sys.stderr, flush=True)
            return 1
        return 0

    with resolved(settings) as ready:
        return asyncio.run(main(ready))
