"""`tallenne forms list` and `tallenne forms add FILE.json`: evaluation forms from the command
line; FILE.json is the body of `POST /api/v1/evaluation-forms`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from schemas.evaluation_forms import FormIn
from service.cli.commands import with_resources
from service.http.api import decode_json, parse_model
from service.recordings.forms import audit_detail
from service.recordings.presentation import form_out
from service.resources import Resources
from service.settings import Settings
from storage import evaluation_forms as store
from storage.audit import AuditEntry
from storage.db import Scope, scoped
from storage.errors import InvalidInput

ACTOR = "cli"


def register(sub: Any) -> None:
    forms = sub.add_parser("forms", help="evaluation forms").add_subparsers(dest="sub",
                                                                            required=True)
    p: argparse.ArgumentParser = forms.add_parser("list", help="list evaluation forms")
    p.set_defaults(func=cmd_forms_list)
    p = forms.add_parser("add", help="define a form from a JSON file (the API's POST body)")
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_forms_add)


def cmd_forms_list(args: argparse.Namespace, settings: Settings) -> int:
    async def work(resources: Resources) -> int:
        async with scoped(resources.pool, Scope.everything()) as conn:
            for form in await store.list_forms(conn):
                state = "active" if form.active else "inactive"
                print(f"{form.name}\tv{form.current_version}\t{state}\t{form.company or '-'}"
                      f"\t{form.title}")
        return 0

    return with_resources(settings, work)


def read_form(path: Path) -> FormIn:
    try:
        return parse_model(FormIn, decode_json(path.read_bytes(), "file"), "file")
    except InvalidInput as exc:
        problems = "; ".join(".".join(str(p) for p in loc[1:]) + ": " + msg
                             for loc, msg in exc.errors) or exc.detail
        raise ValueError(f"{path}: {problems}") from exc


def cmd_forms_add(args: argparse.Namespace, settings: Settings) -> int:
    body = read_form(args.file)

    async def work(resources: Resources) -> int:
        async with scoped(resources.pool, Scope.everything()) as conn:
            company_id = None
            if body.company is not None:
                company_id = await store.company_id_of(conn, body.company)
            form = await store.create(conn, body, company_id, ACTOR)
        await resources.audit.append(AuditEntry(
            actor=ACTOR, actor_kind="system", action="evaluation_form.create",
            target_type="evaluation_form", target_id=form.name, company=form.company,
            detail=audit_detail(form),
        ))
        print(json.dumps(form_out(form).model_dump(mode="json"), ensure_ascii=False), flush=True)
        return 0

    return with_resources(settings, work)
