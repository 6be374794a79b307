"""Long-running CLI commands (import, purge, backup, restore…), one module each.

Each module defines `register(sub)` that adds its sub-parser; `service.cli.main` discovers them.
Commands run against the same resources the service uses, through `with_app`.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

from devstack.environment import resolved
from service.resources import Resources, open_resources
from service.settings import Settings


@asynccontextmanager
async def app_resources(settings: Settings) -> AsyncIterator[web.Application]:
    """The application with its pool, object store, key ring and audit log started, not served.

    Commands read `app[POOL]`, `app[OBJECTS]`, `app[KEYRING]`, `app[AUDIT]` from it.
    """
    from service.app import create_app

    # Export jobs are the serving replicas' work; a one-off command does not pick them up.
    app = create_app(settings.model_copy(update={"export_enabled": False}))
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        yield app
    finally:
        await runner.cleanup()


def with_app(settings: Settings, work: Callable[[web.Application], Awaitable[int]]) -> int:
    """Run `work` with the started application of the resolved environment."""

    async def main(ready: Settings) -> int:
        async with app_resources(ready) as app:
            return await work(app)

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
