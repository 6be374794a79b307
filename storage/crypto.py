"""All cryptography of the product: envelope keys, segmented audio encryption,
personal identity code protection and token hashing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from storage.errors import IntegrityError

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16

SEGMENT_SIZE = 64 * 1024
SEGMENT_OVERHEAD = NONCE_SIZE + TAG_SIZE
STORED_SEGMENT_SIZE = SEGMENT_SIZE + SEGMENT_OVERHEAD

_NOT_FINAL = b"\x00"
_FINAL = b"\x01"


def _require_key(key: bytes, what: str) -> None:
    if len(key) != KEY_SIZE:
        raise ValueError(f"{what} must be {KEY_SIZE} bytes")


# --- envelope keys ---------------------------------------------------------


def new_key() -> bytes:
    """A fresh random AES-256 key."""
    return secrets.token_bytes(KEY_SIZE)


def wrap_key(kek: bytes, key: bytes, *, context: bytes) -> bytes:
    """Encrypt `key` under `kek`; `context` names the record the key belongs to.

    `context` is authenticated but not stored, so a wrapped key copied onto
    another record no longer unwraps.
    """
    _require_key(kek, "key-encryption key")
    _require_key(key, "wrapped key")
    nonce = os.urandom(NONCE_SIZE)
    return nonce + AESGCM(kek).encrypt(nonce, key, context)


def unwrap_key(kek: bytes, wrapped: bytes, *, context: bytes) -> bytes:
    """Inverse of `wrap_key`; IntegrityError on a wrong kek, context or tampering."""
    _require_key(kek, "key-encryption key")
    if len(wrapped) != NONCE_SIZE + KEY_SIZE + TAG_SIZE:
        raise IntegrityError("wrapped key has the wrong length")
    try:
        return AESGCM(kek).decrypt(wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], context)
    except InvalidTag:
        raise IntegrityError("wrapped key failed authentication") from None


def seal_customer_values(key: bytes, customer_id: uuid.UUID, values: dict[str, Any]) -> bytes:
    """A customer's old field values (rectification history) sealed under the customer's
    key, bound to the customer by the associated data."""
    nonce = os.urandom(NONCE_SIZE)
    plaintext = json.dumps(values, default=str).encode()
    return nonce + AESGCM(key).encrypt(nonce, plaintext, customer_id.bytes)


def open_customer_values(key: bytes, customer_id: uuid.UUID, sealed: bytes) -> dict[str, Any]:
    """Inverse of `seal_customer_values`; IntegrityError when the sealed bytes were altered
    (or are another customer's)."""
    try:
        plain = AESGCM(key).decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:],
                                    customer_id.bytes)
    except InvalidTag:
        raise IntegrityError("sealed customer values failed authentication") from None
    values: dict[str, Any] = json.loads(plain)
    return values


def load_master_key(text: str, what: str = "master key") -> bytes:
    """Parse a configured key (`what` names it in errors): standard or URL-safe base64 of
    32 bytes. Messages never quote the input; it is a secret.
    """
    encoded = "".join(text.split())
    if ("-" in encoded or "_" in encoded) and ("+" in encoded or "/" in encoded):
        raise ValueError(f"{what} mixes standard and URL-safe base64")
    encoded = encoded.replace("-", "+").replace("_", "/")
    # Operators often paste keys without padding.
    encoded += "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not valid base64") from None
    if len(key) != KEY_SIZE:
        raise ValueError(f"{what} must decode to {KEY_SIZE} bytes")
    return key


# --- segmented audio encryption --------------------------------------------


def segment_count(plaintext_size: int) -> int:
    """Segments of an object; an empty object still has one (empty, final) segment."""
    if plaintext_size < 0:
        raise ValueError("plaintext size must not be negative")
    return max(1, -(-plaintext_size // SEGMENT_SIZE))


def stored_size(plaintext_size: int) -> int:
    """Bytes in S3 for an object of `plaintext_size` audio bytes."""
    return plaintext_size + segment_count(plaintext_size) * SEGMENT_OVERHEAD


def plaintext_size(stored: int) -> int:
    """Inverse of `stored_size`: the audio bytes of an object of `stored` bytes in S3 (or of
    a file in the same segmented form); IntegrityError when no plaintext has that size."""
    count = max(1, -(-stored // STORED_SEGMENT_SIZE))
    plain = stored - count * SEGMENT_OVERHEAD
    if plain < 0 or stored_size(plain) != stored:
        raise IntegrityError(f"{stored} bytes is not the size of any segmented ciphertext")
    return plain


def _segment_aad(object_id: uuid.UUID, index: int, final: bool) -> bytes:
    # Binding object, position and finality makes moved, reordered and
    # truncated segments fail authentication.
    return object_id.bytes + index.to_bytes(8, "big") + (_FINAL if final else _NOT_FINAL)


@dataclass(frozen=True)
class StoredRange:
    """Which stored bytes to fetch for a plaintext byte range, and how to trim them."""

    first_segment: int
    last_segment: int
    stored_start: int
    stored_end_inclusive: int
    skip_head: int
    take: int


def stored_range(plain_start: int, plain_end_inclusive: int, plaintext_size: int) -> StoredRange:
    """Map an inclusive plaintext range to whole stored segments.

    Decrypt the fetched bytes with a `SegmentDecryptor` from `first_segment`,
    drop `skip_head` bytes and keep `take`.
    """
    if not 0 <= plain_start <= plain_end_inclusive < plaintext_size:
        raise ValueError("range lies outside the object")
    first = plain_start // SEGMENT_SIZE
    last = plain_end_inclusive // SEGMENT_SIZE
    return StoredRange(
        first_segment=first,
        last_segment=last,
        stored_start=first * STORED_SEGMENT_SIZE,
        stored_end_inclusive=min((last + 1) * STORED_SEGMENT_SIZE, stored_size(plaintext_size)) - 1,
        skip_head=plain_start - first * SEGMENT_SIZE,
        take=plain_end_inclusive - plain_start + 1,
    )


class SegmentEncryptor:
    """Encrypts one audio object as it streams in, one segment at a time."""

    def __init__(self, data_key: bytes, object_id: uuid.UUID) -> None:
        _require_key(data_key, "data key")
        self._aead = AESGCM(data_key)
        self._object_id = object_id
        self._buffer = bytearray()
        self._next_index = 0
        self._plaintext_size = 0
        self._finalized = False

    @property
    def plaintext_size(self) -> int:
        """Audio bytes accepted so far."""
        return self._plaintext_size

    def _seal(self, plaintext: bytes, final: bool) -> bytes:
        sealed = bytearray(len(plaintext) + SEGMENT_OVERHEAD)
        self._seal_into(plaintext, final, memoryview(sealed))
        return bytes(sealed)

    def _seal_into(self, plaintext: bytes | bytearray | memoryview, final: bool,
                   sink: memoryview) -> None:
        """`nonce || ciphertext || tag` of the next segment, written into `sink` (its size)."""
        # Each object has its own data key and at most a few thousand
        # segments, so random nonces are far from any collision bound.
        nonce = os.urandom(NONCE_SIZE)
        aad = _segment_aad(self._object_id, self._next_index, final)
        self._next_index += 1
        sink[:NONCE_SIZE] = nonce
        self._aead.encrypt_into(nonce, plaintext, aad, sink[NONCE_SIZE:])

    def update(self, chunk: bytes | bytearray | memoryview) -> bytes | bytearray:
        """Stored bytes of every segment completed by `chunk`. A full segment is held back
        until more data arrives: only then is it known not to be the final one. Segments
        are sealed from where they lie in `chunk` straight into the output."""
        if self._finalized:
            raise RuntimeError("encryptor already finalized")
        self._plaintext_size += len(chunk)
        with memoryview(chunk) as data:
            # Segments followed by at least one more byte (the rest stays held).
            count = (len(self._buffer) + len(data) - 1) // SEGMENT_SIZE
            if count <= 0:
                self._buffer += data
                return b""
            out = bytearray(count * STORED_SEGMENT_SIZE)
            at = 0
            with memoryview(out) as sink:
                for i in range(count):
                    segment = sink[i * STORED_SEGMENT_SIZE : (i + 1) * STORED_SEGMENT_SIZE]
                    if self._buffer:
                        # The segment the held bytes began, completed from this chunk.
                        at = SEGMENT_SIZE - len(self._buffer)
                        self._buffer += data[:at]
                        self._seal_into(self._buffer, False, segment)
                        self._buffer = bytearray()
                    else:
                        self._seal_into(data[at : at + SEGMENT_SIZE], False, segment)
                        at += SEGMENT_SIZE
            self._buffer += data[at:]
        return out

    def finalize(self) -> bytes:
        """Stored bytes of the final segment."""
        if self._finalized:
            raise RuntimeError("encryptor already finalized")
        self._finalized = True
        segment = bytes(self._buffer)
        self._buffer.clear()
        return self._seal(segment, final=True)


class SegmentDecryptor:
    """Decrypts consecutive stored segments of one object, from any segment on.

    `last_segment` is the last segment the caller will feed (by default the
    object's final one); finalize() fails unless exactly those arrived, so a
    short read is never mistaken for the end of the audio.
    """

    def __init__(
        self,
        data_key: bytes,
        object_id: uuid.UUID,
        first_segment: int,
        last_segment_index_of_object: int,
        *,
        last_segment: int | None = None,
    ) -> None:
        _require_key(data_key, "data key")
        if last_segment is None:
            last_segment = last_segment_index_of_object
        if not 0 <= first_segment <= last_segment <= last_segment_index_of_object:
            raise ValueError("segment indexes are out of order")
        self._aead = AESGCM(data_key)
        self._object_id = object_id
        self._next_index = first_segment
        self._last_requested = last_segment
        self._final_index = last_segment_index_of_object
        self._buffer = bytearray()
        self._finalized = False

    def _wants_whole_segment(self) -> bool:
        # The final segment may be short, so its end is only known at finalize().
        return self._next_index <= self._last_requested and self._next_index != self._final_index

    def _open(self, stored: bytes | bytearray | memoryview) -> bytes:
        index = self._next_index
        final = index == self._final_index
        if len(stored) < SEGMENT_OVERHEAD:
            raise IntegrityError(f"audio segment {index} is truncated")
        aad = _segment_aad(self._object_id, index, final)
        try:
            with memoryview(stored) as view:
                plaintext = self._aead.decrypt(view[:NONCE_SIZE], view[NONCE_SIZE:], aad)
        except InvalidTag:
            raise IntegrityError(f"audio segment {index} failed authentication") from None
        self._next_index += 1
        return plaintext

    def update(self, stored_chunk: bytes) -> bytes:
        """Plaintext of every non-final segment completed by `stored_chunk`."""
        return self.update_all((stored_chunk,))

    def update_all(self, stored_chunks: Iterable[bytes | bytearray | memoryview]) -> bytes:
        """Plaintext of every non-final segment completed by `stored_chunks`, in order: the
        pieces of a read as they arrived, opened where they lie and joined once."""
        if self._finalized:
            raise RuntimeError("decryptor already finalized")
        pieces: list[bytes] = []
        for stored_chunk in stored_chunks:
            self._take(stored_chunk, pieces)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _take(self, stored_chunk: bytes | bytearray | memoryview, pieces: list[bytes]) -> None:
        with memoryview(stored_chunk) as data:
            at = 0
            if self._buffer and self._wants_whole_segment():
                # Complete the segment the previous chunk began, then take whole segments
                # straight from this chunk without copying it.
                at = min(len(data), STORED_SEGMENT_SIZE - len(self._buffer))
                self._buffer += data[:at]
                if len(self._buffer) == STORED_SEGMENT_SIZE:
                    pieces.append(self._open(self._buffer))
                    self._buffer = bytearray()
            if not self._buffer:
                while self._wants_whole_segment() and len(data) - at >= STORED_SEGMENT_SIZE:
                    pieces.append(self._open(data[at : at + STORED_SEGMENT_SIZE]))
                    at += STORED_SEGMENT_SIZE
            self._buffer += data[at:]
        pending = len(self._buffer)
        if pending and (
            self._next_index > self._last_requested
            or (self._next_index == self._final_index and pending > STORED_SEGMENT_SIZE)
        ):
            raise IntegrityError("stored audio is longer than its recorded size")

    def finalize(self) -> bytes:
        """Plaintext of the final segment, if requested; IntegrityError on a short read."""
        if self._finalized:
            raise RuntimeError("decryptor already finalized")
        self._finalized = True
        out = b""
        if self._next_index == self._final_index == self._last_requested:
            out = self._open(bytes(self._buffer))
            self._buffer.clear()
        if self._buffer or self._next_index != self._last_requested + 1:
            raise IntegrityError("stored audio is shorter than its recorded size")
        return out


# --- personal identity codes -----------------------------------------------


# A sealed identity code: this prefix, a nonce, then the code encrypted with its customer's
# id as associated data, so that a code moved to another customer's row no longer opens.
# Codes sealed before that binding (no prefix) open only through `open_unbound`, which the
# start-up reseal (`storage.customers.reseal_personal_ids`) alone calls.
PERSONAL_ID_FORMAT = b"PID2"


class PersonalIdCipher:
    """Encrypts personal identity codes and derives a blind index to find them.

    Expects codes already validated by schemas.personal_id; it only
    normalises case and whitespace so lookups are deterministic.
    """

    def __init__(self, key: bytes) -> None:
        _require_key(key, "personal-id key")
        # Separate sub-keys so the lookup key never doubles as an encryption key.
        self._aead = AESGCM(_derive(key, b"tallenne personal-id encryption"))
        self._lookup_key = _derive(key, b"tallenne personal-id lookup")

    @staticmethod
    def _canonical(code: str) -> bytes:
        canonical = code.strip().upper()
        if not canonical:
            raise ValueError("personal identity code is empty")
        return canonical.encode("utf-8")

    @staticmethod
    def _bound_to(customer_id: uuid.UUID) -> bytes:
        return b"tallenne personal-id of customer " + customer_id.bytes

    def encrypt(self, code: str, customer_id: uuid.UUID) -> bytes:
        """`PID2 || nonce || ciphertext || tag`, bound to `customer_id`; a fresh nonce each
        time, so equal codes differ."""
        nonce = os.urandom(NONCE_SIZE)
        return (PERSONAL_ID_FORMAT + nonce
                + self._aead.encrypt(nonce, self._canonical(code), self._bound_to(customer_id)))

    def decrypt(self, blob: bytes, customer_id: uuid.UUID) -> str:
        """Inverse of `encrypt`; IntegrityError on a wrong key, tampering, a code sealed for
        another customer or one sealed in the older unbound form."""
        if not blob.startswith(PERSONAL_ID_FORMAT):
            raise IntegrityError("encrypted personal identity code is not bound to its customer")
        return self._open(blob[len(PERSONAL_ID_FORMAT):], self._bound_to(customer_id))

    def open_unbound(self, blob: bytes) -> str:
        """A code sealed before codes were bound to their customer (no prefix), to be sealed
        again with `encrypt`."""
        if blob.startswith(PERSONAL_ID_FORMAT):
            raise ValueError("the identity code is already bound to its customer")
        return self._open(blob, None)

    def _open(self, sealed: bytes, aad: bytes | None) -> str:
        if len(sealed) < NONCE_SIZE + TAG_SIZE:
            raise IntegrityError("encrypted personal identity code is truncated")
        try:
            plaintext = self._aead.decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], aad)
        except InvalidTag:
            raise IntegrityError("encrypted personal identity code failed authentication") from None
        return plaintext.decode("utf-8")

    def lookup_hash(self, code: str) -> bytes:
        """Keyed, deterministic digest for equality search without decrypting."""
        return hmac.new(self._lookup_key, self._canonical(code), hashlib.sha256).digest()


def _derive(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=info).derive(key)


def derive_key(key: bytes, info: bytes, *, salt: bytes) -> bytes:
    """A sub-key of `key` for one purpose (`info`) and one object (`salt`), by HKDF-SHA256."""
    _require_key(key, "key")
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=info).derive(key)


# --- tokens ----------------------------------------------------------------


def new_token(prefix: str = "tln_") -> str:
    """A random bearer token; the prefix lets secret scanners recognise leaks."""
    return prefix + secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    """SHA-256 of a token, the form in which tokens are stored.

    Tokens carry 256 random bits, so brute force is hopeless regardless of hash
    speed; a slow password hash would only add latency to every request.
    """
    return hashlib.sha256(token.encode("utf-8")).digest()
