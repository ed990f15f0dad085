"""Node signatures over handle records: Ed25519 over a canonical encoding of the handle and its values.

The signed bytes are canonical JSON (`sort_keys`, separators `,` and `:`, `ensure_ascii=False`) of
`{"handle": <handle as registered>, "values": [<values in index order, as the REST API shows them,
timestamps included>]}`. The handle is part of it, so a record's values copied onto another handle
fail; timestamps are set by the server before it signs, so they are covered too.

The node key is one Ed25519 private key in the data dir (`node_signing_key`, PKCS#8 PEM, mode 0600),
generated on first use in dev mode and required to exist in production (`iip id node-key`). Writes
find it through the database they write to: the app (at start-up) and the `iip id` commands register
their settings here, and a session of a database nobody registered writes unsigned records.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from iip.identifiers.codec import HandleName, HandleNotFound, load_values
from iip.identifiers.models import Handle
from iip.identifiers.repository import HandleRepository
from iip.kernel.errors import Unavailable
from iip.kernel.settings import Mode, Settings

if TYPE_CHECKING:
    from iip.kernel.runtime import Runtime

logger = logging.getLogger(__name__)

NODE_KEY_FILE = "node_signing_key"
ALGORITHM = "Ed25519"


@dataclass(frozen=True, slots=True)
class NodeKey:
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def public_bytes(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def public_pem(self) -> str:
        pem = self.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        return pem.decode()

    @property
    def key_id(self) -> str:
        """The first 16 hex digits of the SHA-256 of the raw public key."""
        return hashlib.sha256(self.public_bytes).hexdigest()[:16]

    def sign(self, payload: bytes) -> str:
        return base64.b64encode(self.private_key.sign(payload)).decode()

    def verifies(self, payload: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, payload)
        except InvalidSignature:
            return False
        return True


# --- the key file


def _create_key_file(path: Path, *, replace: bool = False) -> None:
    # As Settings.resolved_secret_key: written whole under a temporary name (mkstemp: mode 0600),
    # then linked into place, so a reader never sees a partial key and the first of two writers wins.
    # A rotation renames over the old file instead, which is atomic too.
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd, staged = tempfile.mkstemp(dir=path.parent, prefix=f".{NODE_KEY_FILE}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(pem)
        if replace:
            os.replace(staged, path)
            return
        with suppress(FileExistsError):
            os.link(staged, path)
    finally:
        with suppress(FileNotFoundError):
            os.unlink(staged)


def key_path(settings: Settings) -> Path:
    return settings.data_dir / NODE_KEY_FILE


# Keyed by path, and checked against the file's identity, so a key rotated by `iip id node-key
# --rotate` in another process is picked up by a running server on its next write.
_loaded: dict[Path, tuple[tuple[int, int], NodeKey]] = {}


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def load_node_key(settings: Settings, *, create: bool | None = None) -> NodeKey:
    """The node's key from the data dir; created there if missing (by default in dev mode only)."""
    path = key_path(settings).resolve()
    identity = _file_identity(path)
    cached = _loaded.get(path)
    if cached is not None and cached[0] == identity:
        return cached[1]
    if identity is None:
        if not (settings.mode is Mode.DEV if create is None else create):
            raise Unavailable(f"no node signing key at {path}; create one with `iip id node-key`", code="no_node_key")
        settings.ensure_data_dir()
        _create_key_file(path)
        identity = _file_identity(path)
    private_key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(private_key, Ed25519PrivateKey):
        raise Unavailable(f"{path} does not hold an Ed25519 private key", code="no_node_key")
    key = NodeKey(private_key)
    if identity is not None:
        _loaded[path] = (identity, key)
    return key


RETIRED_SUFFIX = ".retired"


def rotate_node_key(settings: Settings) -> tuple[NodeKey | None, NodeKey]:
    """A new node key in place of the old one, which is kept beside it as `<file>.<key id>.retired`."""
    path = key_path(settings).resolve()
    old = load_node_key(settings, create=False) if path.exists() else None
    settings.ensure_data_dir()
    if old is not None:
        retired = path.with_name(f"{NODE_KEY_FILE}.{old.key_id}{RETIRED_SUFFIX}")
        with suppress(FileExistsError):
            os.link(path, retired)
    _create_key_file(path, replace=True)
    return old, load_node_key(settings, create=False)


@dataclass(frozen=True, slots=True)
class Resigned:
    resigned: int
    skipped: list[str]  # failed the old key's check: left as they are rather than vouched for


RESIGN_BATCH = 500


def resign_records(session: Session, old: NodeKey | None, new: NodeKey) -> Resigned:
    """Sign every record again with `new`; only those the `old` key still vouches for (all if unsigned before)."""
    ids = list(session.scalars(select(Handle.id).order_by(Handle.id)))
    done, skipped = 0, []
    for start in range(0, len(ids), RESIGN_BATCH):
        rows = session.scalars(select(Handle).where(Handle.id.in_(ids[start : start + RESIGN_BATCH])))
        for row in rows:
            if old is not None and row.signature and not verify_row(old, row).ok:
                skipped.append(row.handle)
                continue
            row.signature = new.sign(canonical_record(row.handle, row.values))
            done += 1
        session.flush()
        session.expunge_all()
    return Resigned(done, skipped)


# --- which key signs for which database

_settings_by_database: dict[str, Settings] = {}


def _database_key(url: Any) -> str:
    return str(make_url(url).render_as_string(hide_password=False))


def register(settings: Settings, database_url: str | None = None) -> None:
    """Sign the records written to the database (by default `settings`') with the key in its data dir."""
    _settings_by_database[_database_key(database_url or settings.effective_database_url)] = settings


@asynccontextmanager
async def node_key_lifespan(runtime: Runtime) -> AsyncIterator[None]:
    """The app signs what it writes; the key is made (dev) or looked for (production) at start-up."""
    register(runtime.settings, runtime.db.url)
    try:
        key = load_node_key(runtime.settings)
        logger.info("signing handle records with %s key %s", ALGORITHM, key.key_id)
    except Unavailable as err:
        logger.warning("%s: handle writes are refused until there is one", err.message)
    yield


def node_key_for(session: Session) -> NodeKey | None:
    settings = _settings_by_database.get(_database_key(session.get_bind().engine.url))
    return None if settings is None else load_node_key(settings)


# --- records


def canonical_record(handle: str, stored_values: list[dict[str, Any]]) -> bytes:
    """The bytes a record's signature covers (see the module docstring)."""
    values = [v.to_wire() for v in sorted(load_values(stored_values), key=lambda v: v.index)]
    body = {"handle": handle, "values": values}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_row(session: Session, row: Handle) -> None:
    """Sign the row's current values with the node key of the session's database, if it has one."""
    key = node_key_for(session)
    row.signature = "" if key is None else key.sign(canonical_record(row.handle, row.values))


@dataclass(frozen=True, slots=True)
class Verification:
    handle: str
    ok: bool
    reason: str
    key_id: str
    signature: str


def verify_row(key: NodeKey, row: Handle) -> Verification:
    def result(ok: bool, reason: str) -> Verification:
        return Verification(row.handle, ok, reason, key.key_id, row.signature)

    if not row.signature:
        return result(False, "the record is not signed")
    try:
        signature = base64.b64decode(row.signature, validate=True)
    except (binascii.Error, ValueError):
        return result(False, "the stored signature is not base64")
    try:
        payload = canonical_record(row.handle, row.values)
    except (ValidationError, TypeError, KeyError, AttributeError):
        return result(False, "the stored values are malformed")
    if not key.verifies(payload, signature):
        return result(False, "the signature does not match the record: changed after signing, or signed by another key")
    return result(True, "signed by this node")


def answer_signature(session: Session, row: Handle, shown: list[dict[str, Any]]) -> str:
    """The signature to send with an answer showing `shown` (wire values) of `row`.

    The whole record: the stored signature. Fewer values (some not public): a signature over the
    values shown, made now, but only if the stored signature still holds, so a record changed in
    the database is not vouched for; otherwise the stored signature, which then fails.
    """
    stored_wire = [v.to_wire() for v in sorted(load_values(row.values), key=lambda v: v.index)]
    if shown == stored_wire or not row.signature:
        return row.signature
    key = node_key_for(session)
    if key is None or not verify_row(key, row).ok:
        return row.signature
    return key.sign(canonical_record(row.handle, shown))


def verify_handle(session: Session, key: NodeKey, name: HandleName) -> Verification:
    row = HandleRepository(session).handle(name.key)
    if row is None:
        raise HandleNotFound(f"handle '{name.handle}' not found")
    return verify_row(key, row)
