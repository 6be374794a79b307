"""The rules of accounts and sign-in: password hashing off the event loop, the sign-in
throttle, who may grant what, a new person's account and the names a person and a system
token may not share (used by the API and the CLI), and how the CLI audits account changes."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg

from service.http.errors import TooManyRequests
from service.http.principal import Principal
from service.policy import MAY_HAVE_ALL_COMPANIES, ROLES, actions_of
from storage import accounts, passwords
from storage.audit import AuditEntry, append_batch
from storage.errors import AlreadyExists, Forbidden, InvalidInput

FREE_FAILURES = 5
THROTTLE_WINDOW = timedelta(minutes=15)
MAX_DELAY_S = 900


async def hash_password(password: str) -> str:
    """argon2 takes tens of milliseconds of CPU: keep it off the event loop."""
    return await asyncio.to_thread(passwords.hash_password, password)


async def verify_password(stored_hash: str, password: str) -> bool:
    return await asyncio.to_thread(passwords.verify_password, stored_hash, password)


def throttle_delay(failures: int) -> int:
    """Seconds to wait after the latest failure: none for the first five, then doubling."""
    if failures < FREE_FAILURES:
        return 0
    return int(min(MAX_DELAY_S, 2 ** (failures - FREE_FAILURES + 1)))


async def reserve_attempt(pool: asyncpg.Pool, username: str, ip: str) -> int:
    """Count this attempt as a failure before the password is checked, atomically with the
    throttle check: under a per-account and a per-address lock, refuse (429) when either is
    throttled, else record a failure row (removed again when the password is right). A burst
    of parallel attempts is thereby counted one by one. Returns the row's id."""
    async with pool.acquire() as conn, conn.transaction():
        counts = await accounts.lock_login_failures(conn, username, ip, THROTTLE_WINDOW)
        now = datetime.now(UTC)
        # Per IP the allowance is wider: several people may share one office address.
        for count in counts:
            failures = count.failures if count.kind == "user" else count.failures // 4
            delay = throttle_delay(failures)
            if delay and count.last is not None:
                wait = (count.last + timedelta(seconds=delay) - now).total_seconds()
                if wait > 0:
                    raise TooManyRequests(
                        "too many failed sign-ins; wait before trying again", int(wait) + 1
                    )
        return await accounts.record_login_failure(conn, username, ip)


def within(principal: Principal, all_companies: bool, company_ids: Iterable[UUID]) -> bool:
    """Whether an account or token of these companies lies inside the principal's scope: an
    all-companies one (a group-wide object) only inside an all-companies principal's."""
    if principal.account.all_companies:
        return True
    ids = set(company_ids)
    return not all_companies and bool(ids) and ids <= principal.account.company_ids


def grants_no_more(principal: Principal, role: str, all_companies: bool,
                   company_ids: Iterable[UUID]) -> None:
    """A principal may hand out only what it has: a role whose actions are all its own, and
    companies it sees itself."""
    if not actions_of(role) <= actions_of(principal.role):
        raise Forbidden(f"a {principal.role} cannot grant the role {role}")
    if all_companies and not principal.account.all_companies:
        raise Forbidden("only an all-companies principal can grant all companies")
    if not principal.account.all_companies and not set(company_ids) <= (
            principal.account.company_ids):
        raise Forbidden("a principal cannot grant companies it does not see")


async def create_user_account(
    conn: asyncpg.Connection, username: str, password: str, role: str,
    company_codes: list[str], all_companies: bool,
) -> accounts.Account:
    """Shared by the API and the CLI: the rules for a new person's account."""
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role}", [(["role"], "unknown role")])
    if all_companies and role not in MAY_HAVE_ALL_COMPANIES:
        raise InvalidInput("only admin and dpo accounts may see all companies",
                           [(["all_companies"], "not allowed for this role")])
    if not all_companies and not company_codes:
        raise InvalidInput("give at least one company (or all companies for admin/dpo)",
                           [(["companies"], "empty")])
    passwords.check_password_rules(password, username=username)
    await ensure_no_system_token_named(conn, username)
    companies = await accounts.companies_by_code(conn, company_codes)
    return await accounts.create_user(conn, username, await hash_password(password), role,
                                      [c.id for c in companies], all_companies)


# A system token acts under its own name (a personal one under its owner's username), and
# private notes, evaluations and audit events are keyed on that name: a person and a system
# token sharing it would read, delete and overwrite each other's work. So neither may be
# given a name the other already has (revoked tokens and disabled people included: their
# work is still stored under it).


async def ensure_no_system_token_named(conn: asyncpg.Connection, username: str) -> None:
    """AlreadyExists when a system token (ever) acts under this name."""
    if any(t.owner_kind == "system" and t.name == username
           for t in await accounts.list_tokens(conn, None)):
        raise AlreadyExists("a system token acts under that name; choose another username")


async def ensure_no_person_named(conn: asyncpg.Connection, token_name: str) -> None:
    """AlreadyExists when a person's account has this name as its username."""
    if await accounts.user_with_hash(conn, token_name) is not None:
        raise AlreadyExists("a person's account has that username, and a system token acts"
                            " under its name; choose another token name")


def cli_operator() -> str:
    """Who the command line acts as in the audit trail: `cli:<OS user>`."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


async def audit_cli_change(
    conn: asyncpg.Connection, action: str, *, target_type: str, target_id: str,
    company_ids: Iterable[UUID] | None = None, company: str | None = None,
    detail: dict[str, object] | None = None,
) -> None:
    """Append the audit event of a change made at the command line, as its operator, with
    the action and detail the API writes for the same change (None companies: group-wide)."""
    await append_batch(conn, [AuditEntry(
        actor=cli_operator(), actor_kind="cli", action=action, target_type=target_type,
        target_id=target_id, company=company,
        company_ids=None if company_ids is None else sorted(company_ids),
        detail=dict(detail or {}),
    )])
