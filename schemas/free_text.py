"""Free text that must not carry a personal identity code: reasons, comments, annotations.

Such text is stored, audited, shown to other people and logged; an identity code typed into
it would leak past every rule that keeps codes encrypted. A field of type `FreeText` refuses
anything shaped like a code (a plausible birth date, a century sign, three digits and a
check character, whether or not the check character fits: a mistyped code is still one).
"""

from __future__ import annotations

import datetime
import re
from typing import Annotated

from pydantic import AfterValidator

from schemas.personal_id import CENTURY_SIGNS

_SHAPED_LIKE_A_CODE = re.compile(
    r"(?<![0-9A-Za-z])(?P<day>[0-9]{2})(?P<month>[0-9]{2})(?P<year>[0-9]{2})"
    r"(?P<century>[-+A-FU-Y])[0-9]{3}[0-9A-Y](?![0-9A-Za-z])",
    re.IGNORECASE,
)

MESSAGE = "must not contain a personal identity code"
"""The fixed text of the refusal: the input itself is never echoed."""


def contains_personal_id(text: str) -> bool:
    """Whether anything in the text is shaped like a Finnish identity code."""
    for match in _SHAPED_LIKE_A_CODE.finditer(text):
        century = CENTURY_SIGNS.get(match["century"].upper())
        if century is None:
            continue
        try:
            datetime.date(century + int(match["year"]), int(match["month"]), int(match["day"]))
        except ValueError:
            continue
        return True
    return False


def refuse_personal_id(text: str) -> str:
    """Pydantic validator: the text unchanged, or ValueError(MESSAGE)."""
    if contains_personal_id(text):
        raise ValueError(MESSAGE)
    return text


NoPersonalId = AfterValidator(refuse_personal_id)
"""Add to any `str` field: `Annotated[str, Field(max_length=…), NoPersonalId]`."""

FreeText = Annotated[str, NoPersonalId]
"""A string field that refuses an identity code (422 naming the field)."""
