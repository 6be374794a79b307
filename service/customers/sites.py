"""Site registry endpoints: `GET/PUT /api/v1/sites`, rows `{site, company}` (admin, audited).

A web event whose line names no company takes its site's company (service/web_events.py).
"""

from __future__ import annotations

from aiohttp import web

from schemas.sites import SiteList, SiteOut, SiteRows, SiteUpdate
from service.customers.site_changes import change_sites
from service.http.api import JSON_BODY_LIMIT, RouteTable, decode_json, json_response, parse_model
from service.http.auth import actor_of, principal_of
from service.http.errors import TooLarge
from service.http.keys import POOL
from storage import sites
from storage.errors import InvalidInput

routes = RouteTable()


def site_out(site: sites.Site) -> SiteOut:
    return SiteOut(site=site.site, company=site.company, updated_by=site.updated_by,
                   updated_at=site.updated_at)


@routes.route(
    "GET", "/api/v1/sites", action="site.manage", tag="web-events",
    summary="The site registry: each web site and the company its events belong to",
    response=SiteList,
)
async def list_sites(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        items = await sites.list_sites(conn, principal_of(request).scope)
    return json_response(SiteList(items=[site_out(s) for s in items]))


@routes.route(
    "PUT", "/api/v1/sites", action="site.manage", tag="web-events",
    summary="Add, move or (company null) remove sites; takes a list of rows",
    body=SiteRows, response=SiteUpdate,
)
async def put_sites(request: web.Request) -> web.Response:
    raw_bytes = await request.content.read(JSON_BODY_LIMIT + 1)
    if len(raw_bytes) > JSON_BODY_LIMIT:
        raise TooLarge(f"the JSON body exceeds {JSON_BODY_LIMIT} bytes")
    raw = decode_json(raw_bytes or b"null")
    # Both a bare list of rows (the contract) and {"items": [...]} are accepted.
    body = parse_model(SiteRows, {"items": raw} if isinstance(raw, list) else raw, "body")
    if not body.items:
        raise InvalidInput("no sites given", [(["body"], "give at least one row")])
    changes = await change_sites(request.app[POOL], actor_of(request), body.items)
    async with request.app[POOL].acquire() as conn:
        items = await sites.list_sites(conn, principal_of(request).scope)
    return json_response(SiteUpdate(items=[site_out(s) for s in items], changes=changes))
