"""Envelope keys, segmented audio encryption, personal-id protection and tokens."""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import uuid

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from storage.crypto import (
    SEGMENT_SIZE,
    STORED_SEGMENT_SIZE,
    PersonalIdCipher,
    SegmentDecryptor,
    SegmentEncryptor,
    StoredRange,
    load_master_key,
    new_key,
    new_token,
    segment_count,
    stored_range,
    stored_size,
    token_digest,
    unwrap_key,
    wrap_key,
)
from storage.errors import IntegrityError

OBJECT_ID = uuid.UUID("6f1c3a52-0d7e-4b1a-9c55-2f4b8e1d7a90")

SIZES = [
    0,
    1,
    SEGMENT_SIZE - 1,
    SEGMENT_SIZE,
    SEGMENT_SIZE + 1,
    2 * SEGMENT_SIZE,
    SEGMENT_SIZE * 7 // 2,
]
CHUNK_SIZES = [1, 7, 4099, SEGMENT_SIZE + 13, 3 * SEGMENT_SIZE + 5]


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def encrypt(data: bytes, key: bytes, object_id: uuid.UUID = OBJECT_ID, chunk: int = 4099) -> bytes:
    encryptor = SegmentEncryptor(key, object_id)
    stored = b"".join(encryptor.update(part) for part in chunks(data, chunk))
    stored += encryptor.finalize()
    assert encryptor.plaintext_size == len(data)
    return stored


def decrypt(
    stored: bytes,
    key: bytes,
    plaintext_size: int,
    object_id: uuid.UUID = OBJECT_ID,
    chunk: int = 5003,
) -> bytes:
    decryptor = SegmentDecryptor(key, object_id, 0, segment_count(plaintext_size) - 1)
    plain = b"".join(decryptor.update(part) for part in chunks(stored, chunk))
    return plain + decryptor.finalize()


def read_range(stored: bytes, key: bytes, start: int, end: int, size: int) -> bytes:
    r = stored_range(start, end, size)
    fetched = stored[r.stored_start : r.stored_end_inclusive + 1]
    decryptor = SegmentDecryptor(
        key, OBJECT_ID, r.first_segment, segment_count(size) - 1, last_segment=r.last_segment
    )
    plain = decryptor.update(fetched) + decryptor.finalize()
    return plain[r.skip_head : r.skip_head + r.take]


@pytest.fixture
def key() -> bytes:
    return new_key()


# --- envelope keys ---------------------------------------------------------


def test_new_keys_are_random_32_bytes() -> None:
    keys = {new_key() for _ in range(50)}
    assert len(keys) == 50
    assert all(len(k) == 32 for k in keys)


def test_wrap_round_trip(key: bytes) -> None:
    kek = new_key()
    wrapped = wrap_key(kek, key, context=OBJECT_ID.bytes)
    assert key not in wrapped
    assert len(wrapped) == 12 + 32 + 16
    assert unwrap_key(kek, wrapped, context=OBJECT_ID.bytes) == key
    # Random nonce: wrapping twice gives different bytes.
    assert wrap_key(kek, key, context=OBJECT_ID.bytes) != wrapped


def test_unwrap_with_wrong_context_fails(key: bytes) -> None:
    kek = new_key()
    wrapped = wrap_key(kek, key, context=b"recording:1")
    with pytest.raises(IntegrityError):
        unwrap_key(kek, wrapped, context=b"recording:2")


def test_unwrap_with_wrong_kek_fails(key: bytes) -> None:
    wrapped = wrap_key(new_key(), key, context=b"ctx")
    with pytest.raises(IntegrityError):
        unwrap_key(new_key(), wrapped, context=b"ctx")


def test_unwrap_of_tampered_or_short_blob_fails(key: bytes) -> None:
    kek = new_key()
    wrapped = bytearray(wrap_key(kek, key, context=b"ctx"))
    for position in (0, 12, len(wrapped) - 1):
        tampered = bytearray(wrapped)
        tampered[position] ^= 0x01
        with pytest.raises(IntegrityError):
            unwrap_key(kek, bytes(tampered), context=b"ctx")
    with pytest.raises(IntegrityError):
        unwrap_key(kek, bytes(wrapped[:-1]), context=b"ctx")


def test_wrap_rejects_wrong_key_sizes(key: bytes) -> None:
    with pytest.raises(ValueError):
        wrap_key(b"short", key, context=b"")
    with pytest.raises(ValueError):
        wrap_key(new_key(), b"short", context=b"")


# --- master key ------------------------------------------------------------


def test_master_key_accepts_standard_and_urlsafe_base64() -> None:
    # Bytes chosen so the two alphabets really differ (contain + / - _).
    raw = bytes([0xFB, 0xFF, 0xBF] * 10 + [0xFE, 0xFF])
    standard = base64.b64encode(raw).decode()
    urlsafe = base64.urlsafe_b64encode(raw).decode()
    assert standard != urlsafe
    assert load_master_key(standard) == raw
    assert load_master_key(urlsafe) == raw
    assert load_master_key(urlsafe.rstrip("=")) == raw
    assert load_master_key(f"  {standard}\n") == raw


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not base64 at all!",
        base64.b64encode(bytes(31)).decode(),
        base64.b64encode(bytes(33)).decode(),
        base64.b64encode(bytes(64)).decode(),
        "+/-_" + base64.b64encode(bytes(30)).decode()[4:],
    ],
)
def test_master_key_rejects_bad_input(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        load_master_key(text)
    if text:
        assert text not in str(caught.value)


# --- segment arithmetic ----------------------------------------------------


@pytest.mark.parametrize(
    ("size", "segments"),
    [
        (0, 1),
        (1, 1),
        (SEGMENT_SIZE - 1, 1),
        (SEGMENT_SIZE, 1),
        (SEGMENT_SIZE + 1, 2),
        (SEGMENT_SIZE * 7 // 2, 4),
    ],
)
def test_segment_count_and_stored_size(size: int, segments: int) -> None:
    assert segment_count(size) == segments
    assert stored_size(size) == size + 28 * segments
    assert STORED_SEGMENT_SIZE == SEGMENT_SIZE + 28


def test_stored_range_of_a_middle_slice() -> None:
    size = 3 * SEGMENT_SIZE + 100
    r = stored_range(SEGMENT_SIZE + 10, 2 * SEGMENT_SIZE + 5, size)
    assert r == StoredRange(
        first_segment=1,
        last_segment=2,
        stored_start=STORED_SEGMENT_SIZE,
        stored_end_inclusive=3 * STORED_SEGMENT_SIZE - 1,
        skip_head=10,
        take=SEGMENT_SIZE - 4,
    )


def test_stored_range_of_the_tail_stops_at_the_object_end() -> None:
    size = 2 * SEGMENT_SIZE + 100
    r = stored_range(size - 1, size - 1, size)
    assert r.first_segment == r.last_segment == 2
    assert r.stored_end_inclusive == stored_size(size) - 1


@pytest.mark.parametrize(
    ("start", "end", "size"), [(-1, 0, 10), (5, 4, 10), (0, 10, 10), (0, 0, 0)]
)
def test_stored_range_rejects_ranges_outside_the_object(start: int, end: int, size: int) -> None:
    with pytest.raises(ValueError):
        stored_range(start, end, size)


# --- segmented round trips -------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("chunk", CHUNK_SIZES)
def test_round_trip(size: int, chunk: int, key: bytes) -> None:
    data = os.urandom(size)
    stored = encrypt(data, key, chunk=chunk)
    assert len(stored) == stored_size(size)
    assert decrypt(stored, key, size, chunk=chunk) == data


def test_encryptor_buffers_at_most_one_segment(key: bytes) -> None:
    encryptor = SegmentEncryptor(key, OBJECT_ID)
    assert encryptor.update(bytes(SEGMENT_SIZE)) == b""  # could still be the final one
    assert len(encryptor.update(b"x")) == STORED_SEGMENT_SIZE
    assert len(encryptor.update(bytes(3 * SEGMENT_SIZE))) == 3 * STORED_SEGMENT_SIZE
    assert len(encryptor.finalize()) == 1 + 28
    with pytest.raises(RuntimeError):
        encryptor.update(b"more")


def test_decryptor_streams_segment_by_segment(key: bytes) -> None:
    size = 3 * SEGMENT_SIZE
    data = os.urandom(size)
    stored = encrypt(data, key)
    decryptor = SegmentDecryptor(key, OBJECT_ID, 0, 2)
    assert decryptor.update(stored[: STORED_SEGMENT_SIZE - 1]) == b""
    assert (
        decryptor.update(stored[STORED_SEGMENT_SIZE - 1 : STORED_SEGMENT_SIZE])
        == data[:SEGMENT_SIZE]
    )
    assert decryptor.update(stored[STORED_SEGMENT_SIZE:]) == data[SEGMENT_SIZE : 2 * SEGMENT_SIZE]
    assert decryptor.finalize() == data[2 * SEGMENT_SIZE :]


def test_every_range_of_small_objects(key: bytes) -> None:
    for size in (1, 2, 5, 17):
        data = os.urandom(size)
        stored = encrypt(data, key, chunk=3)
        for start, end in itertools.combinations_with_replacement(range(size), 2):
            assert read_range(stored, key, start, end, size) == data[start : end + 1]


def test_ranges_across_segment_boundaries(key: bytes) -> None:
    size = SEGMENT_SIZE * 7 // 2
    data = os.urandom(size)
    stored = encrypt(data, key, chunk=SEGMENT_SIZE + 13)
    edges = sorted(
        {0, size - 1}
        | {b + d for b in range(0, size, SEGMENT_SIZE) for d in (-1, 0, 1) if 0 <= b + d < size}
    )
    for start, end in itertools.combinations_with_replacement(edges, 2):
        assert read_range(stored, key, start, end, size) == data[start : end + 1]


# --- tampering -------------------------------------------------------------


def test_flipping_any_byte_is_detected(key: bytes) -> None:
    size = SEGMENT_SIZE + 50
    data = os.urandom(size)
    stored = encrypt(data, key)
    # Every byte of the short final segment, and a spread over the full one
    # (flipping all 65 564 would be slow without testing anything new).
    positions = (
        list(range(STORED_SEGMENT_SIZE, len(stored)))
        + list(range(0, STORED_SEGMENT_SIZE, 997))
        + [11, 12, STORED_SEGMENT_SIZE - 16, STORED_SEGMENT_SIZE - 1]
    )
    for position in positions:
        tampered = bytearray(stored)
        tampered[position] ^= 0x80
        with pytest.raises(IntegrityError):
            decrypt(bytes(tampered), key, size)


def test_swapping_segments_is_detected(key: bytes) -> None:
    size = 3 * SEGMENT_SIZE
    stored = encrypt(os.urandom(size), key)
    s = [stored[i : i + STORED_SEGMENT_SIZE] for i in range(0, len(stored), STORED_SEGMENT_SIZE)]
    for order in ((1, 0, 2), (0, 2, 1), (2, 1, 0)):
        with pytest.raises(IntegrityError):
            decrypt(b"".join(s[i] for i in order), key, size)


def test_truncating_the_last_segment_is_detected(key: bytes) -> None:
    size = 2 * SEGMENT_SIZE + 300
    stored = encrypt(os.urandom(size), key)
    for cut in (1, 16, 28, 300 + 28):
        with pytest.raises(IntegrityError):
            decrypt(stored[:-cut], key, size)


def test_dropping_the_final_segment_is_detected(key: bytes) -> None:
    # Whole non-final segments are left: each authenticates on its own, so
    # only the recorded segment count exposes the loss.
    size = 2 * SEGMENT_SIZE + 1
    stored = encrypt(os.urandom(size), key)
    with pytest.raises(IntegrityError):
        decrypt(stored[: 2 * STORED_SEGMENT_SIZE], key, size)


def test_promoting_a_non_final_segment_to_final_is_detected(key: bytes) -> None:
    size = 2 * SEGMENT_SIZE + 1
    stored = encrypt(os.urandom(size), key)
    with pytest.raises(IntegrityError):
        decrypt(stored[: 2 * STORED_SEGMENT_SIZE], key, 2 * SEGMENT_SIZE)


def test_extra_bytes_after_the_final_segment_are_detected(key: bytes) -> None:
    size = 100
    stored = encrypt(os.urandom(size), key)
    with pytest.raises(IntegrityError):
        decrypt(stored + b"\x00", key, size)


def test_range_read_cut_short_is_detected(key: bytes) -> None:
    size = 3 * SEGMENT_SIZE
    stored = encrypt(os.urandom(size), key)
    r = stored_range(10, 2 * SEGMENT_SIZE, size)
    decryptor = SegmentDecryptor(key, OBJECT_ID, r.first_segment, 2, last_segment=r.last_segment)
    decryptor.update(stored[r.stored_start : r.stored_end_inclusive + 1 - STORED_SEGMENT_SIZE])
    with pytest.raises(IntegrityError):
        decryptor.finalize()


def test_another_object_id_is_detected(key: bytes) -> None:
    for size in (0, 10, SEGMENT_SIZE + 10):
        stored = encrypt(os.urandom(size), key)
        with pytest.raises(IntegrityError):
            decrypt(stored, key, size, object_id=uuid.uuid4())


def test_segment_moved_between_objects_is_detected(key: bytes) -> None:
    other = uuid.uuid4()
    size = 2 * SEGMENT_SIZE
    mine = encrypt(os.urandom(size), key)
    theirs = encrypt(os.urandom(size), key, object_id=other)
    with pytest.raises(IntegrityError):
        decrypt(theirs[:STORED_SEGMENT_SIZE] + mine[STORED_SEGMENT_SIZE:], key, size)


def test_wrong_data_key_is_detected(key: bytes) -> None:
    stored = encrypt(b"hello", key)
    with pytest.raises(IntegrityError):
        decrypt(stored, new_key(), 5)


# --- personal identity codes -----------------------------------------------


def test_personal_id_round_trip(key: bytes) -> None:
    cipher = PersonalIdCipher(key)
    customer = uuid.uuid4()
    blob = cipher.encrypt("131052-308T", customer)
    assert cipher.decrypt(blob, customer) == "131052-308T"
    assert b"131052" not in blob and b"308T" not in blob
    assert cipher.encrypt("131052-308T", customer) != blob


def test_personal_id_ciphertext_needs_the_same_key(key: bytes) -> None:
    customer = uuid.uuid4()
    blob = PersonalIdCipher(key).encrypt("131052-308T", customer)
    with pytest.raises(IntegrityError):
        PersonalIdCipher(new_key()).decrypt(blob, customer)
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(IntegrityError):
        PersonalIdCipher(key).decrypt(bytes(tampered), customer)


def test_personal_id_sealed_for_one_customer_does_not_open_for_another(key: bytes) -> None:
    cipher = PersonalIdCipher(key)
    blob = cipher.encrypt("131052-308T", uuid.uuid4())
    with pytest.raises(IntegrityError, match="failed authentication"):
        cipher.decrypt(blob, uuid.uuid4())


def test_an_unbound_personal_id_opens_only_to_be_sealed_again(key: bytes) -> None:
    cipher = PersonalIdCipher(key)
    # The form sealed before codes were bound: nonce, code sealed without associated data.
    sub_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=b"tallenne personal-id encryption").derive(key)
    nonce = os.urandom(12)
    unbound = nonce + AESGCM(sub_key).encrypt(nonce, b"131052-308T", None)
    with pytest.raises(IntegrityError, match="not bound"):
        cipher.decrypt(unbound, uuid.uuid4())
    assert cipher.open_unbound(unbound) == "131052-308T"
    with pytest.raises(ValueError):
        cipher.open_unbound(cipher.encrypt("131052-308T", uuid.uuid4()))


def test_lookup_hash_is_deterministic_and_keyed(key: bytes) -> None:
    cipher = PersonalIdCipher(key)
    digest = cipher.lookup_hash("131052-308T")
    assert len(digest) == 32
    assert cipher.lookup_hash("131052-308T") == digest
    assert PersonalIdCipher(key).lookup_hash("131052-308T") == digest
    assert cipher.lookup_hash(" 131052-308t ") == digest
    assert cipher.lookup_hash("131052Y308T") != digest
    assert PersonalIdCipher(new_key()).lookup_hash("131052-308T") != digest
    assert hashlib.sha256(b"131052-308T").digest() != digest


def test_lookup_and_encryption_keys_are_distinct(key: bytes) -> None:
    cipher = PersonalIdCipher(key)
    assert cipher.lookup_hash("131052-308T") not in cipher.encrypt("131052-308T", uuid.uuid4())


# --- tokens ----------------------------------------------------------------


def test_new_token_shape_and_randomness() -> None:
    token = new_token()
    assert token.startswith("tln_")
    assert len(base64.urlsafe_b64decode(token[4:] + "=")) == 32
    assert new_token() != token
    assert new_token("svc_").startswith("svc_")


def test_token_digest_is_sha256() -> None:
    token = new_token()
    assert token_digest(token) == hashlib.sha256(token.encode()).digest()
    assert token_digest(token) != token_digest(new_token())
