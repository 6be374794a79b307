"""The companies a web UI page offers to choose from."""

from __future__ import annotations

from aiohttp import web

from service.http.keys import POOL
from service.http.principal import Principal
from storage import accounts


async def company_codes(request: web.Request, principal: Principal) -> list[str]:
    if not principal.account.all_companies:
        return sorted(principal.account.company_codes)
    async with request.app[POOL].acquire() as conn:
        return [c.code for c in await accounts.list_companies(conn)]
