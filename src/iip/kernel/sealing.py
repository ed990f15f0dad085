"""Short secrets the platform must use itself, sealed at rest with AES-256-GCM.

Passwords and API keys are only compared, so they are stored hashed. A secret the platform signs or
logs in with (a webhook's signing key) must be read back, so it is stored sealed instead:
`sealed:v1:` then the URL-safe base64 of a random 96-bit nonce, the ciphertext and the GCM tag.

The key of each purpose is HKDF-SHA256 of the platform's secret key (`Settings.resolved_secret_key()`)
with the purpose in its info, so what is sealed for one purpose never opens for another. `bound_to`
(the id of the row that holds the value) is authenticated with it: a sealed value copied into another
row does not open there. A wrong key, purpose or row, or an altered value, raises `SealError`; a
value without the `sealed:` prefix is one stored before sealing and is answered as it is.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from iip.kernel.settings import Settings

SEALED = "sealed:"  # any version
SEALED_V1 = "sealed:v1:"
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_SALT = b"iip.kernel.sealing"  # fixed: the secret key is already uniformly random


class SealError(Exception):
    """A sealed value could not be opened."""


def is_sealed(stored: str) -> bool:
    return stored.startswith(SEALED)


def sealed_length(plain_length: int) -> int:
    """Characters a sealed value of `plain_length` UTF-8 bytes takes, to size the column holding it."""
    raw = NONCE_BYTES + plain_length + TAG_BYTES
    return len(SEALED_V1) + 4 * ((raw + 2) // 3)


class Sealer:
    """Seals and opens the values of one purpose (`"alarms.notify.channel-secret"`) under one secret key."""

    def __init__(self, secret_key: str, purpose: str) -> None:
        if not secret_key:
            raise ValueError("sealing needs a secret key")
        if not purpose:
            raise ValueError("sealing needs a purpose")
        self.purpose = purpose
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=KEY_SALT, info=purpose.encode())
        self._aead = AESGCM(hkdf.derive(secret_key.encode()))

    @classmethod
    def of(cls, settings: Settings, purpose: str) -> Sealer:
        return cls(settings.resolved_secret_key(), purpose)

    def seal(self, value: str, *, bound_to: str = "") -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, value.encode(), self._associated(bound_to))
        return SEALED_V1 + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, stored: str, *, bound_to: str = "") -> str:
        """The value `stored` holds: opened when sealed, as it is when stored before sealing."""
        if not is_sealed(stored):
            return stored
        if not stored.startswith(SEALED_V1):
            raise SealError(f"a value sealed for {self.purpose} has an unknown format ({stored[:12]}...)")
        try:
            raw = base64.urlsafe_b64decode(stored[len(SEALED_V1) :].encode())
        except (binascii.Error, ValueError):
            raise SealError(f"a value sealed for {self.purpose} is not valid base64") from None
        if len(raw) < NONCE_BYTES + TAG_BYTES:
            raise SealError(f"a value sealed for {self.purpose} is truncated")
        try:
            plain = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], self._associated(bound_to))
        except InvalidTag:
            raise SealError(
                f"a value sealed for {self.purpose} does not open: it was sealed under another secret key "
                "(IIP_SECRET_KEY), for another purpose or record, or it was altered"
            ) from None
        return plain.decode()

    def _associated(self, bound_to: str) -> bytes:
        # The version is authenticated too, so a later format cannot be passed off as this one.
        return f"{SEALED_V1}{bound_to}".encode()
