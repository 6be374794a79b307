"""Web UI pages of the quality team and customer service: call search, one call (player,
metadata, evaluations), customer lookup and one customer.

Data a page shows when it is first rendered goes through the same scoped storage calls and
the same audit events as the JSON API; everything after that (search pages, replay,
evaluations, prohibitions) is fetched by static/*.js from the API itself.
"""

from __future__ import annotations

import uuid

from aiohttp import web

from service import i18n
from service.api import routes
from service.auth import Principal, audit
from service.policy import PUBLIC, allowed
from service.recordings import load_recording
from service.typedefs import POOL
from service.webui import not_found_page, page, render
from storage import accounts
from storage import recordings as store
from storage.db import scoped
from storage.errors import NotFound

SPEEDS = ("0.75", "1", "1.25", "1.5", "1.75", "2")


async def _company_codes(request: web.Request, principal: Principal) -> list[str]:
    if not principal.account.all_companies:
        return sorted(principal.account.company_codes)
    async with request.app[POOL].acquire() as conn:
        return [c.code for c in await accounts.list_companies(conn)]


def _uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


@routes.route("GET", "/recordings", action=PUBLIC, summary="Call search page", tag="ui",
              in_schema=False)
@page("recording.search")
async def search_page(request: web.Request, principal: Principal, csrf: str) -> web.Response:
    t = i18n.translator(i18n.language_of(request))
    return render(request, "recordings.html", principal=principal, csrf_token=csrf,
                  title=t("search.title"), companies=await _company_codes(request, principal),
                  directions=("inbound", "outbound", "internal"),
                  may_read_customers=allowed(principal.role, "customer.read"))


@routes.route("GET", "/recordings/{id}", action=PUBLIC, summary="Call page", tag="ui",
              in_schema=False)
@page("recording.search")
async def call_page(request: web.Request, principal: Principal, csrf: str) -> web.Response:
    recording_id = _uuid(request.match_info["id"])
    if recording_id is None:
        return not_found_page(request, principal, csrf)
    try:
        recording = await load_recording(request, recording_id)
    except NotFound:
        return not_found_page(request, principal, csrf)
    out = recording.out
    await audit(request, "recording.read", target_type="recording", target_id=str(out.id),
                company=out.company)
    evaluations = None
    if allowed(principal.role, "evaluation.read"):
        async with scoped(request.app[POOL], principal.scope) as conn:
            evaluations = await store.evaluations(conn, recording.id)
        await audit(request, "evaluation.read", target_type="recording",
                    target_id=str(out.id), company=out.company,
                    detail={"results": len(evaluations)})
    t = i18n.translator(i18n.language_of(request))
    return render(
        request, "call.html", principal=principal, csrf_token=csrf,
        title=f"{t('call.title')} {out.external_id}", recording=out, evaluations=evaluations,
        may_replay=allowed(principal.role, "recording.replay"),
        may_evaluate=allowed(principal.role, "evaluation.write"),
        may_read_customers=allowed(principal.role, "customer.read"),
        speeds=SPEEDS, criteria=i18n.CRITERIA,
    )


@routes.route("GET", "/customers", action=PUBLIC, summary="Customer lookup page", tag="ui",
              in_schema=False)
@page("customer.read")
async def customers_page(request: web.Request, principal: Principal, csrf: str) -> web.Response:
    t = i18n.translator(i18n.language_of(request))
    return render(request, "customers.html", principal=principal, csrf_token=csrf,
                  title=t("customers.title"), companies=await _company_codes(request, principal))


@routes.route("GET", "/customers/{customer_id}", action=PUBLIC, summary="Customer page",
              tag="ui", in_schema=False)
@page("customer.read")
async def customer_page(request: web.Request, principal: Principal, csrf: str) -> web.Response:
    customer_id = _uuid(request.match_info["customer_id"])
    if customer_id is None:
        return not_found_page(request, principal, csrf)
    t = i18n.translator(i18n.language_of(request))
    # The details come from GET /api/v1/customers/{id} (audited there); a customer outside
    # the caller's companies shows the API's 404 in the page.
    return render(
        request, "customer.html", principal=principal, csrf_token=csrf,
        title=t("customer.title"), customer_id=str(customer_id),
        may_write=allowed(principal.role, "prohibition.write"),
        may_search=allowed(principal.role, "recording.search"),
        may_read_events=allowed(principal.role, "web_event.read"),
        uses=i18n.PROHIBITED_USES, channels=i18n.PROHIBITION_CHANNELS,
    )
