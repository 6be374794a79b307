"""Evaluation form endpoints: everyone who may read or write evaluations lists and reads the
forms; admins define, change and deactivate them (service/recordings/forms.py, which the web
UI's admin page uses too).
"""

from __future__ import annotations

from aiohttp import web

from schemas.evaluation_forms import (
    FormIn,
    FormList,
    FormOut,
    FormQuery,
    FormUpdate,
    FormVersionQuery,
)
from service.http.api import RouteTable, json_response, read_json, read_query
from service.http.auth import actor_of, audit, principal_of
from service.http.keys import POOL
from service.recordings.forms import (
    GROUP_WIDE_ONLY_FOR_ALL,
    audit_detail,
    create_form,
    form_name_of,
    set_form_active,
)
from service.recordings.presentation import form_out
from storage import evaluation_forms as store
from storage.db import scoped
from storage.errors import Forbidden

routes = RouteTable()

@routes.route(
    "GET", "/api/v1/evaluation-forms", action="evaluation_form.read", tag="evaluations",
    summary="Evaluation forms: group-wide ones and those of the caller's companies",
    query=FormQuery, response=FormList,
)
async def list_forms(request: web.Request) -> web.Response:
    principal = principal_of(request)
    query = read_query(request, FormQuery)
    async with scoped(request.app[POOL], principal.scope) as conn:
        if query.company is not None:
            company_id = await store.company_id_of(conn, query.company, "query")
            items = await store.list_forms(conn, active=query.active, company_id=company_id)
        else:
            items = await store.list_forms(conn, active=query.active)
    return json_response(FormList(items=[form_out(f) for f in items]))


@routes.route(
    "GET", "/api/v1/evaluation-forms/{name}", action="evaluation_form.read", tag="evaluations",
    summary="One evaluation form (?version=N: the criteria of an earlier version)",
    query=FormVersionQuery, response=FormOut,
)
async def get_form(request: web.Request) -> web.Response:
    query = read_query(request, FormVersionQuery)
    async with scoped(request.app[POOL], principal_of(request).scope) as conn:
        form = await store.get(conn, form_name_of(request), query.version)
    return json_response(form_out(form))


@routes.route(
    "POST", "/api/v1/evaluation-forms", action="evaluation_form.manage", tag="evaluations",
    summary="Define an evaluation form (no company: group-wide)",
    body=FormIn, response=FormOut, status=201, extra_statuses=(409,),
)
async def post_form(request: web.Request) -> web.Response:
    body = await read_json(request, FormIn)
    form = await create_form(request.app[POOL], actor_of(request), body)
    return json_response(form, status=201,
                         headers={"Location": f"/api/v1/evaluation-forms/{form.name}"})


@routes.route(
    "PUT", "/api/v1/evaluation-forms/{name}", action="evaluation_form.manage",
    tag="evaluations",
    summary="Change a form; changed criteria make a new version, earlier evaluations keep "
            "theirs",
    body=FormUpdate, response=FormOut,
)
async def put_form(request: web.Request) -> web.Response:
    principal = principal_of(request)
    name = form_name_of(request)
    body = await read_json(request, FormUpdate)
    async with scoped(request.app[POOL], principal.scope) as conn:
        current = await store.get(conn, name)
        if current.company is None and not principal.scope.all_companies:
            raise Forbidden(GROUP_WIDE_ONLY_FOR_ALL)
        form, new_version = await store.update(conn, name, body, principal.name)
    await audit(request, "evaluation_form.update", target_type="evaluation_form",
                target_id=form.name, company=form.company,
                detail=audit_detail(form, new_version=new_version))
    return json_response(form_out(form))


@routes.route(
    "DELETE", "/api/v1/evaluation-forms/{name}", action="evaluation_form.manage",
    tag="evaluations",
    summary="Deactivate a form: no new evaluations with it; it and its evaluations are kept",
    response=FormOut,
)
async def deactivate_form(request: web.Request) -> web.Response:
    form = await set_form_active(request.app[POOL], actor_of(request),
                                 form_name_of(request), active=False)
    return json_response(form)
