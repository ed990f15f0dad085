"""Ed25519 signatures of many payloads, made in worker processes.

The workers import this module only (libsodium through PyNaCl, `cryptography` when it is missing),
not the platform, so they start in a fraction of a second. Ed25519 is deterministic (RFC 8032):
either library gives the same signature for the same seed and payload.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from functools import lru_cache


@lru_cache(maxsize=4)
def signer(seed: bytes) -> Callable[[bytes], str]:
    """A function giving the base64 signature of a payload by the key of this 32-byte seed."""
    try:
        from nacl.bindings import crypto_sign, crypto_sign_seed_keypair
    except ImportError:  # pragma: no cover - PyNaCl is a dependency
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        private_key = Ed25519PrivateKey.from_private_bytes(seed)
        return lambda payload: base64.b64encode(private_key.sign(payload)).decode()
    secret = crypto_sign_seed_keypair(seed)[1]
    return lambda payload: base64.b64encode(crypto_sign(payload, secret)[:64]).decode()


def sign_all(seed: bytes, payloads: Sequence[bytes]) -> list[str]:
    """Base64 signatures of `payloads`, in order (what a worker process runs)."""
    sign = signer(seed)
    return [sign(payload) for payload in payloads]
