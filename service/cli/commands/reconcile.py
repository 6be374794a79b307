"""`tallenne reconcile`: one reconciliation pass of recordings (PostgreSQL against S3), its
progress on stderr and its report printed as JSON on stdout."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from service.cli.commands import Progress, with_resources
from service.recordings.reconciler import reconcile
from service.resources import Resources
from service.settings import Settings


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "reconcile",
        help="remove stale pending recordings and objects with no row; prints the report",
    )
    p.set_defaults(func=cmd_reconcile)


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    async def work(resources: Resources) -> int:
        # The resources only: a started service would run its own background pass, racing
        # this one for the report.
        bar = Progress("reconcile: objects checked")
        report = await reconcile(resources.pool, resources.objects, on_checked=bar.advance)
        bar.finish()
        # The command waits for any other instance's pass, so it never reports a skip.
        shown = {k: v for k, v in dataclasses.asdict(report).items() if k != "skipped"}
        print(json.dumps(shown), flush=True)
        if report.failed_deletes:
            print(f"tallenne: error: {len(report.failed_deletes)} objects could not be deleted",
                  file=sys.stderr, flush=True)
            return 1
        return 0

    return with_resources(settings, work)
