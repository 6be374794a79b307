"""A vCon with its recording inline: the document streamed with the audio base64url-encoded
into the dialog body chunk by chunk, its length known before the first byte."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import AsyncGenerator, AsyncIterable

from schemas.vcon import Vcon, b64url, content_hash
from storage.errors import IntegrityError

# Unpadded base64url of a SHA-512 and a SHA-256 digest: 86 and 43 characters.
_SHA512_TOKEN = len(content_hash("sha512", bytes(64)))
_SHA256_TOKEN = len(content_hash("sha256", bytes(32)))


def b64url_length(size: int) -> int:
    """Characters of `size` bytes in unpadded base64url."""
    whole, rest = divmod(size, 3)
    return whole * 4 + (0, 2, 3)[rest]


class InlineVcon:
    """The document of an inline vCon (`schemas.vcon.build_vcon` without an audio URL)
    around `audio_size` bytes of audio. The body is checked against the recording's stated
    SHA-256 as it streams, and a SHA-512 computed on the way is stated beside it; audio that
    differs in length or digest raises IntegrityError before the document is finished, so a
    consumer never holds a whole document with wrong audio."""

    def __init__(self, vcon: Vcon, audio_size: int) -> None:
        if not vcon.inline:
            raise ValueError("the vCon references its audio by URL; use schemas.vcon.vcon_json")
        dialog = vcon.dialog[0]
        stated = [dialog.content_hash] if isinstance(dialog.content_hash, str) \
            else list(dialog.content_hash)
        self._sha256 = next((h for h in stated if h.startswith("sha256-")), None)
        if self._sha256 is None:
            raise ValueError("an inline recording needs its SHA-256 stated")
        self._sha512 = next((h for h in stated if h.startswith("sha512-")), None)
        self.audio_size = audio_size

        body_mark = f"inline-body-{secrets.token_hex(16)}"
        hash_mark = f"inline-hash-{secrets.token_hex(16)}"
        placeholder = dialog.model_copy(update={"body": body_mark, "content_hash": hash_mark})
        document = vcon.model_copy(update={"dialog": [placeholder, *vcon.dialog[1:]]})
        text = document.model_dump_json(by_alias=True, exclude_none=True)
        before_body, after_body = text.split(json.dumps(body_mark), 1)
        between, after_hash = after_body.split(json.dumps(hash_mark), 1)
        self._head = (before_body + '"').encode()
        self._between = ('"' + between).encode()
        self._tail = after_hash.encode()
        hashes_length = len('["",""]') + _SHA512_TOKEN + _SHA256_TOKEN
        self.size = (len(self._head) + b64url_length(audio_size) + len(self._between)
                     + hashes_length + len(self._tail))

    async def iter_bytes(self, audio: AsyncIterable[bytes]) -> AsyncGenerator[bytes, None]:
        """The document, with `audio` (exactly `audio_size` bytes) as the dialog body."""
        yield self._head
        sha256 = hashlib.sha256()
        sha512 = hashlib.sha512()
        carry = b""
        seen = 0
        async for chunk in audio:
            seen += len(chunk)
            if seen > self.audio_size:
                raise IntegrityError("audio is longer than its record says")
            sha256.update(chunk)
            sha512.update(chunk)
            data = carry + chunk if carry else chunk
            cut = len(data) - len(data) % 3
            carry = data[cut:]
            if cut:
                # A multiple of three bytes encodes without padding, so pieces join up.
                yield base64.urlsafe_b64encode(data[:cut])
        if seen != self.audio_size:
            raise IntegrityError("audio is shorter than its record says")
        if carry:
            yield b64url(carry).encode()
        got256 = content_hash("sha256", sha256.digest())
        got512 = content_hash("sha512", sha512.digest())
        if got256 != self._sha256 or (self._sha512 is not None and got512 != self._sha512):
            raise IntegrityError("audio does not match its recorded SHA-256")
        yield self._between
        yield json.dumps([got512, got256], separators=(",", ":")).encode()
        yield self._tail
