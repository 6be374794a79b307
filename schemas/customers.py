"""Models of customers pushed by billing systems, their lookups and prohibitions."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from schemas.common import StrictModel
from schemas.personal_id import PersonalId

ProhibitedUse = Literal[
    "direct_marketing",
    "distance_selling",
    "other_direct_marketing",
    "market_research",
    "opinion_polls",
    "person_directories",
    "genealogy",
]
ProhibitionChannel = Literal["phone", "email", "post", "in_person"]
CUSTOMER_NUMBER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$"


class Address(StrictModel):
    street: str | None = Field(None, max_length=500)
    postal_code: str | None = Field(None, max_length=20)
    city: str | None = Field(None, max_length=200)
    country: str | None = Field(None, max_length=100)


class CustomerIn(StrictModel):
    """The record a billing or contract system pushes for one customer number."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: str = Field(min_length=1, max_length=500)
    personal_id: PersonalId = Field(description="Henkilötunnus; validated, stored encrypted.")
    address: Address = Field(default_factory=lambda: Address.model_validate({}))
    email: str | None = Field(None, max_length=320)
    phone: str | None = Field(None, max_length=50)
    ended_at: AwareDatetime | None = Field(
        None, description="When the customer relationship with this company ended (or will "
        "end); customer retention counts from the end of the last membership. Absent: "
        "unchanged; null: the membership goes on.")


class Membership(BaseModel):
    company: str
    customer_number: str
    ended_at: datetime | None = Field(
        None, description="End of the membership; an ended one keeps its number for the "
        "record, and new calls and web events with the number go to its current holder.")


class Prohibition(BaseModel):
    use: ProhibitedUse
    channel: ProhibitionChannel
    received_at: datetime
    recorded_by: str
    withdrawn_at: datetime | None = None
    withdrawn_by: str | None = None


class CustomerOut(BaseModel):
    id: UUID
    name: str | None
    personal_id: str | None = Field(
        description="Masked (`010190-****`) except for the dpo and admin roles."
    )
    address: Address
    email: str | None
    phone: str | None
    companies: list[Membership]
    created_at: datetime
    updated_at: datetime


class DataCounts(BaseModel):
    recordings: int
    web_events: int


class CustomerDetailOut(CustomerOut):
    prohibitions: list[Prohibition]
    counts: DataCounts


class CustomerLookupIn(StrictModel):
    """Either `personal_id`, or `company` with `customer_number`."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    personal_id: PersonalId | None = None
    company: str | None = None
    customer_number: str | None = None

    @model_validator(mode="after")
    def one_way_of_finding(self) -> CustomerLookupIn:
        by_number = self.company is not None and self.customer_number is not None
        if (self.personal_id is None) == (not by_number):
            raise ValueError("give either personal_id, or company and customer_number")
        return self


class CustomerList(BaseModel):
    items: list[CustomerOut]


class ProhibitionIn(StrictModel):
    use: ProhibitedUse
    channel: ProhibitionChannel
    received_at: AwareDatetime | None = Field(
        None, description="When the customer made it; defaults to now."
    )

