"""Sign-in, sessions, the caller's identity, tokens, user accounts and companies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from aiohttp import web

from schemas.identity import (
    CompanyIn,
    CompanyList,
    CompanyOut,
    CompanyPatchIn,
    LoginIn,
    LoginOut,
    MeOut,
    PasswordChangeIn,
    TokenCreatedOut,
    TokenCreateIn,
    TokenList,
    TokenOut,
    UserCreateIn,
    UserList,
    UserOut,
    UserPatchIn,
)
from service.http.api import RouteTable, json_response, read_json
from service.http.auth import SESSION_COOKIE, audit, client_ip, principal_of
from service.http.errors import Unauthenticated
from service.http.keys import POOL, SETTINGS
from service.identity.accounts import (
    create_user_account,
    grants_no_more,
    hash_password,
    reserve_attempt,
    verify_password,
    within,
)
from service.policy import (
    AUTHENTICATED,
    PUBLIC,
    allowed,
)
from storage import accounts, passwords
from storage.errors import Forbidden, InvalidInput, NotFound

routes = RouteTable()

@routes.route("POST", "/api/v1/session", action=PUBLIC, summary="Sign in (sets the cookie)",
              tag="identity", body=LoginIn, response=LoginOut, extra_statuses=(401, 429))
async def login(request: web.Request) -> web.Response:
    body = await read_json(request, LoginIn)
    await reserve_attempt(request.app[POOL], body.username, client_ip(request) or "unknown")
    pool = request.app[POOL]
    async with pool.acquire() as conn:
        found = await accounts.user_with_hash(conn, body.username)
        stored_hash = found[1] if found else passwords.DUMMY_HASH
        good = await verify_password(stored_hash, body.password)
        if not found or not good or found[0].disabled:
            # The attempt's failure row stays: it was written before the check.
            await audit(request, "login", outcome="failure", actor=body.username,
                        detail={"why": "disabled" if found and good else "bad credentials"})
            raise Unauthenticated("wrong username or password")
        account = found[0]
        if passwords.needs_rehash(stored_hash):
            await accounts.set_password_hash(conn, account.id, await hash_password(body.password))
        await accounts.clear_login_failures(conn, body.username)
        session_id, csrf = await accounts.create_session(conn, account.id)
    await audit(request, "login", actor=account.name, target_type="user",
                target_id=str(account.id), detail={"role": account.role},
                company_ids=None if account.all_companies else account.company_ids)
    response = json_response(LoginOut(csrf_token=csrf))
    # Secure unless plain-HTTP development says otherwise: behind a TLS-terminating proxy
    # the request itself arrives as http.
    response.set_cookie(SESSION_COOKIE, session_id, httponly=True, samesite="Strict",
                        secure=not request.app[SETTINGS].insecure_cookies, path="/")
    return response


@routes.route("DELETE", "/api/v1/session", action=AUTHENTICATED, summary="Sign out",
              tag="identity", status=204)
async def logout(request: web.Request) -> web.Response:
    principal = principal_of(request)
    if principal.via_session:
        async with request.app[POOL].acquire() as conn:
            await accounts.revoke_session(conn, principal.via_session)
    await audit(request, "logout", target_type="user", target_id=str(principal.account.id))
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


@routes.route("GET", "/api/v1/me", action=AUTHENTICATED, summary="Who is calling",
              tag="identity", response=MeOut)
async def me(request: web.Request) -> web.Response:
    principal = principal_of(request)
    account = principal.account
    companies = list(account.company_codes)
    if account.all_companies:
        async with request.app[POOL].acquire() as conn:
            companies = [c.code for c in await accounts.list_companies(conn)]
    return json_response(MeOut(kind=account.kind, name=account.name, role=account.role,
                               companies=companies, all_companies=account.all_companies))


@routes.route("POST", "/api/v1/me/password", action=AUTHENTICATED, summary="Change own password",
              tag="identity", body=PasswordChangeIn, status=204)
async def change_own_password(request: web.Request) -> web.Response:
    principal = principal_of(request)
    if principal.kind != "user":
        raise Forbidden("only a person signed in with a password can change it")
    body = await read_json(request, PasswordChangeIn)
    async with request.app[POOL].acquire() as conn:
        found = await accounts.user_with_hash(conn, principal.name)
        if found is None or not await verify_password(found[1], body.current_password):
            raise InvalidInput("the current password is wrong",
                               [(["body", "current_password"], "wrong password")])
        passwords.check_password_rules(body.new_password, username=principal.name)
        await accounts.set_password_hash(conn, principal.account.id,
                                         await hash_password(body.new_password))
    await audit(request, "user.password_change", target_type="user",
                target_id=str(principal.account.id))
    return web.Response(status=204)


def _token_out(record: accounts.TokenRecord) -> TokenOut:
    assert record.expires_at is not None
    return TokenOut(
        id=record.id, name=record.name, role=record.role,
        companies=list(record.company_codes), all_companies=record.all_companies,
        owner=record.owner, owner_kind="user" if record.owner_kind == "user" else "system",
        created_at=record.created_at, expires_at=record.expires_at,
        last_used_at=record.last_used_at, revoked_at=record.revoked_at,
    )


@routes.route("POST", "/api/v1/tokens", action=AUTHENTICATED, summary="Create an API token",
              tag="identity", body=TokenCreateIn, response=TokenCreatedOut, status=201)
async def create_token(request: web.Request) -> web.Response:
    principal = principal_of(request)
    if principal.via_session is None:
        # A leaked token must not breed: only a signed-in person (or the CLI) makes tokens.
        raise Forbidden("tokens are created by a signed-in person (or with"
                        " `tallenne token create`), never with a token")
    body = await read_json(request, TokenCreateIn)
    role = body.role or principal.role
    if not allowed(principal.role, "token.manage") and role != principal.role:
        raise Forbidden("a token cannot have another role than its owner")
    now = datetime.now(UTC)
    if body.expires_at is not None and body.expires_at <= now:
        raise InvalidInput("expires_at is in the past", [(["body", "expires_at"], "in the past")])
    if body.expires_at is not None and body.expires_at > now + timedelta(
            days=accounts.MAX_TOKEN_DAYS):
        raise InvalidInput("a token lives at most two years",
                           [(["body", "expires_at"], "more than two years from now")])
    all_companies = body.all_companies
    codes = body.companies
    if not codes and not all_companies:
        # Without companies, the token sees what its owner sees.
        all_companies = principal.account.all_companies
        codes = list(principal.account.company_codes)
    async with request.app[POOL].acquire() as conn:
        companies = await accounts.companies_by_code(conn, codes)
        grants_no_more(principal, role, all_companies, [c.id for c in companies])
        record, secret = await accounts.create_token(
            conn, body.name, role, [c.id for c in companies], all_companies,
            owner_user_id=principal.account.user_id, expires_at=body.expires_at,
        )
    await audit(request, "token.create", target_type="token", target_id=str(record.id),
                company_ids=None if record.all_companies else record.company_ids,
                detail={"name": body.name, "role": role, "owner": record.owner,
                        "expires_at": record.expires_at.isoformat() if record.expires_at
                        else None})
    out = TokenCreatedOut(**_token_out(record).model_dump(), token=secret)
    return json_response(out, status=201)


@routes.route("GET", "/api/v1/tokens", action=AUTHENTICATED, summary="List API tokens",
              tag="identity", response=TokenList)
async def list_tokens(request: web.Request) -> web.Response:
    principal = principal_of(request)
    manages = allowed(principal.role, "token.manage")
    if not manages and principal.account.user_id is None:
        return json_response(TokenList(items=[]))
    async with request.app[POOL].acquire() as conn:
        records = await accounts.list_tokens(conn, None if manages else principal.account.user_id)
    visible = [r for r in records
               if not manages or within(principal, r.all_companies, r.company_ids)]
    return json_response(TokenList(items=[_token_out(r) for r in visible]))


@routes.route("DELETE", "/api/v1/tokens/{token_id}", action=AUTHENTICATED,
              summary="Revoke an API token", tag="identity", status=204)
async def revoke_token(request: web.Request) -> web.Response:
    principal = principal_of(request)
    try:
        token_id = UUID(request.match_info["token_id"])
    except ValueError as exc:
        raise NotFound("no such token") from exc
    manages = allowed(principal.role, "token.manage")
    owner = None if manages else principal.account.user_id
    if owner is None and not manages:
        raise NotFound("no such token")
    async with request.app[POOL].acquire() as conn:
        found = {r.id: r for r in await accounts.list_tokens(conn, owner)}.get(token_id)
        if found is None or (manages and not within(principal, found.all_companies,
                                                    found.company_ids)):
            raise NotFound("no such token")
        await accounts.revoke_token(conn, token_id, owner)
    await audit(request, "token.revoke", target_type="token", target_id=str(token_id),
                company_ids=None if found.all_companies else found.company_ids)
    return web.Response(status=204)


def _user_out(account: accounts.Account) -> UserOut:
    return UserOut(id=account.id, username=account.name, role=account.role,
                   companies=list(account.company_codes), all_companies=account.all_companies,
                   disabled=account.disabled)


@routes.route("POST", "/api/v1/users", action="user.manage", summary="Create a person's account",
              tag="admin", body=UserCreateIn, response=UserOut, status=201,
              extra_statuses=(409,))
async def create_user(request: web.Request) -> web.Response:
    principal = principal_of(request)
    body = await read_json(request, UserCreateIn)
    async with request.app[POOL].acquire() as conn:
        companies = await accounts.companies_by_code(conn, body.companies)
        grants_no_more(principal, body.role, body.all_companies, [c.id for c in companies])
        account = await create_user_account(conn, body.username, body.password, body.role,
                                            body.companies, body.all_companies)
    await audit(request, "user.create", target_type="user", target_id=str(account.id),
                company_ids=None if account.all_companies else account.company_ids,
                detail={"username": account.name, "role": account.role})
    return json_response(_user_out(account), status=201)


@routes.route("GET", "/api/v1/users", action="user.manage", summary="List accounts",
              tag="admin", response=UserList)
async def list_users(request: web.Request) -> web.Response:
    principal = principal_of(request)
    async with request.app[POOL].acquire() as conn:
        users = await accounts.list_users(conn)
    visible = [u for u in users if within(principal, u.all_companies, u.company_ids)]
    return json_response(UserList(items=[_user_out(u) for u in visible]))


@routes.route("PATCH", "/api/v1/users/{username}", action="user.manage",
              summary="Disable, enable or reset the password of an account (disabling also "
              "revokes the person's tokens)", tag="admin",
              body=UserPatchIn, response=UserOut)
async def patch_user(request: web.Request) -> web.Response:
    principal = principal_of(request)
    username = request.match_info["username"]
    body = await read_json(request, UserPatchIn)
    async with request.app[POOL].acquire() as conn:
        found = await accounts.user_with_hash(conn, username)
        # An account outside the caller's companies (or a group-wide one seen from a
        # company) is as missing as one that does not exist.
        if found is None or not within(principal, found[0].all_companies,
                                       found[0].company_ids):
            raise NotFound("no such user")
        account = found[0]
        if body.password is not None:
            passwords.check_password_rules(body.password, username=username)
            await accounts.set_password_hash(conn, account.id, await hash_password(body.password))
            await accounts.revoke_user_sessions(conn, account.id)
        if body.disabled is not None:
            account = await accounts.set_user_disabled(conn, username, body.disabled)
        refreshed = await accounts.user_by_id(conn, account.id)
    assert refreshed is not None
    changes = body.model_dump(exclude_none=True)
    if "password" in changes:
        changes["password"] = "reset"  # noqa: S105 - records that it happened, not the value
    await audit(request, "user.change", target_type="user", target_id=str(account.id),
                company_ids=None if refreshed.all_companies else refreshed.company_ids,
                detail=changes)
    return json_response(_user_out(refreshed))


def _company_out(company: accounts.Company) -> CompanyOut:
    return CompanyOut(id=company.id, code=company.code, name=company.name,
                      business_id=company.business_id)


@routes.route("GET", "/api/v1/companies", action=AUTHENTICATED,
              summary="Companies the caller may see", tag="admin", response=CompanyList)
async def list_companies(request: web.Request) -> web.Response:
    principal = principal_of(request)
    async with request.app[POOL].acquire() as conn:
        companies = await accounts.list_companies(conn)
    visible = [c for c in companies if principal.scope.allows(c.id)]
    return json_response(CompanyList(items=[_company_out(c) for c in visible]))


@routes.route("POST", "/api/v1/companies", action="company.manage", summary="Add a company",
              tag="admin", body=CompanyIn, response=CompanyOut, status=201,
              extra_statuses=(409,))
async def add_company(request: web.Request) -> web.Response:
    if not principal_of(request).account.all_companies:
        raise Forbidden("adding a company to the group needs an all-companies admin")
    body = await read_json(request, CompanyIn)
    async with request.app[POOL].acquire() as conn:
        company = await accounts.add_company(conn, body.code, body.name, body.business_id)
    await audit(request, "company.create", target_type="company", target_id=company.code,
                company=company.code)
    return json_response(_company_out(company), status=201)


@routes.route("PATCH", "/api/v1/companies/{code}", action="company.manage",
              summary="Rename a company or set its business ID", tag="admin",
              body=CompanyPatchIn, response=CompanyOut)
async def patch_company(request: web.Request) -> web.Response:
    body = await read_json(request, CompanyPatchIn)
    principal = principal_of(request)
    async with request.app[POOL].acquire() as conn:
        # Another company is as unknown to a company-scoped admin as one that does not exist.
        known = {c.code: c for c in await accounts.list_companies(conn)}
        target = known.get(request.match_info["code"])
        if target is None or not principal.scope.allows(target.id):
            raise NotFound("no such company")
        company = await accounts.update_company(conn, request.match_info["code"], body.name,
                                                body.business_id)
    await audit(request, "company.change", target_type="company", target_id=company.code,
                company=company.code, detail=body.model_dump(exclude_none=True))
    return json_response(_company_out(company))
