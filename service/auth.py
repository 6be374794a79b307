"""Who is calling: bearer tokens and session cookies resolved to a principal, plus CSRF."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiohttp import web

from schemas.ip import truncated_ip
from service.client_address import client_address
from service.typedefs import AUDIT, POOL, PRINCIPAL_KEY, REQUEST_ID_KEY, SETTINGS
from storage import accounts
from storage.audit import AuditEntry
from storage.db import Scope
from storage.errors import Forbidden, Unauthenticated

if TYPE_CHECKING:
    from service.api import Endpoint

SESSION_COOKIE = "tallenne_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Principal:
    account: accounts.Account
    via_session: str | None = None  # the session id when authenticated by cookie

    @property
    def kind(self) -> str:
        return self.account.kind

    @property
    def name(self) -> str:
        return self.account.name

    @property
    def role(self) -> str:
        return self.account.role

    @property
    def scope(self) -> Scope:
        if self.account.all_companies:
            return Scope.everything()
        return Scope.of(self.account.company_ids)


def client_ip(request: web.Request) -> str | None:
    """The client's network as kept in audit events and logs (see service.client_address)."""
    return truncated_ip(client_address(request))


async def authenticate(request: web.Request, endpoint: Endpoint) -> Principal:
    settings = request.app[SETTINGS]
    pool = request.app[POOL]
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
        async with pool.acquire() as conn:
            account = await accounts.account_by_token(conn, token.strip())
        if account is None:
            raise Unauthenticated("the token is unknown, expired or revoked")
        principal = Principal(account)
        await _audit_first_use_today(request, principal)
        return principal
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        raise Unauthenticated("sign in or send a bearer token")
    async with pool.acquire() as conn:
        session = await accounts.live_session(
            conn,
            session_id,
            idle_minutes=settings.session_idle_minutes,
            absolute_hours=settings.session_absolute_hours,
        )
        account = await accounts.user_by_id(conn, session.user_id) if session else None
    if session is None or account is None or account.disabled:
        raise Unauthenticated("the session has ended; sign in again")
    if request.method not in SAFE_METHODS and not accounts.csrf_matches(
        session.csrf_token, request.headers.get("X-CSRF-Token")
    ):
        raise Forbidden("the X-CSRF-Token header is missing or wrong")
    return Principal(account, via_session=session_id)


async def _audit_first_use_today(request: web.Request, principal: Principal) -> None:
    last = principal.account.last_used_at
    today = datetime.now(UTC).date()
    if last is not None and last.astimezone(UTC).date() == today:
        return
    await audit(request, "token.first_use_today", target_type="token",
                target_id=str(principal.account.id), principal=principal)


def principal_of(request: web.Request) -> Principal:
    found: Principal | None = request.get(PRINCIPAL_KEY)
    if found is None:
        raise Unauthenticated("sign in or send a bearer token")
    return found


async def audit(
    request: web.Request,
    action: str,
    *,
    target_type: str | None = None,
    target_id: str | None = None,
    company: str | None = None,
    reason: str | None = None,
    outcome: str = "ok",
    detail: dict[str, object] | None = None,
    principal: Principal | None = None,
    actor: str | None = None,
) -> int:
    """Append one audit event about this request and wait until it is committed."""
    who = principal or request.get(PRINCIPAL_KEY)
    entry = AuditEntry(
        actor=actor or (who.name if who else "anonymous"),
        actor_kind=who.kind if who else "anonymous",
        role=who.role if who else None,
        action=action,
        target_type=target_type,
        target_id=target_id,
        company=company,
        reason=reason,
        outcome=outcome,
        request_id=request.get(REQUEST_ID_KEY),
        client_ip=client_ip(request),
        detail=dict(detail or {}),
    )
    return int(await request.app[AUDIT].append(entry))
