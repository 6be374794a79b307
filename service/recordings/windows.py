"""Replay windows: one audit event per recording, principal and reason per ten minutes, with
the window's later requests (and their byte ranges) summarised in its row.

The first request of a window waits for its audit event before any byte leaves. Later
requests only add their range, gathered in memory and written a batch at a time beside the
streams, so a listening session's many small range requests cost no round trip of their own.
A crash may lose the last moment's ranges, never the audit event.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import asyncpg
from aiohttp import web

from service.http.auth import Actor
from service.http.keys import POOL, REPLAY_WINDOWS
from storage import recordings as store
from storage.db import Scope, scoped
from storage.recordings import Recording

logger = logging.getLogger(__name__)

WindowKey = tuple[uuid.UUID, str, str]  # recording, principal, reason


def window_key(actor: Actor, recording_id: uuid.UUID, reason: str) -> WindowKey:
    principal = actor.caller
    return recording_id, f"{principal.kind}:{principal.account.id}", reason


async def note_replay(
    conn: asyncpg.Connection, windows: ReplayWindows, actor: Actor,
    recording: Recording, reason: str, byte_range: str,
) -> None:
    """Note a replay in its window, opening the window (and its audit event) if none is
    open; the window is then remembered as open in this process."""
    key = window_key(actor, recording.id, reason)

    async def open_event() -> int:
        return await actor.audit(
            "recording.replay", target_type="recording",
            target_id=str(recording.id), company=recording.company, reason=reason,
            subject_ids=[recording.id, *filter(None, [recording.customer_id])],
            detail={"range": byte_range, "grouped_minutes": 10},
        )

    window = await store.note_replay(
        conn, recording, principal=key[1], reason=reason, byte_range=byte_range,
        open_event=open_event,
    )
    windows.remember(key, window)


@dataclass
class PendingRanges:
    """Requests of one window not yet written; the latest request's actor stands in for them
    all should the window have closed meanwhile (a new window and audit event open for it)."""

    actor: Actor
    recording: Recording
    reason: str
    requests: int = 0
    ranges: list[str] = field(default_factory=list)

    def add(self, actor: Actor, byte_range: str) -> None:
        self.actor = actor
        self.requests += 1
        if len(self.ranges) < store.MAX_SUMMARISED_RANGES:
            self.ranges.append(byte_range)


class ReplayWindows:
    """The replay windows this process knows to be open, and the ranges still to be noted
    in them."""

    MARGIN_S = 30.0  # forget a window a little before the database closes it
    LIMIT = 10_000
    FLUSH_S = 0.2  # how long ranges gather before they are written
    FLUSH_AT = 500  # windows with pending ranges that trigger a write at once
    DRAIN_S = 10.0  # how long shutdown waits for ranges still being written

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._open: dict[WindowKey, float] = {}
        self._pending: dict[WindowKey, PendingRanges] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._writes: set[asyncio.Task[None]] = set()

    def is_open(self, key: WindowKey) -> bool:
        until = self._open.get(key)
        if until is None:
            return False
        if until <= time.monotonic():
            del self._open[key]
            return False
        return True

    def remember(self, key: WindowKey, window: store.ReplayWindow) -> None:
        now = time.monotonic()
        if len(self._open) >= self.LIMIT:
            self._open = {k: t for k, t in self._open.items() if t > now}
        if len(self._open) < self.LIMIT:
            self._open[key] = now + window.open_for.total_seconds() - self.MARGIN_S

    def note_later(
        self, actor: Actor, recording: Recording, reason: str, byte_range: str
    ) -> None:
        """Add this request's range to its open window with the next batch."""
        key = window_key(actor, recording.id, reason)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = PendingRanges(actor, recording, reason)
        pending.add(actor, byte_range)
        if len(self._pending) >= self.FLUSH_AT:
            self._write_now()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.FLUSH_S, self._write_now)

    def _write_now(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, {}
        if batch:
            task = asyncio.create_task(self._write(batch))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def _write(self, batch: dict[WindowKey, PendingRanges]) -> None:
        entries = [
            store.ReplayRanges(key[0], key[1], key[2], pending.requests, tuple(pending.ranges))
            for key, pending in batch.items()
        ]
        try:
            # Bookkeeping for windows whose audit events are on record: the batch is scoped
            # to the companies of its recordings only, and its commit need not reach disk.
            scope = Scope.of(p.recording.company_id for p in batch.values())
            async with scoped(self._pool, scope, durable=False) as conn:
                closed = await store.add_replay_ranges(conn, entries)
            for entry in closed:
                await self._reopen(entry, batch[(entry.recording_id, entry.principal,
                                                 entry.reason)])
        except Exception as exc:
            logger.warning("replay ranges not noted", extra={
                "windows": len(entries), "error": exc.__class__.__name__})

    async def _reopen(self, entry: store.ReplayRanges, pending: PendingRanges) -> None:
        """A window closed elsewhere (or removed): open a new one, with its audit event,
        for the requests this process still had to note."""
        first, *rest = entry.ranges
        async with scoped(self._pool, pending.actor.caller.scope, durable=False) as conn:
            await note_replay(conn, self, pending.actor, pending.recording, entry.reason, first)
            if entry.requests > 1:
                await store.add_replay_ranges(conn, [replace(
                    entry, requests=entry.requests - 1, ranges=tuple(rest))])

    async def drain(self) -> None:
        """Write what is pending now and wait (a bounded time) for the writes."""
        self._write_now()
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=self.DRAIN_S)


async def replay_windows_ctx(app: web.Application) -> AsyncIterator[None]:
    windows = ReplayWindows(app[POOL])
    app[REPLAY_WINDOWS] = windows
    yield
    await windows.drain()
