"""Errors of decoding a whole shipper request; they know nothing of HTTP.

    ShipperRequestError
    ├── MalformedRequest      the body is not the message its content type names (→ 400)
    ├── UnsupportedMediaType  the content type is not one the endpoint speaks (→ 415)
    └── RequestTooLarge       over the byte cap once decompressed, or over the record cap (→ 413)

A record that cannot be mapped is not an exception: it is a `RecordError` in the batch.
"""

from __future__ import annotations


class ShipperRequestError(Exception):
    """Base: the request as a whole cannot be decoded; nothing of it may be stored."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class MalformedRequest(ShipperRequestError):
    pass


class UnsupportedMediaType(ShipperRequestError):
    pass


class RequestTooLarge(ShipperRequestError):
    pass
