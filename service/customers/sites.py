"""Site registry endpoints: `GET/PUT /api/v1/sites`, rows `{site, company}` (admin, audited).

A web event whose line names no company takes its site's company (service/web_events.py).
"""

from __future__ import annotations

from aiohttp import web

from schemas.sites import SiteList, SiteOut, SiteRows, SiteUpdate
from service.customers.site_changes import change_sites
from service.http.api import RouteTable, json_response, read_json_rows
from service.http.auth import actor_of, principal_of
from service.http.keys import POOL
from storage import sites

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
    body=SiteRows, response=SiteUpdate, rows_body=True,
)
async def put_sites(request: web.Request) -> web.Response:
    body = await read_json_rows(request, SiteRows, none_given="no sites given",
                                hint="give at least one row")
    changes = await change_sites(request.app[POOL], actor_of(request), body.items)
    async with request.app[POOL].acquire() as conn:
        items = await sites.list_sites(conn, principal_of(request).scope)
    return json_response(SiteUpdate(items=[site_out(s) for s in items], changes=changes))
