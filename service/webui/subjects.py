"""The web UI's subject search page for the DPO: a plain form post (the identity code never
in a URL), answered with everything held about the person, and a form that starts an export
of a customer's calls. The search and the export are the API's (service/subjects.py,
service/exports/creation.py)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from schemas.exports import ExportIn
from schemas.subjects import SubjectSearchIn
from service.exports.creation import begin_export
from service.http.api import RouteTable, parse_model
from service.http.auth import actor_of
from service.http.keys import EXPORT_WAKE, KEYRING, POOL, SETTINGS
from service.http.principal import Principal
from service.policy import PUBLIC
from service.rights.subject_search import find_subject
from service.webui import i18n
from service.webui.form_posts import Fields, form_post
from service.webui.render import page, render
from storage.errors import InvalidInput

routes = RouteTable()

PATH = "/subjects"


def _page(request: web.Request, principal: Principal, csrf: str, *, status: int = 200,
          **context: Any) -> web.Response:
    t = i18n.translator(i18n.language_of(request))
    shown: dict[str, Any] = {"notice": None, "problem": None, "found": None,
                                "started": None, "phone": None}
    shown.update(context)
    return render(request, "subjects.html", status=status, principal=principal,
                  csrf_token=csrf, title=t("subjects.title"), **shown)


def _field(fields: Fields, name: str) -> str | None:
    value = fields.get(name)
    return value.strip() or None if isinstance(value, str) else None


@routes.route("GET", PATH, action=PUBLIC, summary="Subject search page", tag="ui",
              in_schema=False)
@page("subject.search")
async def subjects_page(request: web.Request, principal: Principal, csrf: str) -> web.Response:
    return _page(request, principal, csrf)


@routes.route("POST", PATH, action=PUBLIC, summary="Subject search (form post)", tag="ui",
              in_schema=False)
@form_post("subject.search")
async def subjects_search_form(request: web.Request, principal: Principal, csrf: str,
                               fields: Fields) -> web.Response:
    t = i18n.translator(i18n.language_of(request))
    phone = _field(fields, "phone")
    try:
        wanted = parse_model(SubjectSearchIn, {
            "personal_id": _field(fields, "personal_id"),
            "phone": None if _field(fields, "personal_id") else phone}, "body")
        found = await find_subject(request.app[POOL], request.app[KEYRING], actor_of(request),
                                   phone=wanted.phone, personal_id=wanted.personal_id,
                                   phone_in="body")
    except InvalidInput as exc:
        # The detail names the field, never the value (no identity code is echoed).
        return _page(request, principal, csrf, status=422, phone=phone,
                     problem=t("subjects.invalid", detail=exc.detail))
    return _page(request, principal, csrf, phone=phone, found=found)


@routes.route("POST", f"{PATH}/export", action=PUBLIC, summary="Export a customer's calls "
              "from the subject page (form post)", tag="ui", in_schema=False)
@form_post("export.run")
async def subjects_export_form(request: web.Request, principal: Principal, csrf: str,
                               fields: Fields) -> web.Response:
    t = i18n.translator(i18n.language_of(request))
    try:
        body = parse_model(ExportIn, {"filter": {"customer_id": _field(fields, "customer_id")},
                                      "reason": _field(fields, "reason") or "",
                                      "format": "zip"}, "body")
        job_id = await begin_export(actor_of(request), body, pool=request.app[POOL],
                                    settings=request.app[SETTINGS],
                                    wake=request.app.get(EXPORT_WAKE))
    except InvalidInput as exc:
        return _page(request, principal, csrf, status=422,
                     problem=t("subjects.invalid", detail=exc.detail))
    return _page(request, principal, csrf, notice=t("subjects.started", id=job_id),
                 started=str(job_id))
