"""`tallenne company …`: the group's companies (list, add, rename)."""

from __future__ import annotations

import argparse
from typing import Any

import asyncpg

from service.cli.commands import with_connection
from service.settings import Settings
from storage import accounts


def register(sub: Any) -> None:
    company = sub.add_parser("company", help="the group's companies").add_subparsers(
        dest="sub", required=True)
    p = company.add_parser("list", help="list companies")
    p.set_defaults(func=cmd_company_list)
    p = company.add_parser("add", help="add a company")
    p.set_defaults(func=cmd_company_add)
    p.add_argument("--code", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--business-id")
    p = company.add_parser("rename", help="rename a company")
    p.set_defaults(func=cmd_company_rename)
    p.add_argument("code")
    p.add_argument("--name", required=True)


def cmd_company_list(args: argparse.Namespace, settings: Settings) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        for company in await accounts.list_companies(conn):
            print(f"{company.code}\t{company.name}\t{company.business_id or ''}")
        return 0

    return with_connection(settings, work)


def cmd_company_add(args: argparse.Namespace, settings: Settings) -> int:
    from schemas.business_id import validate_business_id
    from service.identity.accounts import audit_cli_change

    business_id = validate_business_id(args.business_id) if args.business_id else None

    async def work(conn: asyncpg.Connection) -> int:
        async with conn.transaction():
            company = await accounts.add_company(conn, args.code, args.name, business_id)
            await audit_cli_change(conn, "company.create", target_type="company",
                                   target_id=company.code, company=company.code)
        print(f"added {company.code}")
        return 0

    return with_connection(settings, work)


def cmd_company_rename(args: argparse.Namespace, settings: Settings) -> int:
    from service.identity.accounts import audit_cli_change

    async def work(conn: asyncpg.Connection) -> int:
        async with conn.transaction():
            company = await accounts.update_company(conn, args.code, args.name, None)
            await audit_cli_change(conn, "company.change", target_type="company",
                                   target_id=company.code, company=company.code,
                                   detail={"name": args.name})
        print(f"{company.code} is now {company.name}")
        return 0

    return with_connection(settings, work)
