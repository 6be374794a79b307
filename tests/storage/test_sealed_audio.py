"""storage.sealed_audio and ObjectStore.iter_range against real S3: the encrypting reader,
verified whole-file reads, chunks of any size, and streams a listener abandons halfway
(seeking, closing the tab)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from storage.crypto import SEGMENT_SIZE, SegmentDecryptor, new_key, segment_count, stored_size
from storage.errors import IntegrityError
from storage.objects import ObjectStore, Piece
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


@pytest.mark.parametrize("chunk_size", [1000, SEGMENT_SIZE + 1, 3 * READ_CHUNK])
async def test_chunks_of_any_size_cut_from_what_the_socket_delivers(
    objects: ObjectStore, sealed: tuple[bytes, bytes, uuid.UUID], chunk_size: int
) -> None:
    """Chunks are made of the pieces the socket delivered, split where one crosses into the
    next chunk: every chunk has the size asked (the last one the rest), nothing is lost or
    repeated at the cuts, and a transform sees the same bytes in the same order."""
    stored = stored_size(len(sealed[0]))
    start = 12345
    chunks = [c async for c in objects.iter_range(KEY, start, stored - start,
                                                  chunk_size=chunk_size)]
    assert [len(c) for c in chunks[:-1]] == [chunk_size] * (len(chunks) - 1)
    assert 0 < len(chunks[-1]) <= chunk_size
    whole = await objects.get_bytes(KEY)
    assert len(whole) == stored and b"".join(chunks) == whole[start:]
    digest = hashlib.sha256()
    sizes: list[int] = []

    def absorb(pieces: list[Piece]) -> bytes:
        for piece in pieces:
            digest.update(piece)
        sizes.append(sum(map(len, pieces)))
        return b""

    async for _ in objects.iter_range(KEY, start, chunk_size=chunk_size, transform=absorb):
        pass
    assert digest.hexdigest() == hashlib.sha256(whole[start:]).hexdigest()
    assert sizes[:-1] == [chunk_size] * (len(sizes) - 1)


def test_the_encrypting_reader_hands_out_any_read_size_exactly(tmp_path: Path) -> None:
    """The S3 client reads the stored form part by part: every read gets exactly the bytes
    asked for (the last one the rest), whatever the size, and together they open to the
    spool file."""
    plain = os.urandom(5 * SEGMENT_SIZE + 777)
    spool = tmp_path / "spool"
    spool.write_bytes(plain)
    data_key, object_id = new_key(), uuid.uuid4()
    reader = EncryptingReader(spool, data_key, object_id)
    sizes = itertools.cycle([1, 7, SEGMENT_SIZE, 3 * SEGMENT_SIZE + 5, 100_000])
    asked: list[int] = []
    parts: list[bytes] = []
    while part := reader.read(size := next(sizes)):
        asked.append(size)
        parts.append(part)
    reader.close()
    stored = b"".join(parts)
    assert len(stored) == stored_size(len(plain))
    assert all(isinstance(p, bytes) for p in parts)
    assert [len(p) for p in parts[:-1]] == asked[:-1]
    assert 0 < len(parts[-1]) <= asked[-1]
    decryptor = SegmentDecryptor(data_key, object_id, 0, segment_count(len(plain)) - 1)
    assert decryptor.update(stored) + decryptor.finalize() == plain
