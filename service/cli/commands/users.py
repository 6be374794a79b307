"""`tallenne user …`: people's accounts (add, list, disable, enable, reset-password)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import asyncpg
from pydantic import ValidationError

from schemas.identity import UserCreateIn
from service.cli.commands import with_connection
from service.policy import ROLES
from service.settings import Settings
from storage import accounts, passwords
from storage.errors import StorageError


def register(sub: Any) -> None:
    user = sub.add_parser("user", help="people's accounts").add_subparsers(dest="sub",
                                                                          required=True)
    p = user.add_parser("add", help="create an account")
    p.set_defaults(func=cmd_user_add)
    p.add_argument("--username", required=True)
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--company", action="append", metavar="CODE")
    p.add_argument("--all-companies", action="store_true")
    p.add_argument("--password-stdin", action="store_true")
    p = user.add_parser("list", help="list accounts")
    p.set_defaults(func=cmd_user_list)
    p = user.add_parser("disable", help="disable an account (ends its sessions)")
    p.set_defaults(func=cmd_user_disable)
    p.add_argument("username")
    p.set_defaults(disable=True)
    p = user.add_parser("enable", help="enable an account")
    p.set_defaults(func=cmd_user_disable)
    p.add_argument("username")
    p.set_defaults(disable=False)
    p = user.add_parser("reset-password", help="set a new password")
    p.set_defaults(func=cmd_user_reset_password)
    p.add_argument("username")
    p.add_argument("--password-stdin", action="store_true")


def _read_password(args: argparse.Namespace) -> str:
    if not args.password_stdin:
        raise StorageError("give the password on standard input with --password-stdin")
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise StorageError("no password was given on standard input")
    return password


def _user_create_in(args: argparse.Namespace, password: str) -> UserCreateIn:
    """The account as the API's body would carry it, checked by the API's rules (ValueError
    naming the field, never echoing the input)."""
    try:
        return UserCreateIn(username=args.username, password=password, role=args.role,
                            companies=args.company or [], all_companies=args.all_companies)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors(include_input=False))
        raise ValueError(problems) from None


def cmd_user_add(args: argparse.Namespace, settings: Settings) -> int:
    from service.identity.accounts import audit_cli_change, create_user_account

    body = _user_create_in(args, _read_password(args))

    async def work(conn: asyncpg.Connection) -> int:
        async with conn.transaction():
            account = await create_user_account(
                conn, body.username, body.password, body.role, body.companies,
                body.all_companies,
            )
            await audit_cli_change(
                conn, "user.create", target_type="user", target_id=str(account.id),
                company_ids=None if account.all_companies else account.company_ids,
                detail={"username": account.name, "role": account.role},
            )
        scope = "all companies" if account.all_companies else ", ".join(account.company_codes)
        print(f"created {account.role} account {account.name} ({scope})")
        return 0

    return with_connection(settings, work)


def cmd_user_list(args: argparse.Namespace, settings: Settings) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        for user in await accounts.list_users(conn):
            scope = "*" if user.all_companies else ",".join(user.company_codes)
            state = "disabled" if user.disabled else "active"
            print(f"{user.name}\t{user.role}\t{scope}\t{state}")
        return 0

    return with_connection(settings, work)


def cmd_user_disable(args: argparse.Namespace, settings: Settings) -> int:
    from service.identity.accounts import audit_cli_change

    async def work(conn: asyncpg.Connection) -> int:
        async with conn.transaction():
            account = await accounts.set_user_disabled(conn, args.username, args.disable)
            await audit_cli_change(
                conn, "user.change", target_type="user", target_id=str(account.id),
                company_ids=None if account.all_companies else account.company_ids,
                detail={"disabled": args.disable},
            )
        print(f"{args.username} {'disabled' if args.disable else 'enabled'}")
        return 0

    return with_connection(settings, work)


def cmd_user_reset_password(args: argparse.Namespace, settings: Settings) -> int:
    from service.identity.accounts import audit_cli_change

    password = _read_password(args)

    async def work(conn: asyncpg.Connection) -> int:
        found = await accounts.user_with_hash(conn, args.username)
        if found is None:
            raise StorageError("no such user")
        account = found[0]
        passwords.check_password_rules(password, username=args.username)
        password_hash = passwords.hash_password(password)
        async with conn.transaction():
            await accounts.set_password_hash(conn, account.id, password_hash)
            await accounts.revoke_user_sessions(conn, account.id)
            await audit_cli_change(
                conn, "user.change", target_type="user", target_id=str(account.id),
                company_ids=None if account.all_companies else account.company_ids,
                detail={"password": "reset"},  # that it happened, never the value
            )
        print(f"password of {args.username} reset; their sessions are ended")
        return 0

    return with_connection(settings, work)
