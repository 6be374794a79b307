"""The DPO's subject search: everything held about one person across the caller's
companies, by phone number or identity code; audited (used by the API and the web page)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from schemas.disclosures import DisclosureOut
from schemas.phone import to_e164
from schemas.recordings import EvaluationOut
from schemas.subjects import SubjectRead, SubjectRecording, SubjectsOut, SubjectWebEvent
from service.customers.presentation import present
from service.http.auth import Actor
from service.recordings.presentation import evaluation_out, recording_out
from storage import customers
from storage import subjects as store
from storage.db import scoped
from storage.errors import InvalidInput
from storage.keyring import KeyRing
from storage.recordings import Recording


def e164_of(phone: str, where: list[str]) -> str:
    e164 = to_e164(phone)
    if e164 is None:
        raise InvalidInput("the phone number is not a valid number",
                           [(where, "not a valid Finnish or international number")])
    return e164


async def find_subject(pool: asyncpg.Pool, keyring: KeyRing, actor: Actor, *,
                       phone: str | None, personal_id: str | None,
                       phone_in: str = "query") -> SubjectsOut:
    """Search and audit: one `subject.search` event, with how the person was found (never
    the identity code itself). `phone_in` is where the phone number came from ("query" or
    "body"), named when it is not a valid number."""
    principal = actor.caller
    e164 = e164_of(phone, [phone_in if personal_id is None else "query",
                           "phone"]) if phone is not None else None
    async with scoped(pool, principal.scope) as conn:
        if personal_id is not None:
            digest = keyring.personal_ids.lookup_hash(personal_id)
            customer_ids = await customers.find_by_hash(conn, digest)
        else:
            assert e164 is not None
            customer_ids = await store.customers_by_phone(conn, e164)
        rows = await customers.customer_rows(conn, customer_ids)
        visible_ids = [r.id for r in rows]
        by_customer = await store.recordings_of_customers(conn, visible_ids)
        by_phone = await store.recordings_by_phone(conn, e164) if e164 is not None else []
        calls: dict[UUID, tuple[Recording, list[str]]] = {}
        for how, found in (("customer", by_customer), ("phone", by_phone)):
            for recording in found:
                calls.setdefault(recording.id, (recording, []))[1].append(how)
        evaluations = await store.evaluations_of(conn, list(calls))
        web_events = await store.web_events_of(conn, visible_ids)
        disclosures = await store.disclosures_of(conn, visible_ids)
        reads = await store.reads_of(conn, [*visible_ids, *calls])
    per_call: dict[UUID, list[EvaluationOut]] = {}
    for evaluation in evaluations:
        per_call.setdefault(evaluation.recording_id, []).append(evaluation_out(evaluation))
    ordered = sorted(calls.values(), key=lambda c: (c[0].started_at, c[0].id), reverse=True)
    result = SubjectsOut(
        phone=e164,
        customers=[present(keyring, principal, r) for r in rows],
        recordings=[SubjectRecording(**recording_out(r).model_dump(), matched_by=how,
                                     evaluations=per_call.get(r.id, []))
                    for r, how in ordered],
        web_events=[SubjectWebEvent.model_validate(e, from_attributes=True)
                    for e in web_events],
        disclosures=[DisclosureOut.model_validate(d, from_attributes=True) for d in disclosures],
        reads=[SubjectRead.model_validate(r, from_attributes=True) for r in reads],
        links=_links(visible_ids, e164),
    )
    await actor.audit("subject.search", target_type="subject",
                      subject_ids=[*visible_ids, *calls],
                      detail={"by": "personal_id" if personal_id is not None else "phone",
                              "customers": [str(i) for i in visible_ids],
                              "recordings": len(result.recordings),
                              "web_events": len(result.web_events)})
    return result


def _links(customer_ids: list[UUID], e164: str | None) -> dict[str, Any]:
    """Where the access report and an export of the person's calls start."""
    return {
        "access_reports": [f"/api/v1/customers/{c}/access-report" for c in customer_ids],
        "access_exports": [f"/api/v1/customers/{c}/access-export.zip" for c in customer_ids],
        "exports": [{"method": "POST", "href": "/api/v1/exports",
                     "body": {"filter": {"customer_id": str(c)}, "format": "zip"}}
                    for c in customer_ids],
    }
