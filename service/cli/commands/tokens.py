"""`tallenne token …`: machine API tokens (create, list, revoke)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from service.cli.commands import with_connection
from service.policy import ROLES
from service.settings import Settings
from storage import accounts
from storage.errors import NotFound, StorageError


def register(sub: Any) -> None:
    token = sub.add_parser("token", help="machine API tokens").add_subparsers(dest="sub",
                                                                             required=True)
    p = token.add_parser("create", help="create a token; prints only the token")
    p.set_defaults(func=cmd_token_create)
    p.add_argument("--name", required=True)
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--company", action="append", metavar="CODE")
    p.add_argument("--all-companies", action="store_true")
    p.add_argument("--owner", metavar="SYSTEM",
                   help="the system the token is for (default: the token's name)")
    p.add_argument("--expires-days", type=int, metavar="DAYS",
                   help=f"days until it expires (default {accounts.MACHINE_TOKEN_DAYS},"
                   f" at most {accounts.MAX_TOKEN_DAYS})")
    p = token.add_parser("list", help="list tokens with owner and expiry")
    p.set_defaults(func=cmd_token_list)
    p = token.add_parser("revoke", help="revoke a token")
    p.set_defaults(func=cmd_token_revoke)
    p.add_argument("token_id")


def cmd_token_create(args: argparse.Namespace, settings: Settings) -> int:
    from service.identity.accounts import audit_cli_change, ensure_no_person_named

    days = args.expires_days
    if days is not None and not 1 <= days <= accounts.MAX_TOKEN_DAYS:
        raise StorageError(f"--expires-days must be 1-{accounts.MAX_TOKEN_DAYS}")

    async def work(conn: asyncpg.Connection) -> int:
        if not args.all_companies and not args.company:
            raise StorageError("give --company CODE (repeatable) or --all-companies")
        companies = await accounts.companies_by_code(conn, args.company or [])
        await ensure_no_person_named(conn, args.name)
        expires_at = datetime.now(UTC) + timedelta(days=days) if days is not None else None
        async with conn.transaction():
            record, secret = await accounts.create_token(
                conn, args.name, args.role, [c.id for c in companies], args.all_companies,
                owner_name=args.owner or args.name, expires_at=expires_at,
            )
            await audit_cli_change(
                conn, "token.create", target_type="token", target_id=str(record.id),
                company_ids=None if args.all_companies else [c.id for c in companies],
                detail={"name": record.name, "role": record.role, "owner": record.owner,
                        "expires_at": record.expires_at.isoformat() if record.expires_at
                        else None},
            )
        print(secret)
        return 0

    return with_connection(settings, work)


def cmd_token_list(args: argparse.Namespace, settings: Settings) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        print("id\tname\trole\tcompanies\towner\texpires_at\tstate")
        now = datetime.now(UTC)
        for token in await accounts.list_tokens(conn, None):
            scope = "*" if token.all_companies else ",".join(token.company_codes)
            state = ("revoked" if token.revoked_at else
                     "expired" if token.expires_at and token.expires_at <= now else "active")
            owner = f"{token.owner_kind}:{token.owner}"
            expires = token.expires_at.isoformat(timespec="seconds") if token.expires_at else "-"
            print(f"{token.id}\t{token.name}\t{token.role}\t{scope}\t{owner}\t{expires}"
                  f"\t{state}")
        return 0

    return with_connection(settings, work)


def cmd_token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from uuid import UUID

    from service.identity.accounts import audit_cli_change

    token_id = UUID(args.token_id)

    async def work(conn: asyncpg.Connection) -> int:
        found = {t.id: t for t in await accounts.list_tokens(conn, None)}.get(token_id)
        if found is None:
            raise NotFound("no such token")
        async with conn.transaction():
            await accounts.revoke_token(conn, token_id, None)
            await audit_cli_change(
                conn, "token.revoke", target_type="token", target_id=str(token_id),
                company_ids=None if found.all_companies else found.company_ids,
            )
        print("revoked")
        return 0

    return with_connection(settings, work)
