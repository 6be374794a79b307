"""Which role may take which action: the one table every endpoint is checked against."""

from __future__ import annotations

from typing import Literal

Role = Literal["ingest", "quality", "customer_service", "dpo", "admin"]
ROLES: tuple[Role, ...] = ("ingest", "quality", "customer_service", "dpo", "admin")

# Actions that need no role check: public pages and what every signed-in caller may do.
PUBLIC = "public"
AUTHENTICATED = "authenticated"

ACTIONS: dict[str, str] = {
    "recording.ingest": "push a recording",
    "recording.search": "search recordings and read their metadata",
    "recording.replay": "replay or download recording audio",
    "recording.erase": "erase one recording",
    "evaluation.write": "score and annotate a call",
    "evaluation.read": "read evaluations of a call",
    "annotation.write": "note and bookmark a call, delete one's own notes",
    "annotation.read": "read a call's notes",
    "evaluation_form.read": "list and read evaluation forms",
    "evaluation_form.manage": "define, change and deactivate evaluation forms",
    "customer.write": "push customer records",
    "customer.read": "look up customers and read their records",
    "prohibition.write": "record or withdraw a prohibition",
    "access_report.read": "produce the access report of a customer",
    "access_request.write": "record a customer's verified access request",
    "customer.erase": "erase a customer",
    "web_event.ingest": "push web-site usage events",
    "web_event.read": "read web-site usage events",
    "site.manage": "read and change the site registry (which company a web site belongs to)",
    "retention.read": "read retention policies",
    "retention.write": "change retention policies",
    "legal_hold.manage": "place and release legal holds",
    "purge.run": "preview and run purges",
    "disclosure.create": "disclose data to a recipient",
    "disclosure.read": "read the disclosure log",
    "audit.read": "read the audit trail",
    "audit.verify": "verify the audit chain",
    "user.manage": "manage user accounts",
    "company.manage": "add and rename companies",
    "token.manage": "manage every API token",
    "export.run": "export calls in bulk, follow and download own export jobs",
    "subject.search": "find everything held about one person (phone or identity code)",
}

ROLE_ACTIONS: dict[Role, frozenset[str]] = {
    "ingest": frozenset({"recording.ingest", "customer.write", "web_event.ingest"}),
    "quality": frozenset(
        {
            "recording.search",
            "recording.replay",
            "evaluation.write",
            "evaluation.read",
            "evaluation_form.read",
            "export.run",
            "annotation.write",
            "annotation.read",
        }
    ),
    "customer_service": frozenset(
        {
            "customer.read",
            "prohibition.write",
            "access_request.write",
            "recording.search",
            "evaluation.read",
            "evaluation_form.read",
            "annotation.read",
            "web_event.read",
        }
    ),
    "dpo": frozenset(
        {
            "customer.read",
            "prohibition.write",
            "access_request.write",
            "access_report.read",
            "customer.erase",
            "recording.search",
            "recording.replay",
            "recording.erase",
            "evaluation.read",
            "evaluation_form.read",
            "annotation.read",
            "web_event.read",
            "retention.read",
            "disclosure.create",
            "disclosure.read",
            "audit.read",
            "export.run",
            "subject.search",
        }
    ),
    "admin": frozenset(ACTIONS),
}

# Roles that see personal identity codes unmasked.
SEES_PERSONAL_ID: frozenset[Role] = frozenset({"dpo", "admin"})
# Roles that may be granted every company at once.
MAY_HAVE_ALL_COMPANIES: frozenset[Role] = frozenset({"dpo", "admin"})


def allowed(role: str, action: str) -> bool:
    if action in (PUBLIC, AUTHENTICATED):
        return True
    return action in ROLE_ACTIONS.get(role, frozenset())  # type: ignore[call-overload]


def actions_of(role: str) -> frozenset[str]:
    """Everything a role may do; a role may grant only roles whose actions are all its own."""
    for known, actions in ROLE_ACTIONS.items():
        if known == role:
            return actions
    return frozenset()
