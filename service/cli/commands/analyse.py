"""`tallenne analyse [--missing|--all]`: analyse stored calls again from their audio (those
stored before analysis existed, or whose analysis failed), with a progress bar."""

from __future__ import annotations

import argparse
import json
from typing import Any

from service.cli.commands import Progress, with_resources
from service.recordings.analysis import analyse_stored
from service.resources import Resources
from service.settings import Settings
from storage import recordings as store
from storage.db import Scope, scoped
from storage.errors import StorageError

PAGE = 200


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "analyse", help="analyse stored calls (talk, silence, overtalk, flags, peaks)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--missing", action="store_true",
                       help="only calls without an analysis (the default)")
    which.add_argument("--all", action="store_true", help="every stored call again")
    p.set_defaults(func=cmd_analyse)


def cmd_analyse(args: argparse.Namespace, settings: Settings) -> int:
    missing_only = not args.all

    async def work(resources: Resources) -> int:
        pool = resources.pool
        async with scoped(pool, Scope.everything()) as conn:
            total = await store.count_to_analyse(conn, missing_only=missing_only)
        progress = Progress("analyse: calls", total)
        analysed = failed = 0
        after = None
        while True:
            async with scoped(pool, Scope.everything()) as conn:
                page = await store.to_analyse(conn, missing_only=missing_only, after=after,
                                              limit=PAGE)
            if not page:
                break
            for recording_id in page:
                try:
                    done = await analyse_stored(resources, recording_id)
                except StorageError:  # erased meanwhile, key destroyed, audio damaged
                    done = False
                analysed += done
                failed += not done
                progress.advance()
            after = page[-1]
        progress.finish()
        print(f"{analysed} analysed, {failed} not analysable")
        print(json.dumps({"analysed": analysed, "failed": failed}))
        return 0

    return with_resources(settings, work)
