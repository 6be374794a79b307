"""Models of people, machine tokens, sessions and companies."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, Field

from schemas.business_id import BusinessId
from schemas.common import StrictModel
from schemas.free_text import FreeText

RoleName = Literal["ingest", "quality", "customer_service", "dpo", "admin"]
CompanyCode = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")


class LoginIn(StrictModel):
    username: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1024)


class LoginOut(BaseModel):
    csrf_token: str = Field(description="Send as X-CSRF-Token with state-changing requests.")


class MeOut(BaseModel):
    kind: Literal["user", "token"]
    name: str
    role: RoleName
    companies: list[str]
    all_companies: bool = False


class TokenCreateIn(StrictModel):
    name: str = Field(min_length=1, max_length=200)
    role: RoleName | None = Field(
        None, description="Defaults to the caller's role; a person may not exceed it."
    )
    companies: list[str] = Field(
        default_factory=list, description="Default: the companies of the person making it.")
    all_companies: bool = False
    expires_at: AwareDatetime | None = Field(
        None, description="Default: 90 days from now; at most two years from now.")


class TokenOut(BaseModel):
    id: UUID
    name: str
    role: RoleName
    companies: list[str]
    all_companies: bool
    owner: str = Field(description="The person who made it, or the system it was made for.")
    owner_kind: Literal["user", "system"]
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreatedOut(TokenOut):
    token: str = Field(description="The secret, shown only in this response.")


class TokenList(BaseModel):
    items: list[TokenOut]


class UserCreateIn(StrictModel):
    # A username is every audit event's actor and in log lines: never an identity code.
    username: FreeText = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._@-]+$")
    password: str = Field(min_length=1, max_length=1024)
    role: RoleName
    companies: list[str] = Field(default_factory=list)
    all_companies: bool = False


class UserOut(BaseModel):
    id: UUID
    username: str
    role: RoleName
    companies: list[str]
    all_companies: bool
    disabled: bool


class UserList(BaseModel):
    items: list[UserOut]


class UserPatchIn(StrictModel):
    disabled: bool | None = None
    password: str | None = Field(None, min_length=1, max_length=1024,
                                 description="Admin reset of the user's password.")


class PasswordChangeIn(StrictModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class CompanyIn(StrictModel):
    code: str = CompanyCode
    name: str = Field(min_length=1, max_length=300)
    business_id: BusinessId | None = None


class CompanyPatchIn(StrictModel):
    name: str | None = Field(None, min_length=1, max_length=300)
    business_id: BusinessId | None = None


class CompanyOut(BaseModel):
    id: UUID
    code: str
    name: str
    business_id: str | None


class CompanyList(BaseModel):
    items: list[CompanyOut]
