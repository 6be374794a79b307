"""`tallenne site list`, `site set SITE --company CODE`, `site remove SITE`: the site registry
(which company a web site's events belong to) from the command line, audited as the API's."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from pydantic import ValidationError

from schemas.sites import SiteRow
from service.cli.commands import with_resources
from service.resources import Resources
from service.settings import Settings
from storage import sites
from storage.audit import AuditEntry
from storage.db import Scope
from storage.errors import InvalidInput

ACTOR = "cli"


def register(sub: Any) -> None:
    site = sub.add_parser("site", help="the site registry: web sites and their companies"
                          ).add_subparsers(dest="sub", required=True)
    p: argparse.ArgumentParser = site.add_parser("list", help="list registered sites")
    p.set_defaults(func=cmd_site_list)
    p = site.add_parser("set", help="register a site or move it to another company")
    p.add_argument("site")
    p.add_argument("--company", required=True, metavar="CODE")
    p.set_defaults(func=cmd_site_set)
    p = site.add_parser("remove", help="remove a site from the registry")
    p.add_argument("site")
    p.set_defaults(func=cmd_site_set, company=None)


def cmd_site_list(args: argparse.Namespace, settings: Settings) -> int:
    async def work(resources: Resources) -> int:
        async with resources.pool.acquire() as conn:
            for row in await sites.list_sites(conn, Scope.everything()):
                print(f"{row.site}\t{row.company}")
        return 0

    return with_resources(settings, work)


def cmd_site_set(args: argparse.Namespace, settings: Settings) -> int:
    try:
        row = SiteRow(site=args.site, company=args.company)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors(include_input=False))
        raise ValueError(problems) from None

    async def work(resources: Resources) -> int:
        async with resources.pool.acquire() as conn:
            try:
                changes = await sites.apply_rows(conn, [row], Scope.everything(), ACTOR)
            except InvalidInput as exc:
                raise ValueError("; ".join(msg for _, msg in exc.errors) or exc.detail) from exc
        if changes:
            await resources.audit.append(AuditEntry(
                actor=ACTOR, actor_kind="system", action="site.change", target_type="site",
                detail={"changes": [asdict(c) for c in changes]},
            ))
        if row.company is None:
            print(f"{row.site} removed" if changes else f"{row.site} was not registered")
        else:
            print(f"{row.site}\t{row.company}")
        return 0

    return with_resources(settings, work)
