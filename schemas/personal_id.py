"""Finnish personal identity code (henkilötunnus): the one place its rules live.

Validation, masking for display and birth-date extraction; nothing else parses a code.
"""

from __future__ import annotations

import datetime
import re
from typing import Annotated

from pydantic import AfterValidator

CHECK_CHARACTERS = "0123456789ABCDEFHJKLMNPRSTUVWXY"

CENTURY_SIGNS: dict[str, int] = {
    "+": 1800,
    "-": 1900,
    "Y": 1900,
    "X": 1900,
    "W": 1900,
    "V": 1900,
    "U": 1900,
    "A": 2000,
    "B": 2000,
    "C": 2000,
    "D": 2000,
    "E": 2000,
    "F": 2000,
}

# 000 and 001 have never been issued; 900-999 are reserved for test codes.
_FIRST_INDIVIDUAL_NUMBER = 2
_LAST_REAL_INDIVIDUAL_NUMBER = 899

_SHAPE = re.compile(
    r"(?P<day>[0-9]{2})(?P<month>[0-9]{2})(?P<year>[0-9]{2})"
    r"(?P<century>.)(?P<individual>[0-9]{3})(?P<check>.)"
)

_MASK = "****"

ALLOW_TEST_IDS: bool = False
"""Whether `PersonalId` accepts test codes (individual number 900-999); set at start-up."""


def set_allow_test_ids(flag: bool) -> None:
    """Let the application decide once, at start-up, whether test codes are accepted."""
    global ALLOW_TEST_IDS
    ALLOW_TEST_IDS = flag


def _parse(value: str, *, allow_test_ids: bool) -> tuple[str, datetime.date]:
    # Every message below is fixed text: the code is personal data and error
    # messages end up in logs and HTTP responses.
    code = value.strip().upper()
    match = _SHAPE.fullmatch(code)
    if match is None:
        raise ValueError(
            "personal identity code must be six digits, a century sign, "
            "three digits and a check character"
        )
    century = CENTURY_SIGNS.get(match["century"])
    if century is None:
        raise ValueError("personal identity code has an invalid century sign")
    try:
        born = datetime.date(century + int(match["year"]), int(match["month"]), int(match["day"]))
    except ValueError:
        raise ValueError("personal identity code has an invalid birth date") from None
    individual = int(match["individual"])
    if individual < _FIRST_INDIVIDUAL_NUMBER:
        raise ValueError("personal identity code has an invalid individual number")
    if individual > _LAST_REAL_INDIVIDUAL_NUMBER and not allow_test_ids:
        raise ValueError("personal identity code is a test code, which is not accepted")
    number = int(match["day"] + match["month"] + match["year"] + match["individual"])
    if CHECK_CHARACTERS[number % 31] != match["check"]:
        raise ValueError("personal identity code has an invalid check character")
    return code, born


def validate_personal_id(value: str, *, allow_test_ids: bool = False) -> str:
    """Return the canonical (stripped, upper-case) code or raise ValueError.

    Lower-case letters are accepted by upper-casing, but the century sign is
    kept as given: `-` and `Y` name the same century yet different people.
    """
    code, _ = _parse(value, allow_test_ids=allow_test_ids)
    return code


def mask_personal_id(code: str) -> str:
    """Show only birth date and century sign, e.g. ``010190-****``.

    Never raises: masking is used on the way into logs and views, where a
    malformed value must still not be shown.
    """
    canonical = code.strip().upper()
    if _SHAPE.fullmatch(canonical) is None:
        return "*" * 7 + _MASK
    return canonical[:7] + _MASK


_IN_TEXT = re.compile(
    r"(?<![0-9A-Za-z])[0-9]{6}[-+A-FU-Y][0-9]{3}[0-9A-Ya-y](?![0-9A-Za-z])", re.IGNORECASE
)


def mask_personal_ids_in(text: str) -> str:
    """Free text with every valid identity code in it (test codes too) masked as by
    `mask_personal_id`; for text that leaves the register, such as a call's notes in an
    export. Shapes that fail the check character are left alone: they are not codes."""

    def mask(match: re.Match[str]) -> str:
        try:
            _parse(match[0], allow_test_ids=True)
        except ValueError:
            return match[0]
        return mask_personal_id(match[0])

    return _IN_TEXT.sub(mask, text)


def birth_date(code: str) -> datetime.date:
    """Birth date encoded in a valid code; test codes have one too."""
    _, born = _parse(code, allow_test_ids=True)
    return born


def _validate_with_configured_policy(value: str) -> str:
    # Reads the flag at validation time so start-up configuration applies to
    # models defined at import time.
    return validate_personal_id(value, allow_test_ids=ALLOW_TEST_IDS)


PersonalId = Annotated[str, AfterValidator(_validate_with_configured_policy)]
"""Pydantic field type for a personal identity code.

Pydantic echoes the rejected input in `ValidationError`; models carrying this
type should set ``hide_input_in_errors=True`` and error handlers must not
forward the ``input`` of an error.
"""


def has_personal_id_shape(text: str) -> bool:
    """True when free text holds anything shaped like an identity code, valid or not: such
    text is refused where identity codes must never be stored (notes on a call)."""
    return _IN_TEXT.search(text) is not None
