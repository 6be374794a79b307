"""The server-rendered web UI: the sign-in page and the signed-in home page.

Sign-in and sign-out go through the JSON API (`/api/v1/session`) from a small script; the
pages themselves show nothing but the form until a live session cookie is presented.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
from aiohttp import web

from service.api import endpoint_of, routes
from service.auth import Principal, authenticate
from service.policy import PUBLIC
from service.typedefs import POOL
from storage import accounts
from storage.crypto import token_digest
from storage.errors import Forbidden, Unauthenticated

TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
)
# Later pages hang here; until they exist the navigation names them without linking.
NAVIGATION = ("Recordings", "Customers", "Audit")
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
        " img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def render(template: str, **context: object) -> web.Response:
    text = TEMPLATES.get_template(template).render(navigation=NAVIGATION, **context)
    return web.Response(text=text, content_type="text/html", headers=PAGE_HEADERS)


async def signed_in(request: web.Request) -> tuple[Principal, str] | None:
    """The person behind the session cookie and their CSRF token, or None."""
    endpoint = endpoint_of(request)
    if endpoint is None or request.headers.get("Authorization"):
        return None
    try:
        principal = await authenticate(request, endpoint)
    except (Unauthenticated, Forbidden):
        return None
    if principal.via_session is None:
        return None
    async with request.app[POOL].acquire() as conn:
        csrf = await conn.fetchval(
            "SELECT csrf_token FROM sessions WHERE digest = $1",
            token_digest(principal.via_session),
        )
    return principal, str(csrf)


@routes.route("GET", "/", action=PUBLIC, summary="The web UI", tag="ui", in_schema=False)
async def home(request: web.Request) -> web.Response:
    found = await signed_in(request)
    if found is None:
        return render("login.html", title="Sign in")
    principal, csrf = found
    account = principal.account
    companies = list(account.company_codes)
    if account.all_companies:
        async with request.app[POOL].acquire() as conn:
            companies = [c.code for c in await accounts.list_companies(conn)]
    return render("home.html", title="tallenne", name=account.name, role=account.role,
                  companies=companies, all_companies=account.all_companies, csrf_token=csrf)
