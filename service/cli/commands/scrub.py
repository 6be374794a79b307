"""`tallenne scrub [--rate MB/s]`: one full pass of the scrub (every stored recording re-read
and its SHA-256 verified); progress on stderr, the summary JSON on stdout, exit status 1
when a recording failed verification or its object is missing."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from service.cli.commands import Progress, with_resources
from service.recordings.scrub import ScrubReport, scrub
from service.resources import Resources
from service.settings import Settings


def cmd_scrub(args: argparse.Namespace, settings: Settings) -> int:
    async def work(resources: Resources) -> int:
        bar: Progress | None = None

        def started(report: ScrubReport) -> None:
            nonlocal bar
            bar = Progress("scrub", report.due)

        def advanced(report: ScrubReport) -> None:
            if bar is not None:
                bar.advance(report.checked - bar.done)

        def waiting() -> None:
            print("tallenne: another instance is scrubbing; waiting for it to finish",
                  file=sys.stderr, flush=True)

        report = await scrub(resources, verified_before=datetime.now(UTC),
                             rate=args.rate * 1e6 if args.rate else None, actor="cli",
                             on_start=started, on_progress=advanced, on_wait=waiting)
        if bar is not None:
            bar.finish()
        print(json.dumps(report.summary()), flush=True)
        if report.findings:
            print(f"tallenne: error: {len(report.corrupt)} recordings failed verification,"
                  f" {len(report.missing)} objects are missing", file=sys.stderr, flush=True)
            return 1
        return 1 if report.stopped else 0

    # The schedule belongs to the serving replicas: this one-off run starts none.
    return with_resources(settings, work)


def _rate(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("the rate is MB per second, 0 or more")
    return value


def register(sub: Any) -> None:
    p = sub.add_parser(
        "scrub", help="re-read every stored recording and verify its SHA-256 (progress on "
        "stderr, summary on stdout; exit status 1 on findings)")
    p.add_argument("--rate", type=_rate, default=0.0, metavar="MB/S",
                   help="read at most this many MB of audio per second (default: no limit)")
    p.set_defaults(func=cmd_scrub)
