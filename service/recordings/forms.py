"""Evaluation forms' writes shared by the API and the web UI's admin page: define a form,
(de)activate it, each audited; and the form named in a request's path."""

from __future__ import annotations

import re

import asyncpg
from aiohttp import web

from schemas.evaluation_forms import NAME_PATTERN, FormIn, FormOut
from service.http.auth import Actor
from service.recordings.presentation import form_out
from storage import evaluation_forms as store
from storage.db import scoped
from storage.errors import Forbidden, NotFound
from storage.evaluation_forms import Form

GROUP_WIDE_ONLY_FOR_ALL = "only an admin of every company may define or change a group-wide form"


def form_name_of(request: web.Request) -> str:
    """The form named in the path; one that no form could have is simply not found (and
    never reaches PostgreSQL, which refuses some characters outright)."""
    name = request.match_info["name"]
    if re.fullmatch(NAME_PATTERN, name) is None:
        raise NotFound("no such evaluation form")
    return name


def audit_detail(form: Form, **extra: object) -> dict[str, object]:
    return {"version": form.current_version, "active": form.active,
            "criteria": [c.key for c in form.criteria], **extra}


async def create_form(pool: asyncpg.Pool, actor: Actor, body: FormIn) -> FormOut:
    """Store a new form (version 1) and audit it as the actor's."""
    principal = actor.caller
    if body.company is None and not principal.scope.all_companies:
        raise Forbidden(GROUP_WIDE_ONLY_FOR_ALL)
    async with scoped(pool, principal.scope) as conn:
        company_id = None
        if body.company is not None:
            company_id = await store.company_id_of(conn, body.company)
        form = await store.create(conn, body, company_id, principal.name)
    await actor.audit("evaluation_form.create", target_type="evaluation_form",
                      target_id=form.name, company=form.company, detail=audit_detail(form))
    return form_out(form)


async def set_form_active(pool: asyncpg.Pool, actor: Actor, name: str,
                          active: bool) -> FormOut:
    """Deactivate (kept for history, no new evaluations) or reactivate a form; audited."""
    principal = actor.caller
    async with scoped(pool, principal.scope) as conn:
        current = await store.get(conn, name)
        if current.company is None and not principal.scope.all_companies:
            raise Forbidden(GROUP_WIDE_ONLY_FOR_ALL)
        form = await store.set_active(conn, name, active, principal.name)
    action = "evaluation_form.activate" if active else "evaluation_form.deactivate"
    await actor.audit(action, target_type="evaluation_form", target_id=form.name,
                      company=form.company, detail=audit_detail(form))
    return form_out(form)
