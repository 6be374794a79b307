"""Changing the site registry as a caller, audited (used by the API and the web UI)."""

from __future__ import annotations

from aiohttp import web

from schemas.sites import SiteChange, SiteRow
from service.http.auth import Principal, audit
from service.http.keys import POOL
from storage import sites


async def change_sites(
    request: web.Request, principal: Principal, rows: list[SiteRow]
) -> list[SiteChange]:
    """Apply rows as this caller and audit what changed (also used by the web UI)."""
    async with request.app[POOL].acquire() as conn:
        moves = await sites.apply_rows(conn, rows, principal.scope, principal.name)
    changes = [SiteChange(site=m.site, old_company=m.old_company, company=m.company)
               for m in moves]
    if changes:
        await audit(request, "site.change", target_type="site",
                    detail={"changes": [c.model_dump() for c in changes]})
    return changes
