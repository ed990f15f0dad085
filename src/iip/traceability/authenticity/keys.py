"""Each tenant's code signing keys: made on first use, sealed at rest, rotated, published.

A tenant has one active key, which signs new codes; a rotation retires it (it stays published, so
codes it signed keep verifying) and makes another. Private keys are 32-byte Ed25519 seeds sealed
with `kernel.sealing` under the purpose below and bound to the key id, so a seed copied into
another row, or read with another platform secret key, does not open.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from iip.kernel.db import utcnow
from iip.kernel.errors import Unavailable
from iip.kernel.sealing import Sealer, SealError
from iip.kernel.settings import Settings
from iip.traceability.authenticity.codes import b64url, from_b64url, key_id_of
from iip.traceability.authenticity.models import CodeKey

SEALING_PURPOSE = "traceability.authenticity.code-key"
NEW_KEY_TRIES = 3  # a fresh key whose 48-bit id is taken (another tenant's) is made again


@dataclass(frozen=True, slots=True)
class SigningKey:
    key_id: str
    seed: bytes
    public_key: bytes


def _new_row(session: Session, sealer: Sealer, tenant_id: str) -> CodeKey:
    for _ in range(NEW_KEY_TRIES):
        private = Ed25519PrivateKey.generate()
        seed = private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        key_id = key_id_of(public)
        row = CodeKey(
            id=key_id,
            tenant_id=tenant_id,
            public_key=b64url(public),
            private_key=sealer.seal(base64.b64encode(seed).decode(), bound_to=key_id),
            active=True,
            created_at=utcnow(),
        )
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            continue
        return row
    raise Unavailable("could not make a signing key with an unused id; try again", code="code_key_clash")


def active_key(session: Session, settings: Settings, tenant_id: str, *, create: bool = True) -> SigningKey | None:
    """The tenant's active signing key, made on first use."""
    sealer = Sealer.of(settings, SEALING_PURPOSE)
    # Two first issuances at once may each make a key: both are valid, the newest signs.
    newest = select(CodeKey).where(CodeKey.tenant_id == tenant_id, CodeKey.active.is_(True))
    row = session.scalar(newest.order_by(CodeKey.created_at.desc(), CodeKey.id).limit(1))
    if row is None:
        if not create:
            return None
        row = _new_row(session, sealer, tenant_id)
    return _open(sealer, row)


def _open(sealer: Sealer, row: CodeKey) -> SigningKey:
    try:
        seed = base64.b64decode(sealer.open(row.private_key, bound_to=row.id))
    except (SealError, ValueError) as err:
        raise Unavailable(f"the code signing key {row.id} does not open: {err}", code="code_key_sealed") from None
    return SigningKey(row.id, seed, from_b64url(row.public_key))


def rotate(session: Session, settings: Settings, tenant_id: str) -> tuple[str | None, str]:
    """Retire the tenant's active key (kept and published) and make a new one; (old id, new id)."""
    old = active_key(session, settings, tenant_id, create=False)
    session.execute(
        update(CodeKey)
        .where(CodeKey.tenant_id == tenant_id, CodeKey.active.is_(True))
        .values(active=False, retired_at=utcnow())
    )
    new = _new_row(session, Sealer.of(settings, SEALING_PURPOSE), tenant_id)
    return (None if old is None else old.key_id), new.id


def published_keys(session: Session) -> list[CodeKey]:
    """Every tenant's keys, active and retired, oldest first: what offline verifiers need."""
    return list(session.scalars(select(CodeKey).order_by(CodeKey.created_at, CodeKey.id)))


def public_key_of(session: Session, key_id: str) -> tuple[str, bytes] | None:
    """(tenant id, raw public key) of a key id, or None."""
    row = session.get(CodeKey, key_id)
    return None if row is None else (row.tenant_id, from_b64url(row.public_key))
