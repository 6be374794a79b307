"""storage.sealed_audio and ObjectStore.iter_range against real S3: verified whole-file reads
and streams a listener abandons halfway (seeking, closing the tab)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from storage.crypto import SEGMENT_SIZE, new_key, stored_size
from storage.errors import IntegrityError
from storage.objects import ObjectStore
from storage.sealed_audio import READ_CHUNK, EncryptingReader, iter_plaintext

KEY = "recordings/test/sealed"


@pytest.fixture
async def sealed(objects: ObjectStore, tmp_path: Path) -> tuple[bytes, bytes, uuid.UUID]:
    """A stored object spanning several read chunks: (plaintext, data key, object id)."""
    plain = bytes((i * 7919) % 251 for i in range(40 * SEGMENT_SIZE + 4321))
    spool = tmp_path / "spool"
    spool.write_bytes(plain)
    data_key, object_id = new_key(), uuid.uuid4()
    reader = cast(BinaryIO, EncryptingReader(spool, data_key, object_id))
    await objects.put_long_stream(KEY, reader, stored_size(len(plain)))
    reader.close()
    return plain, data_key, object_id


def whole(objects: ObjectStore, sealed: tuple[bytes, bytes, uuid.UUID],
          expected: str) -> AsyncIterator[bytes]:
    plain, data_key, object_id = sealed
    return iter_plaintext(objects, KEY, data_key=data_key, object_id=object_id,
                          size=len(plain), start=0, end_inclusive=len(plain) - 1,
                          expected_sha256=expected)


async def test_whole_file_read_is_verified_against_its_digest(
    objects: ObjectStore, sealed: tuple[bytes, bytes, uuid.UUID]
) -> None:
    plain = sealed[0]
    pieces = [p async for p in whole(objects, sealed, hashlib.sha256(plain).hexdigest())]
    assert b"".join(pieces) == plain
    assert len(pieces) > 2 and max(map(len, pieces)) <= READ_CHUNK


async def test_a_digest_mismatch_withholds_the_last_segment(
    objects: ObjectStore, sealed: tuple[bytes, bytes, uuid.UUID]
) -> None:
    plain = sealed[0]
    received = bytearray()
    with pytest.raises(IntegrityError, match="SHA-256"):
        async for piece in whole(objects, sealed, hashlib.sha256(b"other audio").hexdigest()):
            received += piece
    # Everything but the final segment went out; the reader never holds a complete copy.
    assert bytes(received) == plain[: len(plain) - len(plain) % SEGMENT_SIZE]
    assert len(received) < len(plain)


async def test_only_whole_file_reads_can_be_verified(
    objects: ObjectStore, sealed: tuple[bytes, bytes, uuid.UUID]
) -> None:
    plain, data_key, object_id = sealed
    with pytest.raises(ValueError, match="whole-file"):
        async for _ in iter_plaintext(objects, KEY, data_key=data_key, object_id=object_id,
                                      size=len(plain), start=1, end_inclusive=10,
                                      expected_sha256=hashlib.sha256(plain).hexdigest()):
            pass


async def test_abandoned_streams_free_their_reader(
    objects: ObjectStore, sealed: tuple[bytes, bytes, uuid.UUID]
) -> None:
    """A listener who seeks away leaves a read-ahead in flight; with four S3 threads, forty
    abandoned streams would starve the pool if any of them kept its thread or response."""
    plain, data_key, object_id = sealed
    for i in range(40):
        stream = iter_plaintext(objects, KEY, data_key=data_key, object_id=object_id,
                                size=len(plain), start=i * 1000, end_inclusive=len(plain) - 1)
        first = await anext(stream)
        assert first == plain[i * 1000 : i * 1000 + len(first)]
        await stream.aclose()
    raw = objects.iter_range(KEY)
    assert len(await anext(raw)) > 0
    del raw  # dropped without aclose, as a cancelled handler does
    await asyncio.sleep(0)
    pieces = [p async for p in whole(objects, sealed, hashlib.sha256(plain).hexdigest())]
    assert b"".join(pieces) == plain
