"""The web UI's home page (the sign-in page for a stranger) and its language switch."""

from __future__ import annotations

from aiohttp import web
from yarl import URL

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


def _local_path(back: str) -> str:
    """`back` if it is a path of this site, else "/": never an open redirect. Control
    characters are refused outright (a URL drops tabs and line breaks, so
    a slash, a tab and "/evil.example" would leave as "//evil.example"), and the path is
    checked again as the Location header will carry it."""
    if not back.isprintable() or "\\" in back:
        return "/"
    sent = str(URL(back))
    if not sent.startswith("/") or sent.startswith("//") or URL(sent).is_absolute():
        return "/"
    return sent


@routes.route("GET", "/ui/lang/{lang}", action=PUBLIC, summary="Choose the UI language",
              tag="ui", in_schema=False)
async def choose_language(request: web.Request) -> web.Response:
    """Sets the `lang` cookie and goes back to the page the link was on."""
    language = request.match_info["lang"]
    redirect = web.HTTPSeeOther(_local_path(request.query.get("back", "/")))
    if language in i18n.LANGUAGES:
        redirect.set_cookie(i18n.COOKIE, language, max_age=365 * 24 * 3600, path="/",
                            samesite="Strict", httponly=True)
    raise redirect
