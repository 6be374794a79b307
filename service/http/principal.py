"""Who a request acts for: the authenticated account and the companies it may see."""

from __future__ import annotations

from dataclasses import dataclass

from storage.accounts import Account
from storage.db import Scope


@dataclass(frozen=True)
class Principal:
    account: Account
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
