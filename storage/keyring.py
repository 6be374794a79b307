"""The master keys and the keys derived from configuration that protect personal data."""

from __future__ import annotations

from dataclasses import dataclass

from storage.crypto import PersonalIdCipher
from storage.keys import MasterKeys


@dataclass(frozen=True)
class KeyRing:
    masters: MasterKeys
    personal_ids: PersonalIdCipher

    @property
    def master_key(self) -> bytes:
        """The current master key (wraps owner keys; keys the search cursors' MAC)."""
        return self.masters.current
