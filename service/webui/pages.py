"""Web UI pages of the quality team and customer service: call search, one call (player,
metadata, evaluations on the forms in use), customer lookup and one customer.

Data a page shows when it is first rendered goes through the same scoped storage calls and
the same audit events as the JSON API; everything after that (search pages, replay,
evaluations, prohibitions) is fetched by static/*.js from the API itself.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import get_args

from aiohttp import web

from schemas.analysis import Flag
from service.http.api import RouteTable
from service.http.auth import audit
from service.http.keys import POOL
from service.http.principal import Principal
from service.policy import PUBLIC, allowed
from service.recordings.lookup import load_recording
from service.recordings.presentation import recording_out
from service.webui import i18n
from service.webui.companies import company_codes
from service.webui.render import SCRIPT_KEYS, not_found_page, page, render
from storage import evaluation_forms
from storage import recordings as store
from storage.db import scoped
from storage.errors import NotFound
from storage.evaluation_forms import Form
from storage.recordings import Evaluation

routes = RouteTable()

SPEEDS = ("0.5", "0.75", "1", "1.25", "1.5", "1.75", "2")


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
                  title=t("search.title"), companies=await company_codes(request, principal),
                  directions=("inbound", "outbound", "internal"), flags=get_args(Flag),
                  may_read_customers=allowed(principal.role, "customer.read"))


@routes.route("GET", "/recordings/{id}", action=PUBLIC, summary="Call page", tag="ui",
              in_schema=False)
@page("recording.search")
async def call_page(request: web.Request, principal: Principal, csrf: str) -> web.Response:
    recording_id = _uuid(request.match_info["id"])
    if recording_id is None:
        return not_found_page(request, principal, csrf)
    try:
        recording = await load_recording(request.app[POOL], principal.scope, recording_id)
    except NotFound:
        return not_found_page(request, principal, csrf)
    out = recording_out(recording)
    await audit(request, "recording.read", target_type="recording", target_id=str(out.id),
                company=out.company, subject_ids=[out.id, *filter(None, [out.customer_id])])
    may_evaluate = allowed(principal.role, "evaluation.write")
    language = i18n.language_of(request)
    shown = None
    forms: list[Form] = []
    own: dict[str, Evaluation] = {}
    if allowed(principal.role, "evaluation.read"):
        async with scoped(request.app[POOL], principal.scope) as conn:
            evaluations = await store.evaluations(conn, recording.id)
            scored_with = await evaluation_forms.versions(
                conn, [(e.form, e.form_version) for e in evaluations if e.form_version])
            if may_evaluate:
                forms = await evaluation_forms.list_forms(conn, active=True,
                                                          company_id=recording.company_id)
        await audit(request, "evaluation.read", target_type="recording",
                    target_id=str(out.id), company=out.company,
                    detail={"results": len(evaluations)})
        shown = [_shown(e, scored_with, language) for e in evaluations]
        own = {e.form: e for e in evaluations if e.evaluator == principal.name}
    t = i18n.translator(language)
    return render(
        request, "call.html", principal=principal, csrf_token=csrf,
        title=f"{t('call.title')} {out.external_id}", recording=out, evaluations=shown,
        may_replay=allowed(principal.role, "recording.replay"),
        may_evaluate=may_evaluate,
        may_manage_forms=allowed(principal.role, "evaluation_form.manage"),
        may_read_customers=allowed(principal.role, "customer.read"),
        speeds=SPEEDS, forms=forms, prefill=_prefill(forms, own),
        script_keys=(*SCRIPT_KEYS, "evaluation.version", "player.", "role.", "visibility.",
                     "annotation."),
        may_annotate=allowed(principal.role, "annotation.write"),
        may_read_annotations=allowed(principal.role, "annotation.read"),
    )


@dataclass(frozen=True)
class ShownScore:
    label: str
    score: int
    max_score: int | None


@dataclass(frozen=True)
class ShownEvaluation:
    """An evaluation as the call page lists it: with the labels of the form version it was
    scored with (or the bare criterion names of one stored before forms existed)."""

    evaluation: Evaluation
    form_title: str
    scores: list[ShownScore]


def _shown(evaluation: Evaluation, scored_with: dict[tuple[str, int], Form],
           language: i18n.Language) -> ShownEvaluation:
    form = scored_with.get((evaluation.form, evaluation.form_version or 0))
    if form is None:
        label = i18n.labeller(language)
        return ShownEvaluation(evaluation, evaluation.form, [
            ShownScore(label("criterion", key), score, None)
            for key, score in evaluation.scores.items()])
    scores = [ShownScore(c.label, evaluation.scores[c.key], c.max_score)
              for c in form.criteria if c.key in evaluation.scores]
    return ShownEvaluation(evaluation, form.title, scores)


def _prefill(forms: list[Form], own: dict[str, Evaluation]) -> dict[str, dict[str, int]]:
    """The scores the person already gave with each form's current version."""
    return {f.name: own[f.name].scores for f in forms
            if f.name in own and own[f.name].form_version == f.version}


@routes.route("GET", "/customers", action=PUBLIC, summary="Customer lookup page", tag="ui",
              in_schema=False)
@page("customer.read")
async def customers_page(request: web.Request, principal: Principal, csrf: str) -> web.Response:
    t = i18n.translator(i18n.language_of(request))
    return render(request, "customers.html", principal=principal, csrf_token=csrf,
                  title=t("customers.title"), companies=await company_codes(request, principal))


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
        may_take_request=allowed(principal.role, "access_request.write"),
        verified_by=i18n.VERIFIED_BY,
        may_search=allowed(principal.role, "recording.search"),
        may_read_events=allowed(principal.role, "web_event.read"),
        uses=i18n.PROHIBITED_USES, channels=i18n.PROHIBITION_CHANNELS,
    )
