"""Errors of a request itself (who calls, how often, what body it sends); they share the
storage errors' base so one middleware answers them all as problem documents.

    StorageError (storage.errors)
    ├── Unauthenticated     no valid credentials
    ├── TooManyRequests     throttled; carries retry_after seconds
    ├── TooLarge            a body or file exceeds a configured limit
    ├── UnsupportedMediaType  a body's Content-Type is not one the endpoint reads
    ├── RequestTimeout      the client stopped sending the body it announced
    └── InvalidInput (storage.errors)
        └── MalformedBody   the request body cannot be parsed at all (not JSON, too deep)
"""

from __future__ import annotations

from storage.errors import InvalidInput, StorageError


class Unauthenticated(StorageError):
    title = "Authentication required"


class TooManyRequests(StorageError):
    title = "Too many requests"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class TooLarge(StorageError):
    title = "Payload too large"


class UnsupportedMediaType(StorageError):
    title = "Unsupported media type"


class RequestTimeout(StorageError):
    title = "Request timeout"


class MalformedBody(InvalidInput):
    title = "Malformed body"
