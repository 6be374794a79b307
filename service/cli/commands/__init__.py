"""The CLI's commands, one module each, and what they share.

Each module defines `register(sub)` that adds its sub-parsers; `service.cli.main` lists the
modules. A command runs on one database connection (`with_connection`) or on the service's
resources (`with_resources`); none is handed the aiohttp application.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

import asyncpg

from devstack.environment import resolved
from service.resources import Resources, open_resources
from service.settings import Settings
from storage.db import create_pool
from storage.migrate import migrate_url


async def migrate_if_owner(ready: Settings) -> None:
    """Migrations run as the owner role; without its URL the schema is left as it is."""
    if ready.database_owner_url is not None:
        await migrate_url(ready.database_owner_url.get_secret_value())


def with_connection(settings: Settings,
                    work: Callable[[asyncpg.Connection], Awaitable[int]]) -> int:
    """Run `work` on a migrated database of the resolved environment."""

    async def main(ready: Settings) -> int:
        assert ready.database_url is not None
        await migrate_if_owner(ready)
        pool = await create_pool(ready.database_url.get_secret_value(), max_size=2)
        try:
            async with pool.acquire() as conn:
                return await work(conn)
        finally:
            await pool.close()

    with resolved(settings) as ready:
        return asyncio.run(main(ready))


def with_resources(settings: Settings, work: Callable[[Resources], Awaitable[int]]) -> int:
    """Run `work` with the resources of the resolved environment (no service started)."""

    async def main(ready: Settings) -> int:
        async with open_resources(ready) as resources:
            return await work(resources)

    with resolved(settings) as ready:
        return asyncio.run(main(ready))


class Progress:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, label: str, total: int | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._tty = sys.stderr.isatty()
        self._last_printed = -1

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._show()

    def _show(self, final: bool = False) -> None:
        if self.total:
            pct = int(self.done * 100 / self.total) if self.total else 100
            if not final and not self._tty and pct // 10 == self._last_printed // 10:
                return
            self._last_printed = pct
            filled = pct * 30 // 100
            bar = "#" * filled + "-" * (30 - filled)
            text = f"{self.label} [{bar}] {self.done}/{self.total} ({pct}%)"
        else:
            if not final and not self._tty and self.done % 100:
                return
            text = f"{self.label}: {self.done}"
        end = "\n" if final or not self._tty else ""
        prefix = "\r" if self._tty else ""
        print(prefix + text, end=end, file=sys.stderr, flush=True)

    def finish(self) -> None:
        self._show(final=True)
