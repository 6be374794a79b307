"""People's accounts, machine tokens, server-side sessions and the company table."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg

from storage.crypto import new_token, token_digest
from storage.errors import AlreadyExists, InvalidInput, NotFound


@dataclass(frozen=True)
class Company:
    id: UUID
    code: str
    name: str
    business_id: str | None


@dataclass(frozen=True)
class Account:
    """Who is calling: a person (user) or a machine (token), with role and companies."""

    kind: str  # "user" | "token"
    id: UUID
    name: str
    role: str
    all_companies: bool
    company_ids: frozenset[UUID]
    company_codes: tuple[str, ...]
    disabled: bool = False
    user_id: UUID | None = None
    expires_at: datetime | None = None
    last_used_at: datetime | None = None


async def list_companies(conn: asyncpg.Connection) -> list[Company]:
    rows = await conn.fetch("SELECT id, code, name, business_id FROM companies ORDER BY code")
    return [Company(**dict(r)) for r in rows]


async def companies_by_code(conn: asyncpg.Connection, codes: list[str]) -> list[Company]:
    rows = await conn.fetch(
        "SELECT id, code, name, business_id FROM companies WHERE code = ANY($1::text[])", codes
    )
    found = {r["code"]: Company(**dict(r)) for r in rows}
    unknown = [c for c in codes if c not in found]
    if unknown:
        raise InvalidInput(
            f"unknown company code: {', '.join(unknown)}",
            [(["company"], f"unknown company code {c}") for c in unknown],
        )
    return [found[c] for c in codes]


async def add_company(
    conn: asyncpg.Connection, code: str, name: str, business_id: str | None
) -> Company:
    try:
        row = await conn.fetchrow(
            "INSERT INTO companies (code, name, business_id) VALUES ($1, $2, $3)"
            " RETURNING id, code, name, business_id",
            code, name, business_id,
        )
    except asyncpg.UniqueViolationError as exc:
        raise AlreadyExists("a company with that code or business ID exists") from exc
    assert row is not None
    return Company(**dict(row))


async def update_company(
    conn: asyncpg.Connection, code: str, name: str | None, business_id: str | None
) -> Company:
    try:
        row = await conn.fetchrow(
            "UPDATE companies SET name = coalesce($2, name),"
            " business_id = coalesce($3, business_id), updated_at = now()"
            " WHERE code = $1 RETURNING id, code, name, business_id",
            code, name, business_id,
        )
    except asyncpg.UniqueViolationError as exc:
        raise AlreadyExists("another company has that business ID") from exc
    if row is None:
        raise NotFound("no such company")
    return Company(**dict(row))


_USER_SELECT = """
SELECT u.id, u.username, u.role, u.all_companies, u.disabled, u.password_hash,
       coalesce(array_agg(c.id ORDER BY c.code) FILTER (WHERE c.id IS NOT NULL), '{}') AS cids,
       coalesce(array_agg(c.code ORDER BY c.code) FILTER (WHERE c.id IS NOT NULL), '{}') AS codes
FROM users u
LEFT JOIN user_companies uc ON uc.user_id = u.id
LEFT JOIN companies c ON c.id = uc.company_id
"""


def _user_account(row: asyncpg.Record) -> Account:
    return Account(
        kind="user",
        id=row["id"],
        name=row["username"],
        role=row["role"],
        all_companies=row["all_companies"],
        company_ids=frozenset(row["cids"]),
        company_codes=tuple(row["codes"]),
        disabled=row["disabled"],
        user_id=row["id"],
    )


async def create_user(
    conn: asyncpg.Connection,
    username: str,
    password_hash: str,
    role: str,
    company_ids: list[UUID],
    all_companies: bool,
) -> Account:
    async with conn.transaction():
        try:
            user_id = await conn.fetchval(
                "INSERT INTO users (username, password_hash, role, all_companies)"
                " VALUES ($1, $2, $3, $4) RETURNING id",
                username, password_hash, role, all_companies,
            )
        except asyncpg.UniqueViolationError as exc:
            raise AlreadyExists("a user with that username exists") from exc
        await conn.executemany(
            "INSERT INTO user_companies (user_id, company_id) VALUES ($1, $2)",
            [(user_id, c) for c in company_ids],
        )
    account = await user_by_id(conn, user_id)
    assert account is not None
    return account


async def user_with_hash(conn: asyncpg.Connection, username: str) -> tuple[Account, str] | None:
    row = await conn.fetchrow(_USER_SELECT + " WHERE u.username = $1 GROUP BY u.id", username)
    if row is None:
        return None
    return _user_account(row), row["password_hash"]


async def user_by_id(conn: asyncpg.Connection, user_id: UUID) -> Account | None:
    row = await conn.fetchrow(_USER_SELECT + " WHERE u.id = $1 GROUP BY u.id", user_id)
    return _user_account(row) if row else None


async def list_users(conn: asyncpg.Connection) -> list[Account]:
    rows = await conn.fetch(_USER_SELECT + " GROUP BY u.id ORDER BY u.username")
    return [_user_account(r) for r in rows]


async def set_password_hash(conn: asyncpg.Connection, user_id: UUID, password_hash: str) -> None:
    await conn.execute(
        "UPDATE users SET password_hash = $2, password_changed_at = now() WHERE id = $1",
        user_id, password_hash,
    )


async def set_user_disabled(conn: asyncpg.Connection, username: str, disabled: bool) -> Account:
    user_id = await conn.fetchval(
        "UPDATE users SET disabled = $2 WHERE username = $1 RETURNING id", username, disabled
    )
    if user_id is None:
        raise NotFound("no such user")
    if disabled:
        # A disabled person's sessions and tokens end now; enabling them again revives none.
        await conn.execute(
            "UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
            user_id,
        )
        await conn.execute(
            "UPDATE api_tokens SET revoked_at = now()"
            " WHERE owner_user_id = $1 AND revoked_at IS NULL",
            user_id,
        )
    account = await user_by_id(conn, user_id)
    assert account is not None
    return account


async def revoke_user_sessions(conn: asyncpg.Connection, user_id: UUID) -> None:
    await conn.execute(
        "UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
        user_id,
    )


_CLIENT_SELECT = """
SELECT t.id, t.name, t.role, t.all_companies, t.owner_user_id, t.expires_at, t.last_used_at,
       t.revoked_at, t.created_at, t.owner_name,
       (SELECT u.username FROM users u WHERE u.id = t.owner_user_id) AS owner_username,
       coalesce(array_agg(c.id ORDER BY c.code) FILTER (WHERE c.id IS NOT NULL), '{}') AS cids,
       coalesce(array_agg(c.code ORDER BY c.code) FILTER (WHERE c.id IS NOT NULL), '{}') AS codes,
       (SELECT u.disabled FROM users u WHERE u.id = t.owner_user_id) AS owner_disabled,
       now() AS now
FROM api_tokens t
LEFT JOIN token_companies tc ON tc.token_id = t.id
LEFT JOIN companies c ON c.id = tc.company_id
"""


@dataclass(frozen=True)
class TokenRecord:
    id: UUID
    name: str
    role: str
    all_companies: bool
    company_codes: tuple[str, ...]
    owner_user_id: UUID | None
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    company_ids: frozenset[UUID] = frozenset()
    owner: str = ""  # the owning person's username, or the named system's name
    owner_kind: str = "system"  # "user" | "system"


def _token_record(row: asyncpg.Record) -> TokenRecord:
    return TokenRecord(
        id=row["id"],
        name=row["name"],
        role=row["role"],
        all_companies=row["all_companies"],
        company_codes=tuple(row["codes"]),
        owner_user_id=row["owner_user_id"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
        company_ids=frozenset(row["cids"]),
        owner=(row["owner_username"] or "") if row["owner_user_id"] else row["owner_name"],
        owner_kind="user" if row["owner_user_id"] else "system",
    )


# Expiry of a person's token unless they choose another; a named system's token (made by the
# CLI) lasts a year by default; no token outlives two years.
PERSONAL_TOKEN_DAYS = 90
MACHINE_TOKEN_DAYS = 365
MAX_TOKEN_DAYS = 730


async def create_token(
    conn: asyncpg.Connection,
    name: str,
    role: str,
    company_ids: list[UUID],
    all_companies: bool,
    *,
    owner_user_id: UUID | None = None,
    owner_name: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[TokenRecord, str]:
    """Create a token; the secret is returned once and only its digest is stored. Its owner
    is a person (`owner_user_id`) or a named system (`owner_name`, by default the token's
    name); without `expires_at` it expires after the default days of its kind."""
    secret = new_token()
    days = PERSONAL_TOKEN_DAYS if owner_user_id is not None else MACHINE_TOKEN_DAYS
    if owner_user_id is None and not owner_name:
        owner_name = name
    async with conn.transaction():
        token_id = await conn.fetchval(
            "INSERT INTO api_tokens (name, digest, role, all_companies, owner_user_id,"
            " owner_name, expires_at) VALUES ($1, $2, $3, $4, $5, $6,"
            " coalesce($7, now() + make_interval(days => $8))) RETURNING id",
            name, token_digest(secret), role, all_companies, owner_user_id,
            owner_name if owner_user_id is None else None, expires_at, days,
        )
        await conn.executemany(
            "INSERT INTO token_companies (token_id, company_id) VALUES ($1, $2)",
            [(token_id, c) for c in company_ids],
        )
        row = await conn.fetchrow(_CLIENT_SELECT + " WHERE t.id = $1 GROUP BY t.id", token_id)
    assert row is not None
    return _token_record(row), secret


async def list_tokens(conn: asyncpg.Connection, owner_user_id: UUID | None) -> list[TokenRecord]:
    if owner_user_id is None:
        rows = await conn.fetch(_CLIENT_SELECT + " GROUP BY t.id ORDER BY t.created_at")
    else:
        rows = await conn.fetch(
            _CLIENT_SELECT + " WHERE t.owner_user_id = $1 GROUP BY t.id ORDER BY t.created_at",
            owner_user_id,
        )
    return [_token_record(r) for r in rows]


async def revoke_token(
    conn: asyncpg.Connection, token_id: UUID, owner_user_id: UUID | None
) -> None:
    done = await conn.fetchval(
        "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now())"
        " WHERE id = $1 AND ($2::uuid IS NULL OR owner_user_id = $2) RETURNING id",
        token_id, owner_user_id,
    )
    if done is None:
        raise NotFound("no such token")


async def account_by_token(conn: asyncpg.Connection, token: str) -> Account | None:
    """The live token with this secret, or None; marks it used (at most once a minute)."""
    row = await conn.fetchrow(
        _CLIENT_SELECT + " WHERE t.digest = $1 AND t.revoked_at IS NULL"
        " AND t.expires_at > now() GROUP BY t.id",
        token_digest(token),
    )
    if row is None:
        return None
    # A user's personal token dies with the user (a missing owner reads NULL, not false).
    if row["owner_user_id"] is not None and row["owner_disabled"] is not False:
        return None
    if row["last_used_at"] is None or row["last_used_at"] < row["now"] - timedelta(minutes=1):
        await conn.execute("UPDATE api_tokens SET last_used_at = now() WHERE id = $1", row["id"])
    return Account(
        kind="token",
        id=row["id"],
        # A person's token acts as that person: its label is the owner's to choose and
        # must not let them act (author notes, evaluate, audit) under someone else's name.
        name=row["owner_username"] if row["owner_user_id"] is not None else row["name"],
        role=row["role"],
        all_companies=row["all_companies"],
        company_ids=frozenset(row["cids"]),
        company_codes=tuple(row["codes"]),
        user_id=row["owner_user_id"],
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
    )


@dataclass(frozen=True)
class Session:
    digest: bytes
    user_id: UUID
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime


async def create_session(conn: asyncpg.Connection, user_id: UUID) -> tuple[str, str]:
    """A new session id (never reused: a fresh one at every login) and its CSRF token."""
    session_id = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO sessions (digest, user_id, csrf_token) VALUES ($1, $2, $3)",
        token_digest(session_id), user_id, csrf,
    )
    return session_id, csrf


async def live_session(
    conn: asyncpg.Connection, session_id: str, *, idle_minutes: int, absolute_hours: int
) -> Session | None:
    """The session if it is neither revoked nor past its idle or absolute timeout; touched."""
    row = await conn.fetchrow(
        "UPDATE sessions SET last_seen_at = now()"
        " WHERE digest = $1 AND revoked_at IS NULL"
        " AND last_seen_at > now() - make_interval(mins => $2)"
        " AND created_at > now() - make_interval(hours => $3)"
        " RETURNING digest, user_id, csrf_token, created_at, last_seen_at",
        token_digest(session_id), idle_minutes, absolute_hours,
    )
    return Session(**dict(row)) if row else None


async def session_csrf_token(conn: asyncpg.Connection, session_id: str) -> str | None:
    """The CSRF token of a session, revoked or not; None when there is no such session."""
    token: str | None = await conn.fetchval(
        "SELECT csrf_token FROM sessions WHERE digest = $1", token_digest(session_id)
    )
    return token


async def revoke_session(conn: asyncpg.Connection, session_id: str) -> None:
    await conn.execute(
        "UPDATE sessions SET revoked_at = now() WHERE digest = $1", token_digest(session_id)
    )


def csrf_matches(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


LOGIN_LOCK = 0x7A11E60  # advisory-lock class of the per-account and per-address counters


@dataclass(frozen=True)
class FailureCount:
    kind: str  # "user" (the account) or "ip" (the client address)
    failures: int
    last: datetime | None


async def lock_login_failures(
    conn: asyncpg.Connection, username: str, ip: str, window: timedelta
) -> list[FailureCount]:
    """Take the per-account, then the per-address lock (for the transaction) and count the
    recent failures of each. Always in that order: no two attempts wait on each other."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))",
                       LOGIN_LOCK, "user:" + username)
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))",
                       LOGIN_LOCK, "ip:" + ip)
    rows = await conn.fetch(
        "SELECT 'user' AS kind, count(*) AS n, max(at) AS last FROM login_failures"
        " WHERE username = $1 AND at > now() - $3::interval"
        " UNION ALL SELECT 'ip', count(*), max(at) FROM login_failures"
        " WHERE client_ip = $2 AND at > now() - $3::interval",
        username, ip, window,
    )
    return [FailureCount(kind=r["kind"], failures=int(r["n"]), last=r["last"]) for r in rows]


async def record_login_failure(conn: asyncpg.Connection, username: str, ip: str) -> int:
    attempt: int = await conn.fetchval(
        "INSERT INTO login_failures (username, client_ip) VALUES ($1, $2) RETURNING id",
        username, ip,
    )
    return attempt


async def clear_login_failures(conn: asyncpg.Connection, username: str) -> None:
    await conn.execute("DELETE FROM login_failures WHERE username = $1", username)
