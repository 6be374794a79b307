"""The server-rendered web UI's shared page machinery: templates, the signed-in person and
the `page` decorator. The sign-in/home page and the language switch are in home.py, the
recordings and customer pages in pages.py.

Pages are declared PUBLIC in the route table so that a browser without a session is sent to
the sign-in page instead of receiving a JSON 401; each page then checks the session and asks
the same policy table (`service.policy.allowed`) for the action it shows.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web

from service.http.api import endpoint_of
from service.http.auth import authenticate
from service.http.errors import Unauthenticated
from service.http.keys import POOL, PRINCIPAL_KEY
from service.http.principal import Principal
from service.logs import actor_var
from service.policy import PUBLIC, allowed
from service.webui import i18n
from storage import accounts
from storage.errors import Forbidden

TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
)
# Times are shown as people in the group read them.
DISPLAY_ZONE = ZoneInfo("Europe/Helsinki")


def local_time(moment: datetime, pattern: str = "%Y-%m-%d %H:%M:%S") -> str:
    return moment.astimezone(DISPLAY_ZONE).strftime(pattern)


TEMPLATES.filters["local"] = local_time
# (string key, path, action); a None path is named but not built yet.
NAVIGATION: tuple[tuple[str, str | None, str], ...] = (
    ("nav.recordings", "/recordings", "recording.search"),
    ("nav.customers", "/customers", "customer.read"),
    ("nav.forms", "/admin/evaluation-forms", "evaluation_form.manage"),
    ("nav.sites", "/admin/sites", "site.manage"),
    ("nav.subjects", "/subjects", "subject.search"),
    ("nav.audit", None, PUBLIC),
)
# The strings the page scripts use (by key prefix); pages carry only these.
SCRIPT_KEYS = (
    "signin", "unreachable", "loading", "error", "search.none", "direction.", "play", "pause",
    "audio.error", "saved", "use.", "channel.", "prohibition.withdraw", "web_events.none",
    "criterion.", "access_request.taken",
)
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
        " img-src 'self'; media-src 'self'; form-action 'self'; frame-ancestors 'none';"
        " base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def render(request: web.Request, template: str, *, status: int = 200,
           principal: Principal | None = None, csrf_token: str = "",
           script_keys: tuple[str, ...] = SCRIPT_KEYS, **context: Any) -> web.Response:
    language = i18n.language_of(request)
    t = i18n.translator(language)
    navigation = []
    if principal is not None:
        for key, path, action in NAVIGATION:
            if allowed(principal.role, action):
                label = t(key)
                navigation.append({"label": label, "path": path,
                                   "current": path is not None and request.path.startswith(path)})
    text = TEMPLATES.get_template(template).render(
        t=t, label=i18n.labeller(language), lang=language, navigation=navigation,
        principal=principal, csrf_token=csrf_token,
        strings=i18n.catalogue(language, script_keys), here=request.path_qs, **context,
    )
    return web.Response(text=text, status=status, content_type="text/html",
                        headers=PAGE_HEADERS)


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
        csrf = await accounts.session_csrf_token(conn, principal.via_session)
    return principal, str(csrf)


async def page_principal(
    request: web.Request, action: str, *, session_of: web.Request | None = None
) -> tuple[Principal, str]:
    """The signed-in person allowed `action` (with their session's CSRF token), made the
    request's principal; strangers go to sign-in, a role without the action to the home
    page. `session_of` is the request whose cookie is checked, when not `request` itself."""
    found = await signed_in(session_of or request)
    if found is None:
        raise web.HTTPSeeOther("/")
    principal, csrf = found
    if not allowed(principal.role, action):
        raise web.HTTPSeeOther("/")
    request[PRINCIPAL_KEY] = principal
    actor_var.set(principal.name)
    return principal, csrf


PageHandler = Callable[[web.Request, Principal, str], Awaitable[web.StreamResponse]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def page(action: str) -> Callable[[PageHandler], Handler]:
    """A page for signed-in people allowed `action`. The person becomes the request's
    principal, so the API's scoped storage and audit helpers apply unchanged. Strangers are
    sent to the sign-in page, a role without the action to the home page (whose navigation
    offers only what the role may do)."""

    def wrap(handler: PageHandler) -> Handler:
        @functools.wraps(handler)
        async def run(request: web.Request) -> web.StreamResponse:
            principal, csrf = await page_principal(request, action)
            return await handler(request, principal, csrf)

        return run

    return wrap


def not_found_page(request: web.Request, principal: Principal, csrf: str) -> web.Response:
    return render(request, "message.html", status=404, principal=principal, csrf_token=csrf,
                  title="404", heading="notfound.title", message="notfound.text")
