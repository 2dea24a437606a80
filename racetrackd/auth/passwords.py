"""Password hashing and rules: PBKDF2-SHA256 with a per-user salt, in Django's format
(`pbkdf2_sha256$iterations$salt$hash`), the one Racetrack stores, so hashes carry over."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from racetrackd.errors import ValidationError

ALGORITHM = "pbkdf2_sha256"
ITERATIONS = 600_000
MIN_LENGTH = 8
# The most common passwords of leaked lists that pass the length rule; refused outright.
COMMON = frozenset(
    {
        "password",
        "password1",
        "password123",
        "12345678",
        "123456789",
        "1234567890",
        "qwertyuiop",
        "iloveyou",
        "sunshine",
        "princess",
        "football",
        "baseball",
        "welcome1",
        "superman",
        "trustno1",
        "abcd1234",
        "qwerty123",
        "1q2w3e4r",
        "letmein1",
        "passw0rd",
        "administrator",
        "admin123",
        "changeme",
        "racetrack",
        "starwars",
        "whatever",
        "michael1",
        "computer",
        "internet",
        "dragon12",
    }
)


def hash_password(password: str, *, iterations: int = ITERATIONS) -> str:
    salt = secrets.token_urlsafe(16)
    return f"{ALGORITHM}${iterations}${salt}${_derive(password, salt, iterations)}"


def verify_password(password: str, encoded: str | None) -> bool:
    """Whether `password` matches `encoded`; a missing or unreadable hash never matches."""
    if not encoded:
        return False
    try:
        algorithm, iterations, salt, expected = encoded.split("$", 3)
        rounds = int(iterations)
    except ValueError:
        return False
    if algorithm != ALGORITHM:
        return False
    return hmac.compare_digest(_derive(password, salt, rounds), expected)


def check_password_rules(password: object, field: str = "password") -> str:
    """The password if it is acceptable; ValidationError naming `field` otherwise."""
    if not isinstance(password, str):
        raise ValidationError(f"{field}: must be a string")
    if len(password) < MIN_LENGTH:
        raise ValidationError(f"{field}: must have at least {MIN_LENGTH} characters")
    if password.isdigit():
        raise ValidationError(f"{field}: must not be only digits")
    if password.lower() in COMMON:
        raise ValidationError(f"{field}: is one of the most common passwords; choose another")
    return password


def _derive(password: str, salt: str, iterations: int) -> str:
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return base64.b64encode(digest).decode()
