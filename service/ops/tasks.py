"""Stopping background tasks at shutdown without ever hanging on one."""

from __future__ import annotations

import asyncio
import io
import logging

logger = logging.getLogger(__name__)

STOP_GRACE_S = 10.0


async def stop_task(task: asyncio.Task[object] | None, grace_s: float = STOP_GRACE_S) -> None:
    """Cancel `task` and wait up to `grace_s` for it; a task that will not end is logged
    with its stack and left behind, so shutdown always finishes."""
    if task is None or task.done():
        return
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=grace_s)
    if not done:
        stack = io.StringIO()
        task.print_stack(file=stack)
        logger.error("background task did not stop", extra={"task": task.get_name(),
                                                            "stack": stack.getvalue()})
