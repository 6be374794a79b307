"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys, and the checkpoint text
(c2sp.org/tlog-checkpoint) that tallenne signs for the head of its audit hash chain.

A checkpoint's body is the origin line, the tree size (here: the sequence number of the
newest event) and the base64 hash (here: that event's chain hash, not a Merkle root),
followed by extension lines `epoch N` and `previous S`. The note appends an empty line and
one signature line `— <key name> base64(key id || signature)`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519 = 0x01
DASH = "\u2014"


class NoteError(ValueError):
    """A note that is malformed or whose signature does not verify."""


def _key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public).digest()[:4]


def _valid_name(name: str) -> bool:
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


@dataclass(frozen=True)
class NoteVerifier:
    name: str
    public: bytes

    @property
    def key_id(self) -> bytes:
        return _key_id(self.name, self.public)

    def verifier_key(self) -> str:
        """The `name+keyid+base64(alg || key)` string an outside witness configures."""
        encoded = base64.b64encode(bytes([ED25519]) + self.public).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    def open(self, note: str) -> str:
        """The note's text if one of its signatures is this key's and verifies."""
        text, sep, signatures = note.rpartition("\n\n")
        if not sep or not text:
            raise NoteError("the note has no signature block")
        text += "\n"
        public = Ed25519PublicKey.from_public_bytes(self.public)
        for line in signatures.splitlines():
            parts = line.split(" ")
            if len(parts) != 3 or parts[0] != DASH or parts[1] != self.name:
                continue
            try:
                blob = base64.b64decode(parts[2], validate=True)
            except binascii.Error:
                continue
            if len(blob) != 4 + 64 or blob[:4] != self.key_id:
                continue
            try:
                public.verify(blob[4:], text.encode())
            except InvalidSignature:
                raise NoteError(f"the signature of {self.name} does not verify") from None
            return text
        raise NoteError(f"the note carries no signature of {self.name}")


class NoteSigner:
    """Signs notes with an Ed25519 key given as its 32-byte seed."""

    def __init__(self, name: str, seed: bytes) -> None:
        if not _valid_name(name):
            raise ValueError("a key name must be non-empty, without spaces or '+'")
        if len(seed) != 32:
            raise ValueError("an Ed25519 signing key is 32 bytes")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier = NoteVerifier(name, public)

    def sign(self, text: str) -> str:
        if not text.endswith("\n") or "\n\n" in text:
            raise ValueError("a note's text ends with one newline and has no empty line")
        signature = self._key.sign(text.encode())
        blob = base64.b64encode(self.verifier.key_id + signature).decode()
        return f"{text}\n{DASH} {self.verifier.name} {blob}\n"


@dataclass(frozen=True)
class CheckpointText:
    origin: str
    size: int
    hash: bytes
    epoch: int
    previous: int | None

    def render(self) -> str:
        previous = "-" if self.previous is None else str(self.previous)
        return (f"{self.origin}\n{self.size}\n{base64.b64encode(self.hash).decode()}\n"
                f"epoch {self.epoch}\nprevious {previous}\n")

    @classmethod
    def parse(cls, text: str) -> CheckpointText:
        lines = text.split("\n")
        if len(lines) < 6 or lines[-1] != "":
            raise NoteError("a checkpoint has origin, size, hash, epoch and previous lines")
        try:
            size = int(lines[1])
            digest = base64.b64decode(lines[2], validate=True)
            extensions = dict(line.split(" ", 1) for line in lines[3:-1])
            epoch = int(extensions["epoch"])
            previous = None if extensions["previous"] == "-" else int(extensions["previous"])
        except (ValueError, KeyError, binascii.Error) as exc:
            raise NoteError("the checkpoint's lines are malformed") from exc
        if size < 0 or len(digest) != 32:
            raise NoteError("the checkpoint's size or hash is out of range")
        return cls(lines[0], size, digest, epoch, previous)
