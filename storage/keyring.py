"""The master key and the keys derived from configuration that protect personal data."""

from __future__ import annotations

from dataclasses import dataclass

from storage.crypto import PersonalIdCipher


@dataclass(frozen=True)
class KeyRing:
    master_key: bytes
    personal_ids: PersonalIdCipher
