"""What a decoded shipper batch becomes once the web-event line rule has judged it."""

from __future__ import annotations

from pydantic import ValidationError

from schemas.shippers import DecodedBatch
from schemas.web_events import WebEventLine


def validated(batch: DecodedBatch) -> tuple[dict[int, WebEventLine], dict[int, str]]:
    """Lines by record number that pass WebEventLine, and every failure by record number."""
    lines: dict[int, WebEventLine] = {}
    failures = {error.record: error.error for error in batch.errors}
    for number, line in batch.lines:
        try:
            lines[number] = WebEventLine.model_validate(line)
        except ValidationError as exc:
            failures[number] = str(exc)
    return lines, failures
