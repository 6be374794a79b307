"""A customer as a caller may see it (the identity code masked unless dpo/admin)."""

from __future__ import annotations

from schemas.customers import Address, CustomerOut, Membership
from schemas.personal_id import mask_personal_id
from service.http.principal import Principal
from service.policy import SEES_PERSONAL_ID
from storage.customers import Customer
from storage.keyring import KeyRing


def present(keyring: KeyRing, principal: Principal, customer: Customer) -> CustomerOut:
    """A customer as this caller may see it: the identity code masked unless dpo/admin."""
    code: str | None = None
    if customer.personal_id_enc is not None:
        plain = keyring.personal_ids.decrypt(customer.personal_id_enc, customer.id)
        code = plain if principal.role in SEES_PERSONAL_ID else mask_personal_id(plain)
    return CustomerOut(
        id=customer.id,
        name=customer.name,
        personal_id=code,
        address=Address.model_validate(customer.address or {}),
        email=customer.email,
        phone=customer.phone,
        companies=[Membership.model_validate(m._asdict()) for m in customer.companies],
        created_at=customer.created_at,
        updated_at=customer.updated_at,
    )
