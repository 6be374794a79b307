"""`tallenne purge [--dry-run] [--now ISO]`: remove what has expired; a bar on stderr, the
summary JSON on stdout."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from service.cli.commands import Progress, with_resources
from service.resources import Resources
from service.retention import scheduler as purge_scheduler
from service.settings import Settings
from storage import purge


def _as_of(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("--now needs a time zone offset, e.g. 2030-01-01T00:00:00+02:00")
    return moment


def cmd_purge(args: argparse.Namespace, settings: Settings) -> int:
    as_of = _as_of(args.now)

    async def work(resources: Resources) -> int:
        if args.dry_run:
            report = await purge_scheduler.preview(resources, as_of, actor="cli",
                                                   actor_kind="system", role="admin")
        else:
            async with resources.pool.acquire() as conn, conn.transaction(readonly=True):
                expected = await purge.preview(conn, as_of)
            bar = Progress("purge", sum(b.items for b in expected.expired) or None)

            def advance(kind: str, company: str, items: int, size: int) -> None:
                bar.advance(items)

            async with purge_scheduler.one_off_purge_context(resources) as context:
                report = await purge_scheduler.run_now(context, as_of, actor="cli",
                                                       role="admin", on_progress=advance)
            bar.finish()
        summary: dict[str, Any] = report.model_dump(mode="json")
        print(json.dumps(summary, ensure_ascii=False))
        return 0 if report.state == "finished" else 1

    return with_resources(settings, work)


def register(sub: Any) -> None:
    p = sub.add_parser("purge", help="purge what has expired (progress on stderr, summary on "
                       "stdout)")
    p.add_argument("--dry-run", action="store_true", help="only count; change nothing")
    p.add_argument("--now", metavar="ISO", help="judge expiry as of this time (tests, drills)")
    p.set_defaults(func=cmd_purge)
