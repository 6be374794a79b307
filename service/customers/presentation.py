"""A customer as a caller may see it (the identity code masked unless dpo/admin)."""

from __future__ import annotations

from typing import Any

from schemas.customers import Address, CustomerOut
from schemas.personal_id import mask_personal_id
from service.http.principal import Principal
from service.policy import SEES_PERSONAL_ID
from storage.keyring import KeyRing


def present(keyring: KeyRing, principal: Principal, row: dict[str, Any]) -> CustomerOut:
    """A customer as this caller may see it: the identity code masked unless dpo/admin."""
    code: str | None = None
    if row["personal_id_enc"] is not None:
        plain = keyring.personal_ids.decrypt(row["personal_id_enc"])
        code = plain if principal.role in SEES_PERSONAL_ID else mask_personal_id(plain)
    return CustomerOut(
        id=row["id"],
        name=row["name"],
        personal_id=code,
        address=Address.model_validate(row["address"] or {}),
        email=row["email"],
        phone=row["phone"],
        companies=row["companies"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
