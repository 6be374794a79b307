"""Finnish business ID (Y-tunnus) rule: seven digits, a hyphen and a mod-11 check digit."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

_FORMAT = re.compile(r"^(\d{7})-(\d)$")
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2)


def validate_business_id(value: str) -> str:
    value = value.strip()
    match = _FORMAT.match(value)
    if not match:
        raise ValueError("business ID must look like 1234567-8")
    remainder = sum(int(d) * w for d, w in zip(match.group(1), _WEIGHTS, strict=True)) % 11
    if remainder == 1:
        raise ValueError("business ID has no valid check digit")
    expected = 0 if remainder == 0 else 11 - remainder
    if int(match.group(2)) != expected:
        raise ValueError("business ID has a wrong check digit")
    return value


BusinessId = Annotated[str, AfterValidator(validate_business_id)]
