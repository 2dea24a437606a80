"""Secrets at rest: encrypted with a key derived from the daemon's secret key (DATA_DIR/secret-key).

A copy of the registry alone reveals no secret; the key never leaves the data directory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from racetrackd.errors import RacetrackError


class Vault:
    def __init__(self, secret_key: bytes) -> None:
        derived = hashlib.sha256(b"racetrackd-vault:" + secret_key).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))
        self._digest_key = hashlib.sha256(b"racetrackd-digest:" + secret_key).digest()

    def seal(self, value: Any) -> str:
        """Encrypt a JSON-serialisable value."""
        return self._fernet.encrypt(json.dumps(value).encode()).decode()

    def open(self, sealed: str) -> Any:
        try:
            return json.loads(self._fernet.decrypt(sealed.encode()))
        except InvalidToken as exc:
            raise RacetrackError("a stored secret cannot be decrypted: was DATA_DIR/secret-key replaced?") from exc

    def digest(self, text: str) -> str:
        """A keyed digest of `text` (hex): only a holder of the secret key can make or check it."""
        return hmac.new(self._digest_key, text.encode(), hashlib.sha256).hexdigest()
