"""Domain errors of the storage layer; they know nothing of HTTP.

    StorageError
    ├── NotFound            a record does not exist or lies outside the caller's scope
    ├── AlreadyExists       a unique key is taken
    ├── Conflict            the request contradicts stored state (different audio, legal hold)
    ├── Forbidden           the caller may not act on these records
    ├── InvalidInput        a value fails a domain rule (carries loc + msg pairs)
    │   └── AudioRejected   the bytes are not acceptable audio
    │       └── AudioTruncated  it ends before its headers say (cut off or still written)
    ├── Unavailable         a backing service (PostgreSQL, S3) cannot be reached
    ├── ObjectMissing       an object expected in S3 is not there
    └── IntegrityError      stored bytes no longer match their recorded hash
        ├── KeyDestroyed    the key that opens a record is gone (its customer was erased)
        └── RecordingIntegrityError  one recording's audio failed within a larger stream
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID


class StorageError(Exception):
    """Base of every domain error."""

    title = "Error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(StorageError):
    title = "Not found"


class AlreadyExists(StorageError):
    title = "Already exists"


class Conflict(StorageError):
    title = "Conflict"


class Forbidden(StorageError):
    title = "Forbidden"


class InvalidInput(StorageError):
    title = "Invalid input"

    def __init__(
        self, detail: str, errors: Sequence[tuple[Sequence[str | int], str]] = ()
    ) -> None:
        super().__init__(detail)
        self.errors = [(list(loc), msg) for loc, msg in errors]


class AudioRejected(InvalidInput):
    title = "Audio rejected"


class AudioTruncated(AudioRejected):
    """The audio ends before its own headers say it does (cut off, or still being written)."""


class Unavailable(StorageError):
    title = "Service unavailable"

    def __init__(self, detail: str, retry_after: int = 5) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class ObjectMissing(StorageError):
    title = "Object missing"


class IntegrityError(StorageError):
    title = "Integrity error"


class KeyDestroyed(IntegrityError):
    """The record exists but its key does not: crypto-shredded, never to be read again."""

    title = "Gone"


class RecordingIntegrityError(IntegrityError):
    """A recording's stored audio failed verification while it streamed as one part of a
    larger whole (an export's download): the error names the recording."""

    def __init__(self, detail: str, *, recording_id: UUID, company: str) -> None:
        super().__init__(detail)
        self.recording_id = recording_id
        self.company = company
