"""Changing the site registry as a caller, audited (used by the API and the web UI)."""

from __future__ import annotations

import asyncpg

from schemas.sites import SiteChange, SiteRow
from service.http.auth import Actor
from storage import sites


async def change_sites(pool: asyncpg.Pool, actor: Actor, rows: list[SiteRow]) -> list[SiteChange]:
    """Apply rows as this caller and audit what changed (also used by the web UI)."""
    principal = actor.caller
    async with pool.acquire() as conn:
        moves = await sites.apply_rows(conn, rows, principal.scope, principal.name)
    changes = [SiteChange(site=m.site, old_company=m.old_company, company=m.company)
               for m in moves]
    if changes:
        await actor.audit("site.change", target_type="site",
                          detail={"changes": [c.model_dump() for c in changes]})
    return changes
