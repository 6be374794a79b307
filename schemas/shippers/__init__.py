"""Wire formats of log shippers (OTLP/HTTP logs, Loki push) decoded into web-event line dicts.

Pure: bytes and a Content-Type in, a `DecodedBatch` out. Each line dict is what
`schemas.web_events.WebEventLine` validates; a record that cannot be mapped is a
`RecordError` and does not affect its neighbours. A request that cannot be decoded at all
raises a `ShipperRequestError` (see `errors`).
"""

from schemas.shippers.batch import DecodedBatch, Limits, MappedLine, RecordError
from schemas.shippers.errors import (
    MalformedRequest,
    RequestTooLarge,
    ShipperRequestError,
    UnsupportedMediaType,
)
from schemas.shippers.loki import decode_loki_push, loki_format
from schemas.shippers.otlp import (
    RESPONSE_CONTENT_TYPES,
    decode_otlp_logs,
    encode_otlp_response,
    otlp_format,
    rejection_message,
)

__all__ = [
    "RESPONSE_CONTENT_TYPES",
    "DecodedBatch",
    "Limits",
    "MalformedRequest",
    "MappedLine",
    "RecordError",
    "RequestTooLarge",
    "ShipperRequestError",
    "UnsupportedMediaType",
    "decode_loki_push",
    "decode_otlp_logs",
    "encode_otlp_response",
    "loki_format",
    "otlp_format",
    "rejection_message",
]
