"""Disclosures to recipients outside the register: purposes, fields, and which prohibitions
exclude a customer from which purpose (the one place that mapping is decided)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field, model_validator

from schemas.common import StrictModel
from schemas.customers import ProhibitedUse
from schemas.free_text import FreeText

DisclosurePurpose = Literal[
    "marketing_register",
    "distance_selling",
    "market_research",
    "opinion_polls",
    "subcontractor",
    "debt_collection",
]
DisclosedField = Literal["name", "address", "email", "phone", "customer_number", "personal_id"]

# "Other direct marketing" (muu suoramarkkinointi) is direct marketing by any means other
# than addressed advertising and distance selling. It is not a purpose of its own here: a
# marketing register passes its names on for direct marketing of every kind, so whoever has
# prohibited other direct marketing (or direct marketing as a whole) is left out of it.
# Distance selling is a kind of its own with its own prohibition; research, polls,
# subcontracting and debt collection are not direct marketing.
OTHER_DIRECT_MARKETING_EXCLUDED_BY: frozenset[ProhibitedUse] = frozenset(
    {"other_direct_marketing", "direct_marketing"}
)

# A prohibition in force of any of these uses silently excludes the customer from a
# disclosure for the purpose. Subcontractors (on the customer's power of attorney or request)
# and debt collection are not direct marketing and are never excluded.
EXCLUDED_BY: dict[DisclosurePurpose, frozenset[ProhibitedUse]] = {
    "marketing_register": OTHER_DIRECT_MARKETING_EXCLUDED_BY,
    "distance_selling": frozenset({"distance_selling", "direct_marketing"}),
    "market_research": frozenset({"market_research"}),
    "opinion_polls": frozenset({"opinion_polls"}),
    "subcontractor": frozenset(),
    "debt_collection": frozenset(),
}
# The identity code leaves only for a subcontractor acting for the customer or a debt collector.
PERSONAL_ID_PURPOSES: frozenset[DisclosurePurpose] = frozenset({"subcontractor", "debt_collection"})


class DisclosureIn(StrictModel):
    recipient: FreeText = Field(min_length=1, max_length=300)
    recipient_country: str = Field(
        pattern=r"^[A-Za-z]{2}$", description="ISO 3166-1 alpha-2; must be in the EU/EEA."
    )
    purpose: DisclosurePurpose
    legal_basis: FreeText = Field(min_length=1, max_length=500)
    company: str = Field(description="The company whose customers are disclosed.")
    fields: list[DisclosedField] = Field(min_length=1)
    customer_ids: list[UUID] | None = Field(
        None, description="Only these customers; exactly one for debt collection."
    )

    @model_validator(mode="after")
    def purpose_rules(self) -> DisclosureIn:
        if "personal_id" in self.fields and self.purpose not in PERSONAL_ID_PURPOSES:
            raise ValueError("personal_id is disclosed only to a subcontractor or debt collector")
        if self.purpose == "debt_collection" and len(self.customer_ids or []) != 1:
            raise ValueError("debt collection discloses a single customer: one customer_id")
        self.fields = list(dict.fromkeys(self.fields))
        return self


class DisclosureOut(BaseModel):
    id: UUID
    company: str
    disclosed_by: str
    recipient: str
    recipient_country: str
    purpose: DisclosurePurpose
    legal_basis: str
    fields: list[str]
    customer_ids: list[UUID]
    customer_count: int
    disclosed_at: datetime


class DisclosureQuery(StrictModel):
    company: str | None = None
    customer_id: UUID | None = None
    limit: int = Field(100, ge=1, le=1000)
    cursor: str | None = None


class DisclosurePage(BaseModel):
    items: list[DisclosureOut]
    next_cursor: str | None = None
