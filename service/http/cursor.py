"""The one page cursor of every keyset-paged endpoint: the last row's sort key, signed.

The token is base64url(JSON list + 16-byte HMAC), keyed from the master key and bound to the
list it pages, so a client can neither forge a position nor carry a cursor to another list.
A cursor that does not verify or parse is answered 400.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from aiohttp import web

from service.http.keys import KEYRING

MAC_BYTES = 16


def _key(request: web.Request, listing: str) -> bytes:
    master = request.app[KEYRING].master_key
    label = b"tallenne page cursor " + listing.encode()
    return hmac.new(master, label, hashlib.sha256).digest()


def _plain(value: datetime | UUID | int | str) -> int | str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value


def encode(request: web.Request, listing: str, *values: datetime | UUID | int | str) -> str:
    """The cursor of the page after the row whose sort key is `values`."""
    payload = json.dumps([_plain(value) for value in values]).encode()
    mac = hmac.new(_key(request, listing), payload, hashlib.sha256).digest()[:MAC_BYTES]
    return base64.urlsafe_b64encode(payload + mac).decode().rstrip("=")


def decode(request: web.Request, listing: str, token: str,
           *parsers: Callable[[Any], Any]) -> tuple[Any, ...]:
    """The sort key in `token`, each value read by its parser (`datetime.fromisoformat`,
    `UUID`, `int`); a forged, truncated or foreign cursor → 400."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        expected = hmac.new(_key(request, listing), payload, hashlib.sha256).digest()
        if len(raw) <= MAC_BYTES or not hmac.compare_digest(mac, expected[:MAC_BYTES]):
            raise ValueError("bad cursor")
        values = json.loads(payload)
        if not isinstance(values, list) or len(values) != len(parsers):
            raise ValueError("bad cursor")
        return tuple(parse(value) for parse, value in zip(parsers, values, strict=True))
    except (ValueError, TypeError, binascii.Error):
        raise web.HTTPBadRequest(text="the cursor is not valid") from None
