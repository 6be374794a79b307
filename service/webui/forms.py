"""The web UI's admin page of evaluation forms: list them, create one, deactivate and
reactivate. Plain HTML form posts, answered with a redirect, so the page needs no script; the
CSRF token travels in a hidden field. The writes are the API's (service/evaluation_forms.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from schemas.evaluation_forms import MAX_CRITERIA, FormIn
from service.http.api import RouteTable, parse_model
from service.http.auth import actor_of
from service.http.keys import POOL
from service.http.principal import Principal
from service.policy import PUBLIC
from service.recordings.forms import create_form, form_name_of, set_form_active
from service.webui import i18n
from service.webui.companies import company_codes
from service.webui.form_posts import Fields, form_post
from service.webui.render import page, render
from storage import evaluation_forms as store
from storage.db import scoped
from storage.errors import AlreadyExists, Forbidden, InvalidInput, NotFound

routes = RouteTable()

ACTION = "evaluation_form.manage"
PATH = "/admin/evaluation-forms"
BLANK_ROWS = 6
# Names of the page's fields, for telling which one a validation error is about.
FIELD_KEYS = {"name": "forms.name", "title": "forms.form_title",
              "description": "forms.description", "company": "forms.company",
              "criteria": "forms.criteria", "key": "forms.key", "label": "forms.label",
              "max_score": "forms.max"}
# Criteria row fields whose input id differs from the API's field name.
INPUT_IDS = {"max_score": "max"}
NOTICES = {"created": "forms.created", "deactivated": "forms.deactivated",
           "activated": "forms.activated"}

def _row_count(request: web.Request, filled: int) -> int:
    """Criteria rows to show: what `?rows=` asks for, at least two more than are filled."""
    try:
        asked = int(request.query.get("rows", ""))
    except ValueError:
        asked = 0
    return min(MAX_CRITERIA, max(asked, filled + 2, BLANK_ROWS))


async def _page(request: web.Request, principal: Principal, csrf: str, *, status: int = 200,
                submitted: dict[str, Any] | None = None, problems: Sequence[str] = (),
                invalid: set[str] | None = None, notice: str | None = None) -> web.Response:
    async with scoped(request.app[POOL], principal.scope) as conn:
        forms = await store.list_forms(conn)
    submitted = submitted or {"criteria": []}
    rows = list(submitted["criteria"])
    rows += [{"key": "", "label": "", "max_score": ""}] * (
        _row_count(request, len(rows)) - len(rows))
    t = i18n.translator(i18n.language_of(request))
    return render(
        request, "evaluation_forms.html", status=status, principal=principal, csrf_token=csrf,
        title=t("forms.title"), forms=forms, submitted=submitted, rows=rows,
        more_rows=min(len(rows) + BLANK_ROWS, MAX_CRITERIA),
        companies=await company_codes(request, principal),
        may_define_group_wide=principal.scope.all_companies, problems=problems,
        invalid=invalid or set(), notice=notice,
    )


@routes.route("GET", PATH, action=PUBLIC, summary="Evaluation forms page", tag="ui",
              in_schema=False)
@page(ACTION)
async def forms_page(request: web.Request, principal: Principal, csrf: str) -> web.Response:
    notice = None
    key = NOTICES.get(request.query.get("done", ""))
    if key is not None:
        t = i18n.translator(i18n.language_of(request))
        notice = t(key, name=request.query.get("form", ""))
    return await _page(request, principal, csrf, notice=notice)


def _submitted(fields: Fields) -> dict[str, Any]:
    """The form's fields as the API's FormIn body; criteria rows left empty are dropped."""

    def text(name: str) -> str:
        value = fields.get(name, "")
        # PostgreSQL text cannot hold NUL, and no one types it into a form.
        return value.replace("\x00", "").strip() if isinstance(value, str) else ""

    criteria = []
    for i in range(MAX_CRITERIA):
        row = {"key": text(f"key-{i}"), "label": text(f"label-{i}"),
               "max_score": text(f"max-{i}")}
        if any(row.values()):
            criteria.append(row)
    return {"name": text("name"), "title": text("title"),
            "description": text("description") or None, "company": text("company") or None,
            "criteria": criteria}


def _problems(request: web.Request, exc: InvalidInput) -> tuple[list[str], set[str]]:
    """The validation errors as sentences naming the page's fields, in the page's order, and
    the ids of the inputs they are about."""
    t = i18n.translator(i18n.language_of(request))
    order = list(FIELD_KEYS)
    found = sorted(exc.errors, key=lambda e: [
        order.index(p) if p in order else p if isinstance(p, int) else len(order)
        for p in e[0][1:]])
    texts: list[str] = []
    invalid: set[str] = set()
    for loc, msg in found:
        where: list[str] = []
        row: int | None = None
        for part in loc[1:]:
            if isinstance(part, int):
                row = part
                where.append(t("forms.criterion", n=part + 1))
            elif isinstance(part, str) and part in FIELD_KEYS:
                where.append(t(FIELD_KEYS[part]))
                invalid.add(f"{INPUT_IDS.get(part, part)}-{row}" if row is not None
                            else f"n-{part}")
        texts.append(f"{' / '.join(where)}: {msg}" if where else msg)
    return texts or [exc.detail], invalid


@routes.route("POST", PATH, action=PUBLIC, summary="Create an evaluation form (web UI)",
              tag="ui", in_schema=False)
@form_post(ACTION)
async def create_form_post(request: web.Request, principal: Principal, csrf: str,
                           fields: Fields) -> web.Response:
    submitted = _submitted(fields)
    body = dict(submitted)
    body["criteria"] = [
        {**row, "max_score": int(row["max_score"]) if row["max_score"].isdigit()
         else row["max_score"]}
        for row in submitted["criteria"]
    ]
    try:
        form = await create_form(request.app[POOL], actor_of(request),
                                 parse_model(FormIn, body, "body"))
    except InvalidInput as exc:
        problems, invalid = _problems(request, exc)
        return await _page(request, principal, csrf, status=422, submitted=submitted,
                           problems=problems, invalid=invalid)
    except (AlreadyExists, Forbidden) as exc:
        return await _page(request, principal, csrf,
                           status=409 if isinstance(exc, AlreadyExists) else 403,
                           submitted=submitted, problems=[exc.detail])
    raise web.HTTPSeeOther(f"{PATH}?done=created&form={form.name}")


async def _set_active(request: web.Request, principal: Principal, csrf: str,
                      active: bool) -> web.Response:
    try:
        form = await set_form_active(request.app[POOL], actor_of(request),
                                     form_name_of(request), active)
    except (NotFound, Forbidden) as exc:
        return await _page(request, principal, csrf,
                           status=404 if isinstance(exc, NotFound) else 403,
                           problems=[exc.detail])
    done = "activated" if active else "deactivated"
    raise web.HTTPSeeOther(f"{PATH}?done={done}&form={form.name}")


@routes.route("POST", PATH + "/{name}/deactivate", action=PUBLIC,
              summary="Deactivate an evaluation form (web UI)", tag="ui", in_schema=False)
@form_post(ACTION)
async def deactivate_form_post(request: web.Request, principal: Principal, csrf: str,
                               fields: Fields) -> web.Response:
    return await _set_active(request, principal, csrf, active=False)


@routes.route("POST", PATH + "/{name}/activate", action=PUBLIC,
              summary="Activate an evaluation form again (web UI)", tag="ui", in_schema=False)
@form_post(ACTION)
async def activate_form_post(request: web.Request, principal: Principal, csrf: str,
                             fields: Fields) -> web.Response:
    return await _set_active(request, principal, csrf, active=True)
