"""Who is calling: bearer tokens and session cookies resolved to a principal, plus CSRF; and
the actor of a request (`Actor`), as whom domain functions write audit events."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from uuid import UUID

from aiohttp import web

from schemas.ip import truncated_ip
from service.http.client_address import client_address
from service.http.errors import Unauthenticated
from service.http.keys import AUDIT, POOL, PRINCIPAL_KEY, REQUEST_ID_KEY, SETTINGS
from service.http.principal import Principal
from storage import accounts
from storage.audit import AuditEntry, AuditLog, id_summary, subjects_of
from storage.db import Scope
from storage.errors import Forbidden

if TYPE_CHECKING:
    from service.http.api import Endpoint

SESSION_COOKIE = "tallenne_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def client_ip(request: web.Request) -> str | None:
    """The client's network as kept in audit events and logs (see service.http.client_address)."""
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


@dataclass(frozen=True)
class Actor:
    """Who acts in a request and where from, as its audit events record it, with the audit
    log they go to: what a domain function needs of the request to audit its work."""

    log: AuditLog
    principal: Principal | None
    request_id: str | None = None
    client_ip: str | None = None
    # The operator of a CLI command: no account, every company, this name and role.
    system: tuple[str, str] | None = None

    @classmethod
    def operator(cls, log: AuditLog, name: str, role: str) -> Actor:
        return cls(log=log, principal=None, system=(name, role))

    @property
    def caller(self) -> Principal:
        """The authenticated principal (Unauthenticated when there is none)."""
        if self.principal is None:
            raise Unauthenticated("sign in or send a bearer token")
        return self.principal

    def owner(self) -> tuple[str, str, str, Scope, UUID | None]:
        """Name, kind, role, scope and account id of whoever acts: the caller (Unauthenticated
        when there is none) or the operator."""
        if self.system is not None:
            return self.system[0], "system", self.system[1], Scope.everything(), None
        who = self.caller
        return who.name, who.kind, who.role, who.scope, who.account.id

    async def audit(
        self,
        action: str,
        *,
        target_type: str | None = None,
        target_id: str | None = None,
        company: str | None = None,
        reason: str | None = None,
        outcome: str = "ok",
        detail: dict[str, object] | None = None,
        actor_name: str | None = None,
        company_ids: Iterable[UUID] | None = None,
        subject_ids: Iterable[UUID] | None = None,
        company_codes: Iterable[str] | None = None,
    ) -> int:
        """Append one audit event about this actor's request and wait until it is committed.

        The event concerns `company_ids` (or the company named by `company`); when neither
        is given, the companies of a company-scoped caller, and otherwise no company
        (group-wide: only all-companies readers see it). `subject_ids` are the customers and
        recordings whose data it read or changed (`GET /api/v1/audit?subject=`)."""
        who = self.principal
        concerns = sorted(set(company_ids)) if company_ids is not None else None
        codes = sorted(set(company_codes)) if company_codes is not None else None
        if (concerns is None and company is None and not codes and who is not None
                and not who.account.all_companies):
            concerns = sorted(who.account.company_ids)
        name, kind, role = ((who.name, who.kind, who.role) if who is not None
                            else (self.system[0], "system", self.system[1])
                            if self.system is not None else ("anonymous", "anonymous", None))
        entry = AuditEntry(
            actor=actor_name or name,
            actor_kind=kind,
            role=role,
            action=action,
            target_type=target_type,
            target_id=target_id,
            company=company,
            reason=reason,
            outcome=outcome,
            request_id=self.request_id,
            client_ip=self.client_ip,
            detail=dict(detail or {}),
            company_ids=concerns,
            subject_ids=sorted(set(subject_ids)) if subject_ids is not None else None,
            company_codes=codes or None,
        )
        return int(await self.log.append(entry))


def actor_of(request: web.Request, principal: Principal | None = None) -> Actor:
    """The request's actor: `principal`, else the request's principal (if any)."""
    return Actor(
        log=request.app[AUDIT],
        principal=principal or request.get(PRINCIPAL_KEY),
        request_id=request.get(REQUEST_ID_KEY),
        client_ip=client_ip(request),
    )


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
    company_ids: Iterable[UUID] | None = None,
    subject_ids: Iterable[UUID] | None = None,
    company_codes: Iterable[str] | None = None,
) -> int:
    """Append one audit event about this request as its actor (`Actor.audit`), or as
    `principal` when given."""
    return await actor_of(request, principal).audit(
        action, target_type=target_type, target_id=target_id, company=company, reason=reason,
        outcome=outcome, detail=detail, actor_name=actor, company_ids=company_ids,
        subject_ids=subject_ids, company_codes=company_codes,
    )


def read_detail(
    *, customers: Iterable[UUID | None] = (), recordings: Iterable[UUID] = ()
) -> tuple[dict[str, object], list[UUID] | None]:
    """What an audited read of personal data records: the ids of the customers and
    recordings it returned (a digest and a count past 1,000 of either) for its detail, and
    the subject ids it is found by (`GET /api/v1/audit?subject=`)."""
    customer_ids = [c for c in customers if c is not None]
    recording_ids = list(recordings)
    detail: dict[str, object] = {"customers": id_summary(customer_ids),
                                 "recordings": id_summary(recording_ids)}
    return detail, subjects_of(customer_ids, recording_ids)
