"""Shared by the vCon and export tests: the draft's JSON schema, a recording factory and
identity codes with a correct check character.

drafts/vcon-core-04.schema.json is the unsigned-form JSON schema of
draft-ietf-vcon-vcon-core-04 (appendix "vCon JSON Schema"; vcon_json_schema.json in the IETF
vCon working group's draft repository), unchanged apart from layout.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from schemas.personal_id import CHECK_CHARACTERS

SCHEMA_PATH = Path(__file__).parent / "drafts" / "vcon-core-04.schema.json"
COMPANY = "oulun-sahkonmyynti"


@cache
def vcon_validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator
                                      .FORMAT_CHECKER)


def schema_errors(document: Any) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}"
            for e in vcon_validator().iter_errors(document)]


def identity_code(birth: str = "131052", individual: str = "308", sign: str = "-") -> str:
    """A code with a correct check character (birth as DDMMYY)."""
    check = CHECK_CHARACTERS[int(birth + individual) % 31]
    return f"{birth}{sign}{individual}{check}"


def recording(audio: bytes = b"RIFF-not-really-audio", **overrides: Any) -> dict[str, Any]:
    started = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "company": COMPANY,
        "external_id": f"call-{uuid.uuid4().hex[:10]}",
        "started_at": started,
        "ended_at": started + timedelta(minutes=4),
        "direction": "inbound",
        "agent": "agent-7",
        "queue": "billing",
        "caller": "040 123 4567",
        "callee": "08 5584 3100",
        "customer_id": uuid.uuid4(),
        "purpose": "quality",
        "tags": ["billing", "complaint"],
        "format": "wav",
        "codec": "pcm_s16le",
        "duration_s": 240.0,
        "sha256": hashlib.sha256(audio).hexdigest(),
        "retain_until": started + timedelta(days=365),
        "legal_holds": ["case-2026-17"],
    }
    values.update(overrides)
    return values


def decode_content_hash(token: str) -> tuple[str, bytes]:
    algorithm, _, encoded = token.partition("-")
    assert "=" not in encoded, "base64url in a ContentHash carries no padding"
    return algorithm, base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
