"""Audio on its way into and out of S3: encrypted while read from the spool file, decrypted
segment by segment for a byte range, never held whole in memory.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from storage.crypto import SegmentDecryptor, SegmentEncryptor, segment_count, stored_range
from storage.errors import IntegrityError
from storage.objects import ObjectStore

SPOOL_READ = 1024 * 1024


class EncryptingReader(io.RawIOBase):
    """A blocking file-like object yielding the stored (encrypted) form of a spool file.

    The S3 client reads it part by part in its worker thread; at most one part plus one
    segment is in memory.
    """

    def __init__(self, path: Path, data_key: bytes, object_id: uuid.UUID) -> None:
        super().__init__()
        self._source: BinaryIO = path.open("rb")
        self._encryptor = SegmentEncryptor(data_key, object_id)
        self._pending = bytearray()
        self._done = False

    def readable(self) -> bool:
        return True

    def _fill(self, wanted: int) -> None:
        while len(self._pending) < wanted and not self._done:
            chunk = self._source.read(SPOOL_READ)
            if chunk:
                self._pending += self._encryptor.update(chunk)
            else:
                self._pending += self._encryptor.finalize()
                self._done = True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = 1 << 62
        self._fill(size)
        with memoryview(self._pending) as view:
            out = bytes(view[:size])
        del self._pending[:size]
        return out

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._source.close()
        super().close()


async def iter_plaintext(
    objects: ObjectStore,
    object_key: str,
    *,
    data_key: bytes,
    object_id: uuid.UUID,
    size: int,
    start: int,
    end_inclusive: int,
) -> AsyncIterator[bytes]:
    """Plaintext bytes start..end_inclusive, fetching and decrypting only the segments that
    cover them. IntegrityError when a segment fails authentication or the object is short."""
    span = stored_range(start, end_inclusive, size)
    decryptor = SegmentDecryptor(
        data_key,
        object_id,
        span.first_segment,
        segment_count(size) - 1,
        last_segment=span.last_segment,
    )
    skip = span.skip_head
    left = span.take
    length = span.stored_end_inclusive - span.stored_start + 1

    def trim(plain: bytes) -> bytes:
        nonlocal skip, left
        if skip:
            cut = min(skip, len(plain))
            plain = plain[cut:]
            skip -= cut
        plain = plain[:left]
        left -= len(plain)
        return plain

    async for stored in objects.iter_range(object_key, span.stored_start, length):
        piece = trim(decryptor.update(stored))
        if piece:
            yield piece
    piece = trim(decryptor.finalize())
    if piece:
        yield piece
    if left:
        raise IntegrityError("stored audio ended before the requested range")


class HashCheck:
    """SHA-256 of a full read, compared with the recorded digest at the end."""

    def __init__(self, expected_hex: str) -> None:
        self._expected = expected_hex
        self._hash = hashlib.sha256()

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    def verify(self) -> None:
        if self._hash.hexdigest() != self._expected:
            raise IntegrityError("the audio no longer matches its recorded SHA-256")
