"""Password rules and argon2id hashing of people's passwords."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from storage.errors import InvalidInput

MIN_LENGTH = 12
MAX_LENGTH = 1024
_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


@lru_cache(maxsize=1)
def _common_passwords() -> frozenset[str]:
    text = (resources.files("storage") / "common_passwords.txt").read_text()
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip())


def check_password_rules(password: str, *, username: str = "") -> None:
    """Refuse a short, over-long or commonly used password (NIST SP 800-63B)."""
    if len(password) < MIN_LENGTH:
        raise InvalidInput(
            f"the password must be at least {MIN_LENGTH} characters",
            [(["body", "password"], f"shorter than {MIN_LENGTH} characters")],
        )
    if len(password) > MAX_LENGTH:
        raise InvalidInput("the password is too long", [(["body", "password"], "too long")])
    lowered = password.lower()
    if lowered in _common_passwords() or (username and username.lower() in lowered):
        raise InvalidInput(
            "the password is too common or contains the username",
            [(["body", "password"], "too common or contains the username")],
        )


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)


# A hash to verify against when the user does not exist, so timing does not reveal it.
DUMMY_HASH = _hasher.hash("tallenne-no-such-user-placeholder")
