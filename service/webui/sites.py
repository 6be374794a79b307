"""The web UI's admin page of the site registry: list the sites, add or move one, remove one.
Plain HTML form posts answered with a redirect; the writes are the API's
(service/sites.py `change_sites`), audited the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from pydantic import ValidationError

from schemas.sites import SiteRow
from service.customers.site_changes import change_sites
from service.http.api import RouteTable
from service.http.auth import actor_of
from service.http.keys import POOL
from service.http.principal import Principal
from service.policy import PUBLIC
from service.webui import i18n
from service.webui.companies import company_codes
from service.webui.form_posts import Fields, form_post
from service.webui.render import page, render
from storage import sites
from storage.errors import InvalidInput

routes = RouteTable()

ACTION = "site.manage"
PATH = "/admin/sites"
NOTICES = {"saved": "sites.saved", "removed": "sites.removed"}


async def _page(request: web.Request, principal: Principal, csrf: str, *, status: int = 200,
                submitted: dict[str, Any] | None = None, problems: Sequence[str] = (),
                notice: str | None = None) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        registered = await sites.list_sites(conn, principal.scope)
    t = i18n.translator(i18n.language_of(request))
    return render(request, "sites.html", status=status, principal=principal, csrf_token=csrf,
                  title=t("sites.title"), sites=registered,
                  companies=await company_codes(request, principal),
                  submitted=submitted or {}, problems=problems, notice=notice)


@routes.route("GET", PATH, action=PUBLIC, summary="Site registry page", tag="ui",
              in_schema=False)
@page(ACTION)
async def sites_page(request: web.Request, principal: Principal, csrf: str) -> web.Response:
    notice = None
    key = NOTICES.get(request.query.get("done", ""))
    if key is not None:
        notice = i18n.translator(i18n.language_of(request))(
            key, site=request.query.get("site", ""))
    return await _page(request, principal, csrf, notice=notice)


def _text(fields: Fields, name: str) -> str:
    value = fields.get(name, "")
    return value.replace("\x00", "").strip() if isinstance(value, str) else ""


async def _apply(request: web.Request, principal: Principal, csrf: str, site: str,
                 company: str | None) -> web.Response:
    submitted = {"site": site, "company": company}
    try:
        row = SiteRow(site=site, company=company)
        await change_sites(request.app[POOL], actor_of(request), [row])
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                    for e in exc.errors(include_input=False)]
        return await _page(request, principal, csrf, status=422, submitted=submitted,
                           problems=problems)
    except InvalidInput as exc:
        return await _page(request, principal, csrf, status=422, submitted=submitted,
                           problems=[msg for _, msg in exc.errors] or [exc.detail])
    done = "saved" if company is not None else "removed"
    raise web.HTTPSeeOther(f"{PATH}?{urlencode({'done': done, 'site': site})}")


@routes.route("POST", PATH, action=PUBLIC, summary="Add or move a site (web UI)", tag="ui",
              in_schema=False)
@form_post(ACTION)
async def set_site_post(request: web.Request, principal: Principal, csrf: str,
                        fields: Fields) -> web.Response:
    return await _apply(request, principal, csrf, _text(fields, "site"),
                        _text(fields, "company"))


@routes.route("POST", PATH + "/remove", action=PUBLIC, summary="Remove a site (web UI)",
              tag="ui", in_schema=False)
@form_post(ACTION)
async def remove_site_post(request: web.Request, principal: Principal, csrf: str,
                           fields: Fields) -> web.Response:
    return await _apply(request, principal, csrf, _text(fields, "site"), None)
