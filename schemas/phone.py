"""Telephone numbers: the one place a Finnish or international number is put in E.164 form.

The numbering plan comes from `phonenumbers` (Google's libphonenumber metadata), so national
forms ("040 123 4567", "09 123 4567"), "00358…" and "+358…" all give the same number.
"""

from __future__ import annotations

import phonenumbers

DEFAULT_REGION = "FI"


def to_e164(number: str | None, *, region: str = DEFAULT_REGION) -> str | None:
    """The number as E.164 ("+358401234567"), or None when it is not a valid number
    (an internal extension, a withheld number, free text)."""
    if number is None or not number.strip():
        return None
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def tel_uri(number: str | None, *, region: str = DEFAULT_REGION) -> str | None:
    """An RFC 3966 global-number tel URI ("tel:+358401234567"), or None (see `to_e164`)."""
    e164 = to_e164(number, region=region)
    return None if e164 is None else f"tel:{e164}"
