"""The web UI's home page (the sign-in page for a stranger) and its language switch."""

from __future__ import annotations

from aiohttp import web

from service.http.api import RouteTable
from service.http.keys import POOL
from service.policy import PUBLIC
from service.webui import i18n
from service.webui.render import render, signed_in
from storage import accounts

routes = RouteTable()


@routes.route("GET", "/", action=PUBLIC, summary="The web UI", tag="ui", in_schema=False)
async def home(request: web.Request) -> web.Response:
    found = await signed_in(request)
    if found is None:
        return render(request, "login.html", script_keys=("signin", "unreachable"),
                      title=i18n.translator(i18n.language_of(request))("signin"))
    principal, csrf = found
    account = principal.account
    companies = list(account.company_codes)
    if account.all_companies:
        async with request.app[POOL].acquire() as conn:
            companies = [c.code for c in await accounts.list_companies(conn)]
    return render(request, "home.html", title="tallenne", principal=principal,
                  csrf_token=csrf, name=account.name, role=account.role,
                  companies=companies, all_companies=account.all_companies)


@routes.route("GET", "/ui/lang/{lang}", action=PUBLIC, summary="Choose the UI language",
              tag="ui", in_schema=False)
async def choose_language(request: web.Request) -> web.Response:
    """Sets the `lang` cookie and goes back to the page the link was on."""
    language = request.match_info["lang"]
    back = request.query.get("back", "/")
    # Only a path of this site: never an open redirect.
    if not back.startswith("/") or back.startswith("//") or "\\" in back:
        back = "/"
    redirect = web.HTTPSeeOther(back)
    if language in i18n.LANGUAGES:
        redirect.set_cookie(i18n.COOKIE, language, max_age=365 * 24 * 3600, path="/",
                            samesite="Strict", httponly=True)
    raise redirect
