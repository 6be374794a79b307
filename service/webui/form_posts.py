"""HTML form posts of the web UI: a signed-in person allowed the action, and the CSRF token
of their session in the form's `csrf_token` field."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from service.http.principal import Principal
from service.webui import i18n
from service.webui.render import page_principal, render
from storage import accounts

Fields = MultiDictProxy[Any]
FormPostHandler = Callable[[web.Request, Principal, str, Fields], Awaitable[web.StreamResponse]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def form_post(action: str) -> Callable[[FormPostHandler], Handler]:
    """An HTML form post of a signed-in person allowed `action`, with the CSRF token of their
    session in the `csrf_token` field."""

    def wrap(handler: FormPostHandler) -> Handler:
        @functools.wraps(handler)
        async def run(request: web.Request) -> web.StreamResponse:
            # The session is checked as for viewing a page (a GET needs no CSRF header); the
            # token is then taken from the form and compared by the API's own function.
            principal, csrf = await page_principal(
                request, action, session_of=request.clone(method="GET"))
            fields = await request.post()
            sent = fields.get("csrf_token")
            if not isinstance(sent, str) or not accounts.csrf_matches(csrf, sent):
                return render(request, "message.html", status=400, principal=principal,
                              csrf_token=csrf, title=i18n.translator(
                                  i18n.language_of(request))("error"),
                              heading="error", message="forms.csrf")
            return await handler(request, principal, csrf, fields)

        return run

    return wrap
