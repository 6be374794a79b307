"""The `tallenne` command line: serve, migrate, accounts, tokens, audit and operations."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from pydantic import ValidationError

from devstack.embedded import StackError
from devstack.environment import resolved
from service.ops.logs import configure_logging
from service.policy import ROLES
from service.settings import Settings
from storage import accounts, passwords
from storage.audit import AuditEntry, append_batch
from storage.db import create_pool
from storage.errors import StorageError
from storage.migrate import migrate_url
from storage.roles import UnsafeDatabaseRole

Command = Callable[[argparse.Namespace, Settings], int]


async def migrate_if_owner(ready: Settings) -> None:
    """Migrations run as the owner role; without its URL the schema is left as it is."""
    if ready.database_owner_url is not None:
        await migrate_url(ready.database_owner_url.get_secret_value())


def _run_db(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[int]]) -> int:
    """Run `work` on a migrated database of the resolved environment."""

    async def main(ready: Settings) -> int:
        assert ready.database_url is not None
        await migrate_if_owner(ready)
        pool = await create_pool(ready.database_url.get_secret_value(), max_size=2)
        try:
            async with pool.acquire() as conn:
                return await work(conn)
        finally:
            await pool.close()

    with resolved(settings) as ready:
        return asyncio.run(main(ready))


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from service.cli.runner import serve

    return serve(settings)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    async def main(ready: Settings) -> int:
        if ready.database_owner_url is None:
            raise ValueError("set TALLENNE_DATABASE_OWNER_URL: migrations run as the role "
                             "that owns the schema, not as the service's own role")
        applied = await migrate_url(ready.database_owner_url.get_secret_value())
        print(f"applied {len(applied)} migration(s); database schema is up to date")
        return 0

    with resolved(settings) as ready:
        return asyncio.run(main(ready))


def _read_password(args: argparse.Namespace) -> str:
    if not args.password_stdin:
        raise StorageError("give the password on standard input with --password-stdin")
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise StorageError("no password was given on standard input")
    return password


def cmd_user_add(args: argparse.Namespace, settings: Settings) -> int:
    from service.identity.accounts import create_user_account

    password = _read_password(args)

    async def work(conn: asyncpg.Connection) -> int:
        account = await create_user_account(
            conn, args.username, password, args.role, args.company or [], args.all_companies
        )
        scope = "all companies" if account.all_companies else ", ".join(account.company_codes)
        print(f"created {account.role} account {account.name} ({scope})")
        return 0

    return _run_db(settings, work)


def cmd_user_list(args: argparse.Namespace, settings: Settings) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        for user in await accounts.list_users(conn):
            scope = "*" if user.all_companies else ",".join(user.company_codes)
            state = "disabled" if user.disabled else "active"
            print(f"{user.name}\t{user.role}\t{scope}\t{state}")
        return 0

    return _run_db(settings, work)


def cmd_user_disable(args: argparse.Namespace, settings: Settings) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        await accounts.set_user_disabled(conn, args.username, args.disable)
        print(f"{args.username} {'disabled' if args.disable else 'enabled'}")
        return 0

    return _run_db(settings, work)


def cmd_user_reset_password(args: argparse.Namespace, settings: Settings) -> int:
    password = _read_password(args)

    async def work(conn: asyncpg.Connection) -> int:
        found = await accounts.user_with_hash(conn, args.username)
        if found is None:
            raise StorageError("no such user")
        passwords.check_password_rules(password, username=args.username)
        await accounts.set_password_hash(conn, found[0].id, passwords.hash_password(password))
        await accounts.revoke_user_sessions(conn, found[0].id)
        print(f"password of {args.username} reset; their sessions are ended")
        return 0

    return _run_db(settings, work)


def cmd_token_create(args: argparse.Namespace, settings: Settings) -> int:
    days = args.expires_days
    if days is not None and not 1 <= days <= accounts.MAX_TOKEN_DAYS:
        raise StorageError(f"--expires-days must be 1-{accounts.MAX_TOKEN_DAYS}")

    async def work(conn: asyncpg.Connection) -> int:
        if not args.all_companies and not args.company:
            raise StorageError("give --company CODE (repeatable) or --all-companies")
        companies = await accounts.companies_by_code(conn, args.company or [])
        expires_at = datetime.now(UTC) + timedelta(days=days) if days is not None else None
        record, secret = await accounts.create_token(
            conn, args.name, args.role, [c.id for c in companies], args.all_companies,
            owner_name=args.owner or args.name, expires_at=expires_at,
        )
        try:
            operator = f"cli:{getpass.getuser()}"
        except (KeyError, OSError):
            operator = "cli"
        await append_batch(conn, [AuditEntry(
            actor=operator, actor_kind="cli", action="token.create", target_type="token",
            target_id=str(record.id),
            company_ids=None if args.all_companies else [c.id for c in companies],
            detail={"name": record.name, "role": record.role, "owner": record.owner,
                    "expires_at": record.expires_at.isoformat() if record.expires_at
                    else None},
        )])
        print(secret)
        return 0

    return _run_db(settings, work)


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

    return _run_db(settings, work)


def cmd_token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from uuid import UUID

    async def work(conn: asyncpg.Connection) -> int:
        await accounts.revoke_token(conn, UUID(args.token_id), None)
        print("revoked")
        return 0

    return _run_db(settings, work)


def cmd_company_list(args: argparse.Namespace, settings: Settings) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        for company in await accounts.list_companies(conn):
            print(f"{company.code}\t{company.name}\t{company.business_id or ''}")
        return 0

    return _run_db(settings, work)


def cmd_company_add(args: argparse.Namespace, settings: Settings) -> int:
    from schemas.business_id import validate_business_id

    business_id = validate_business_id(args.business_id) if args.business_id else None

    async def work(conn: asyncpg.Connection) -> int:
        company = await accounts.add_company(conn, args.code, args.name, business_id)
        print(f"added {company.code}")
        return 0

    return _run_db(settings, work)


def cmd_company_rename(args: argparse.Namespace, settings: Settings) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        company = await accounts.update_company(conn, args.code, args.name, None)
        print(f"{company.code} is now {company.name}")
        return 0

    return _run_db(settings, work)


def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    """The chain recomputed and held against every signed checkpoint."""
    from service.audit.checkpoints import checkpoint_bucket, note_signer
    from storage.checkpoints import verify_trail

    async def main(ready: Settings) -> int:
        assert ready.database_url is not None
        signer = note_signer(ready)
        bucket = checkpoint_bucket(ready)
        await migrate_if_owner(ready)
        pool = await create_pool(ready.database_url.get_secret_value(), max_size=2)
        try:
            async with pool.acquire() as conn:
                report = await verify_trail(conn, bucket.reader, signer.verifier)
        finally:
            await pool.close()
            await bucket.close()
        print(json.dumps({"ok": report.ok, "events": report.events,
                          "first_bad": report.first_bad, "problem": report.problem,
                          "checkpoints": report.checkpoints}))
        return 0 if report.ok else 1

    with resolved(settings) as ready:
        return asyncio.run(main(ready))


def cmd_audit_export_checkpoints(args: argparse.Namespace, settings: Settings) -> int:
    """Every signed checkpoint of the bucket, with the key that verifies them, for a witness."""
    from service.audit.checkpoints import checkpoint_bucket, note_signer
    from storage.checkpoints import parse_key, signed_notes

    async def main(ready: Settings) -> int:
        verifier = note_signer(ready).verifier
        bucket = checkpoint_bucket(ready)
        try:
            notes = await signed_notes(bucket.reader)
        finally:
            await bucket.close()
        checkpoints = []
        for key, note in notes:
            epoch, seq = parse_key(key) or (0, 0)
            checkpoints.append({"object_key": key, "epoch": epoch, "seq": seq, "note": note})
        print(json.dumps({"origin": verifier.name, "verifier_key": verifier.verifier_key(),
                          "checkpoints": checkpoints}, indent=1))
        return 0

    with resolved(settings) as ready:
        return asyncio.run(main(ready))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tallenne", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Command, help_: str, parent: Any = sub) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help_)
        p.set_defaults(func=fn)
        return p

    add("serve", cmd_serve, "start the service (embedded stack unless configured otherwise)")
    add("migrate", cmd_migrate, "apply database migrations")

    user = sub.add_parser("user", help="people's accounts").add_subparsers(dest="sub",
                                                                          required=True)
    p = add("add", cmd_user_add, "create an account", user)
    p.add_argument("--username", required=True)
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--company", action="append", metavar="CODE")
    p.add_argument("--all-companies", action="store_true")
    p.add_argument("--password-stdin", action="store_true")
    add("list", cmd_user_list, "list accounts", user)
    p = add("disable", cmd_user_disable, "disable an account (ends its sessions)", user)
    p.add_argument("username")
    p.set_defaults(disable=True)
    p = add("enable", cmd_user_disable, "enable an account", user)
    p.add_argument("username")
    p.set_defaults(disable=False)
    p = add("reset-password", cmd_user_reset_password, "set a new password", user)
    p.add_argument("username")
    p.add_argument("--password-stdin", action="store_true")

    token = sub.add_parser("token", help="machine API tokens").add_subparsers(dest="sub",
                                                                             required=True)
    p = add("create", cmd_token_create, "create a token; prints only the token", token)
    p.add_argument("--name", required=True)
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--company", action="append", metavar="CODE")
    p.add_argument("--all-companies", action="store_true")
    p.add_argument("--owner", metavar="SYSTEM",
                   help="the system the token is for (default: the token's name)")
    p.add_argument("--expires-days", type=int, metavar="DAYS",
                   help=f"days until it expires (default {accounts.MACHINE_TOKEN_DAYS},"
                   f" at most {accounts.MAX_TOKEN_DAYS})")
    add("list", cmd_token_list, "list tokens with owner and expiry", token)
    p = add("revoke", cmd_token_revoke, "revoke a token", token)
    p.add_argument("token_id")

    company = sub.add_parser("company", help="the group's companies").add_subparsers(
        dest="sub", required=True)
    add("list", cmd_company_list, "list companies", company)
    p = add("add", cmd_company_add, "add a company", company)
    p.add_argument("--code", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--business-id")
    p = add("rename", cmd_company_rename, "rename a company", company)
    p.add_argument("code")
    p.add_argument("--name", required=True)

    audit = sub.add_parser("audit", help="the audit trail").add_subparsers(dest="sub",
                                                                          required=True)
    add("verify", cmd_audit_verify, "verify the hash chain against the signed checkpoints; "
        "exit 0 only when intact", audit)
    add("export-checkpoints", cmd_audit_export_checkpoints, "print the signed checkpoints "
        "(C2SP signed notes) and their verifier key as JSON, for an outside witness", audit)
    for command_module in _command_modules():
        command_module.register(sub)
    return parser


def _command_modules() -> list[Any]:
    import importlib
    import pkgutil

    from service.cli import commands

    return [
        importlib.import_module(f"service.cli.commands.{info.name}")
        for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:  # the input itself is left out: it may be a secret
        for error in exc.errors(include_input=False):
            name = "TALLENNE_" + "_".join(str(part) for part in error["loc"]).upper()
            print(f"tallenne: error: {name}: {error['msg']}", file=sys.stderr)
        return 2
    configure_logging("WARNING" if args.command != "serve" else settings.log_level)
    try:
        return int(args.func(args, settings))
    except UnsafeDatabaseRole as exc:
        print(f"tallenne: error: {exc}", file=sys.stderr)
        return 2
    except (StorageError, StackError, ValueError, OSError, asyncpg.PostgresError) as exc:
        message = getattr(exc, "detail", None) or str(exc) or exc.__class__.__name__
        print(f"tallenne: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
