"""Audio on its way into and out of S3: encrypted while read from the spool file, decrypted
segment by segment for a byte range, never held whole in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import BinaryIO

from storage.crypto import (
    STORED_SEGMENT_SIZE,
    SegmentDecryptor,
    SegmentEncryptor,
    segment_count,
    stored_range,
)
from storage.errors import IntegrityError
from storage.objects import ObjectStore, Piece, Pieces, joined

SPOOL_READ = 1024 * 1024
# Replay reads whole segments from S3 in chunks of this size (16 segments, about 1 MiB).
READ_CHUNK = 16 * STORED_SEGMENT_SIZE


class EncryptingReader(io.RawIOBase):
    """A blocking file-like object yielding the stored (encrypted) form of a spool file.

    The S3 client reads it part by part in its worker thread; at most one part plus one
    spool read is in memory. Each read is assembled once, from the sealed pieces as the
    encryptor wrote them (the S3 client wants the whole part in one `bytes`).
    """

    def __init__(self, path: Path, data_key: bytes, object_id: uuid.UUID) -> None:
        super().__init__()
        self._source: BinaryIO = path.open("rb")
        self._encryptor = SegmentEncryptor(data_key, object_id)
        self._pending = Pieces()
        self._done = False

    def readable(self) -> bool:
        return True

    def _fill(self, wanted: int) -> None:
        while self._pending.size < wanted and not self._done:
            chunk = self._source.read(SPOOL_READ)
            if chunk:
                self._pending.append(self._encryptor.update(chunk))
            else:
                self._pending.append(self._encryptor.finalize())
                self._done = True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = 1 << 62
        self._fill(size)
        return joined(self._pending.take(size))

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
    data_key: bytes | asyncio.Future[bytes],
    object_id: uuid.UUID,
    size: int,
    start: int,
    end_inclusive: int,
    expected_sha256: str | None = None,
) -> AsyncGenerator[bytes, None]:
    """Plaintext bytes start..end_inclusive, fetching and decrypting only the segments that
    cover them. IntegrityError when a segment fails authentication or the object is short.

    Every segment is authenticated (AES-GCM, with the object id, its index and the final
    flag bound in) before its bytes are yielded. With `expected_sha256` (whole-file reads
    only: downloads that hand the client a digest, and the scrub) the digest of the
    plaintext is checked too, before the last piece is yielded, so a reader never receives
    a complete copy that failed verification. Replay leaves it out.
    Decryption runs on the event loop: AES-GCM costs about 0.3 ms per MiB here, less than
    handing each chunk to a thread and back. The SHA-256 (about 0.7 ms per MiB) runs in the
    object store's worker thread while the caller handles the piece, one piece at a time.
    A `data_key` still to come (a future) lets the S3 read start before the key is known:
    the stored bytes wait, unopened, in the bounded read-ahead until it is set.
    """
    if expected_sha256 is not None and (start, end_inclusive) != (0, size - 1):
        raise ValueError("the SHA-256 can only be verified on a whole-file read")
    span = stored_range(start, end_inclusive, size)
    if isinstance(data_key, asyncio.Future):
        key_known = data_key
    else:
        key_known = asyncio.get_running_loop().create_future()
        key_known.set_result(data_key)
    decryptor: SegmentDecryptor | None = None

    def opened() -> SegmentDecryptor:
        nonlocal decryptor
        if decryptor is None:
            decryptor = SegmentDecryptor(
                key_known.result(),
                object_id,
                span.first_segment,
                segment_count(size) - 1,
                last_segment=span.last_segment,
            )
        return decryptor

    digest = hashlib.sha256() if expected_sha256 is not None else None
    hashing: asyncio.Future[None] | None = None  # the digest taking in the previous piece
    skip = span.skip_head
    left = span.take
    length = span.stored_end_inclusive - span.stored_start + 1

    def trim(plain: bytes) -> bytes:
        nonlocal skip, left
        if skip:
            cut = min(skip, len(plain))
            plain = plain[cut:]
            skip -= cut
        if len(plain) > left:
            plain = plain[:left]
        left -= len(plain)
        return plain

    def open_chunk(stored: list[Piece]) -> bytes:
        return trim(opened().update_all(stored))

    stored = objects.iter_range(
        object_key, span.stored_start, length, chunk_size=READ_CHUNK,
        # A small range comes in one read; a long one starts with a single segment so that
        # its first bytes leave sooner.
        first_chunk=READ_CHUNK if length <= READ_CHUNK else STORED_SEGMENT_SIZE,
        transform=open_chunk, transform_after=key_known, inline_up_to=READ_CHUNK,
    )
    # A reader that leaves early (a client gone) releases the S3 response with this stream.
    async with contextlib.aclosing(stored) as pieces:
        async for piece in pieces:
            if digest is not None:
                if hashing is not None:
                    await hashing  # in order, and at most one piece held for it
                hashing = objects.beside(digest.update, piece)
            yield piece
    await key_known
    piece = trim(opened().finalize())
    if left:
        raise IntegrityError("stored audio ended before the requested range")
    if digest is not None:
        if hashing is not None:
            await hashing
        digest.update(piece)
        if digest.hexdigest() != expected_sha256:
            raise IntegrityError("the audio no longer matches its recorded SHA-256")
    if piece:
        yield piece


def derived_object_id(recording_id: uuid.UUID, part: str) -> uuid.UUID:
    """The id that binds a recording's derived object (e.g. "peaks") to it: sealed under the
    recording's data key, it can be opened neither as the audio nor as another recording's."""
    return uuid.uuid5(recording_id, part)


def seal_bytes(plaintext: bytes, data_key: bytes, object_id: uuid.UUID) -> bytes:
    """A small object in the stored (segmented, authenticated) form of the audio."""
    encryptor = SegmentEncryptor(data_key, object_id)
    return bytes(encryptor.update(plaintext)) + encryptor.finalize()


def open_bytes(sealed: bytes, data_key: bytes, object_id: uuid.UUID, size: int) -> bytes:
    """The plaintext of `seal_bytes`; IntegrityError when it was altered."""
    decryptor = SegmentDecryptor(data_key, object_id, 0, segment_count(size) - 1)
    return decryptor.update(sealed) + decryptor.finalize()
