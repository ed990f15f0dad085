"""Handle use cases: prefixes with their admin identity, register, resolve, modify, delete, list.

Who may write is decided as a Handle server decides it: a caller authenticated as a handle identity
(`300:0.NA/88.118.8` and its HS_SECKEY) acts with the HS_ADMIN rights that name it, directly or
through an HS_VLIST group, on the handle itself or on its prefix handle `0.NA/<prefix>` (prefix
administrators administer every handle under the prefix). An IIP principal (API key, console
session) acts by its role within its own tenant: a handle belongs to its prefix's tenant, and
another tenant's prefix answers exactly like one that is not homed here.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from urllib.parse import unquote

from sqlalchemy.orm import Session

from iip.identifiers.codec import (
    ADMIN_GROUP_INDEX,
    ADMIN_INDEX,
    ALL_PERMISSIONS,
    HIDDEN_VALUE_PERMISSIONS,
    HS_ADMIN,
    HS_SECKEY,
    HS_VLIST,
    NA_PREFIX,
    NO_PERMISSIONS,
    SECRET_KEY_INDEX,
    AdminPermission,
    AuthenticationNeeded,
    HandleAlreadyExists,
    HandleName,
    HandleNotFound,
    HandleValue,
    InvalidValue,
    NotAuthorized,
    PrefixNotHomed,
    ValueAlreadyExists,
    ValueReference,
    ValuesNotFound,
    admin_value,
    dump_values,
    load_values,
    parse_admin_permissions,
    parse_handle,
    parse_prefix,
    parse_value_reference,
    select_values,
    string_value,
    timestamp,
    vlist_value,
)
from iip.identifiers.delegation import ServiceReferral, find_referral
from iip.identifiers.models import Handle, Prefix
from iip.identifiers.repository import HandleRepository
from iip.identifiers.signing import sign_row
from iip.kernel import audit
from iip.kernel.auth import Principal, hash_password, new_id, verify_password
from iip.kernel.db import utcnow
from iip.kernel.errors import Conflict, Invalid

ARGON2_MARK = "$argon2"
VLIST_DEPTH = 3  # HS_VLIST groups may nest; deeper chains are not followed
MINT_ATTEMPTS = 5
NA_PERMISSIONS = AdminPermission.ADD_NA | AdminPermission.DELETE_NA


VERIFIED_TTL_SECONDS = 300.0
VERIFIED_MAX = 4096
# Handle clients send the secret on every request; argon2 costs tens of milliseconds each time. A
# success is remembered briefly, keyed by a SHA-256 over the stored hash and the secret given, so a
# changed secret (a new stored hash) is verified afresh.
_verified: dict[str, float] = {}


def _verify_secret(stored_hash: str, secret: str) -> bool:
    fingerprint = hashlib.sha256(f"{stored_hash}\0{secret}".encode()).hexdigest()
    now = time.monotonic()
    seen = _verified.get(fingerprint)
    if seen is not None and now - seen < VERIFIED_TTL_SECONDS:
        return True
    if not verify_password(stored_hash, secret):
        return False
    if len(_verified) >= VERIFIED_MAX:
        _verified.clear()
    _verified[fingerprint] = now
    return True


@cache
def _dummy_hash() -> str:
    # Verified against when an identity does not exist, so timing does not tell which do.
    return hash_password(uuid.uuid4().hex)


@dataclass(frozen=True, slots=True)
class HandleIdentity:
    """A caller authenticated as `index:handle` by the secret key stored at that value."""

    reference: ValueReference
    tenant_id: str

    @property
    def label(self) -> str:
        return f"handle:{self.reference}"


Caller = Principal | HandleIdentity | None


@dataclass(frozen=True, slots=True)
class Resolution:
    handle: str
    values: list[HandleValue]
    row: Handle | None = field(default=None, compare=False, repr=False)  # for the answer's signature


@dataclass(frozen=True, slots=True)
class WriteResult:
    handle: str
    created: bool


@dataclass(frozen=True, slots=True)
class HandlePage:
    prefix: str
    total: int
    page: int
    page_size: int
    handles: list[str]


def _label(caller: Caller) -> str:
    return "anonymous" if caller is None else caller.label


def _required_for_change(old: HandleValue | None, new: HandleValue | None) -> AdminPermission:
    """The HS_ADMIN bit a change of one value needs (admin values have their own bits)."""
    is_admin = HS_ADMIN in {v.type for v in (old, new) if v is not None}
    if old is None:
        return AdminPermission.ADD_ADMIN if is_admin else AdminPermission.ADD_VALUE
    if new is None:
        return AdminPermission.REMOVE_ADMIN if is_admin else AdminPermission.REMOVE_VALUE
    return AdminPermission.MODIFY_ADMIN if is_admin else AdminPermission.MODIFY_VALUE


class HandleService:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.repo = HandleRepository(session)

    # --- prefixes

    def create_prefix(self, tenant_id: str, prefix: str, secret: str, *, actor: Principal | str) -> Prefix:
        """A prefix homed here and its admin identity `0.NA/<prefix>`.

        The identity holds the secret (only its hash) at 300, an HS_ADMIN at 100 granting
        `300:0.NA/<prefix>` every right, and the admin group HS_VLIST at 200 that handles created
        by common clients name in their HS_ADMIN (`200:0.NA/<prefix>`).
        """
        parse_prefix(prefix)
        if len(secret) < 8:
            raise Invalid("the prefix secret must be at least 8 characters")
        key = prefix.lower()
        if self.repo.prefix(key) is not None:
            raise Conflict(f"prefix '{prefix}' already exists", code="prefix_exists")
        record = Prefix(id=new_id(), tenant_id=tenant_id, prefix=key)
        self.repo.add_prefix(record)
        self.create_admin_identity(tenant_id, prefix, hash_password(secret), actor=actor)
        return record

    def create_admin_identity(self, tenant_id: str, prefix: str, secret_hash: str, *, actor: Principal | str) -> None:
        """The prefix handle `0.NA/<prefix>` of a prefix, holding the hash of its admin secret."""
        name = parse_handle(f"0.NA/{prefix}")
        if self.repo.exists(name.key):
            raise Conflict(f"handle '{name.handle}' already exists", code="handle_exists")
        identity = ValueReference(SECRET_KEY_INDEX, name)
        values = [
            admin_value(ADMIN_INDEX, identity, ALL_PERMISSIONS),
            vlist_value(ADMIN_GROUP_INDEX, [identity]),
            string_value(SECRET_KEY_INDEX, HS_SECKEY, secret_hash, permissions=HIDDEN_VALUE_PERMISSIONS),
        ]
        self._create_row(name, tenant_id, values, actor)
        self._audit(actor, "identifiers.prefix.create", prefix.lower(), tenant_id, f"admin identity {identity}")

    def list_prefixes(self, caller: Caller) -> list[Prefix]:
        if caller is None:
            raise AuthenticationNeeded("authentication needed to list prefixes")
        if isinstance(caller, Principal):
            caller.require("identifiers.read")
            prefixes = self.repo.prefixes(None if caller.is_platform else caller.tenant_id)
        else:
            prefixes = self.repo.prefixes(caller.tenant_id)
        return [p for p in prefixes if not p.node_url]  # delegated ones are homed elsewhere

    # --- authentication

    def authenticate(self, username: str, secret: str) -> HandleIdentity:
        """Check `index:handle` and the secret against the HS_SECKEY value at that index."""
        try:
            reference = parse_value_reference(unquote(username))
        except Invalid:
            verify_password(_dummy_hash(), secret)
            raise AuthenticationNeeded("the user name must be index:handle, e.g. 300:0.NA/88.118.8") from None
        row = self.repo.handle(reference.name.key)
        stored = None
        if row is not None:
            stored = next((v for v in load_values(row.values) if v.index == reference.index), None)
        if row is None or stored is None or stored.type != HS_SECKEY or not isinstance(stored.data.value, str):
            verify_password(_dummy_hash(), secret)
            raise AuthenticationNeeded("authentication failed")
        if not _verify_secret(stored.data.value, secret):
            raise AuthenticationNeeded("authentication failed")
        return HandleIdentity(ValueReference(reference.index, parse_handle(row.handle)), row.tenant_id)

    # --- resolution

    def resolve(
        self,
        name: HandleName,
        caller: Caller,
        *,
        types: Sequence[str] = (),
        indexes: Sequence[int] = (),
        public_only: bool | None = None,
    ) -> Resolution:
        row = self.repo.handle(name.key)
        if row is None:
            referral = find_referral(self.session, name)
            if referral is not None:
                raise ServiceReferral(f"prefix '{referral.prefix}' is homed at {referral.node_url}", referral)
            raise HandleNotFound(f"handle '{name.handle}' not found")
        values = select_values(load_values(row.values), types, indexes)
        asked_for_all = public_only is False
        if public_only is None:
            public_only = caller is None
        if not public_only:
            if caller is None:
                raise AuthenticationNeeded("authentication needed to read values that are not public")
            if self._may_read(caller, row):
                visible = [v for v in values if v.value_permissions.admin_read or v.value_permissions.public_read]
                return Resolution(row.handle, visible, row)
            if asked_for_all and any(not v.value_permissions.public_read for v in values):
                # Only when asked for explicitly (publicOnly=false); by default a caller sees what it may.
                raise NotAuthorized(f"no permission to read the values of '{row.handle}' that are not public")
        return Resolution(row.handle, [v for v in values if v.value_permissions.public_read], row)

    def _may_read(self, caller: Principal | HandleIdentity, row: Handle) -> bool:
        if isinstance(caller, Principal):
            same_tenant = caller.is_platform or caller.tenant_id == row.tenant_id
            return same_tenant and caller.can("identifiers.read")
        return AdminPermission.READ_VALUE in self._rights(caller, row)

    # --- writes

    def put(
        self,
        name: HandleName,
        values: list[HandleValue],
        caller: Caller,
        *,
        indexes: Sequence[int] | None = None,
        overwrite: bool = True,
        mint: bool = False,
    ) -> WriteResult:
        """Create or replace a handle record; with `indexes`, add or replace only those values."""
        self._require_caller(caller)
        prefix = self._writable_prefix(name, caller)
        if mint:
            name = self._mint(name)
        if indexes is not None:
            stray = sorted({v.index for v in values} - set(indexes))
            if stray:
                raise InvalidValue(f"values at indexes {stray} are not named by the index parameter")
        if not values:
            raise InvalidValue("no handle values given")
        row = self.repo.handle(name.key)
        if indexes is None:
            if row is None:
                return self._create(name, prefix, values, caller)
            if not overwrite:
                raise HandleAlreadyExists(f"handle '{row.handle}' already exists")
            old = {v.index: v for v in load_values(row.values)}
            new = {v.index: v for v in values}
        else:
            if row is None:
                raise HandleNotFound(f"handle '{name.handle}' not found")
            old = {v.index: v for v in load_values(row.values)}
            if not overwrite:
                taken = sorted(v.index for v in values if v.index in old)
                if taken:
                    raise ValueAlreadyExists(f"values already exist at indexes {taken}")
            new = {**old, **{v.index: v for v in values}}
        self._check_changes(caller, row, prefix, old, new)
        self._keep_secrets(old, new)
        now = timestamp(utcnow())
        for index, value in new.items():
            previous = old.get(index)
            value.timestamp = previous.timestamp if previous is not None and previous.same_content(value) else now
        row.values = dump_values(new.values())
        sign_row(self.session, row)
        row.version += 1
        row.updated_at = utcnow()
        self.session.flush()
        self.repo.record_history(row, "update", _label(caller))
        changed = sorted(i for i in new if old.get(i) is None or not old[i].same_content(new[i]))
        self._audit(caller, "identifiers.handle.update", row.handle, row.tenant_id, f"indexes {changed}")
        return WriteResult(row.handle, created=False)

    def delete(self, name: HandleName, caller: Caller, *, indexes: Sequence[int] | None = None) -> str:
        """Delete a handle, or only the values at `indexes`."""
        self._require_caller(caller)
        prefix = self._writable_prefix(name, caller)
        row = self.repo.handle(name.key)
        if row is None:
            raise HandleNotFound(f"handle '{name.handle}' not found")
        if not indexes:
            needed = AdminPermission.DELETE_NA if name.is_prefix_handle else AdminPermission.DELETE_HANDLE
            self._require(caller, row, prefix, needed)
            values = row.values
            self.repo.record_history(row, "delete", _label(caller), values)
            self.repo.delete(row)
            self._audit(caller, "identifiers.handle.delete", row.handle, row.tenant_id, f"version {row.version}")
            return row.handle
        old = {v.index: v for v in load_values(row.values)}
        present = [i for i in indexes if i in old]
        if not present:
            raise ValuesNotFound(f"no values at indexes {sorted(set(indexes))} of '{row.handle}'")
        new = {i: v for i, v in old.items() if i not in present}
        self._check_changes(caller, row, prefix, old, new)
        row.values = dump_values(new.values())
        sign_row(self.session, row)
        row.version += 1
        row.updated_at = utcnow()
        self.session.flush()
        self.repo.record_history(row, "update", _label(caller))
        self._audit(caller, "identifiers.handle.update", row.handle, row.tenant_id, f"removed indexes {present}")
        return row.handle

    def list_handles(self, prefix_text: str, caller: Caller, *, page: int, page_size: int) -> HandlePage:
        caller = self._require_caller(caller)
        key = parse_prefix(prefix_text).lower()
        name = HandleName(prefix_text, "")
        prefix = self._writable_prefix(name, caller)
        if isinstance(caller, Principal):
            caller.require("identifiers.read")
        else:
            prefix_row = self.repo.handle(name.prefix_handle_key)
            rights = self._rights(caller, prefix_row) if prefix_row is not None else NO_PERMISSIONS
            if AdminPermission.LIST_HANDLES not in rights:
                raise NotAuthorized(f"no permission to list the handles of '{prefix.prefix}'")
        total, handles = self.repo.page(key, offset=page * page_size, limit=page_size)
        return HandlePage(prefix_text, total, page, page_size, handles)

    # --- helpers

    def _create(self, name: HandleName, prefix: Prefix, values: list[HandleValue], caller: Caller) -> WriteResult:
        needed = AdminPermission.ADD_NA if name.is_prefix_handle else AdminPermission.ADD_HANDLE
        self._require(caller, None, prefix, needed)
        self._keep_secrets({}, {v.index: v for v in values})
        row = self._create_row(name, prefix.tenant_id, values, _label(caller))
        self._audit(caller, "identifiers.handle.create", row.handle, row.tenant_id, f"{len(values)} values")
        return WriteResult(row.handle, created=True)

    def _create_row(
        self, name: HandleName, tenant_id: str, values: Iterable[HandleValue], actor: Principal | str
    ) -> Handle:
        now = timestamp(utcnow())
        stamped = []
        for value in values:
            value.timestamp = now
            stamped.append(value)
        row = Handle(
            tenant_id=tenant_id,
            key=name.key,
            handle=name.handle,
            prefix=name.prefix_key,
            values=dump_values(stamped),
            version=1,
        )
        sign_row(self.session, row)
        self.repo.add(row)
        self.repo.record_history(row, "create", actor if isinstance(actor, str) else actor.label)
        return row

    def _mint(self, base: HandleName) -> HandleName:
        for _ in range(MINT_ATTEMPTS):
            candidate = parse_handle(f"{base.handle}{uuid.uuid4().hex.upper()}")
            if not self.repo.exists(candidate.key):
                return candidate
        raise Conflict("could not mint a new suffix; try again")

    @staticmethod
    def _require_caller(caller: Caller) -> Principal | HandleIdentity:
        if caller is None:
            raise AuthenticationNeeded("authentication needed")
        return caller

    def _writable_prefix(self, name: HandleName, caller: Caller) -> Prefix:
        prefix = self.repo.prefix(name.owner_prefix)
        foreign = (
            isinstance(caller, Principal)
            and prefix is not None
            and not caller.is_platform
            and prefix.tenant_id != caller.tenant_id
        )
        if prefix is None or prefix.node_url or foreign:
            raise PrefixNotHomed(f"prefix '{name.owner_prefix}' is not homed on this server")
        if prefix.status != "approved":
            # A filing not (yet) approved: its tenant learns why, anyone else gets the answer above.
            owner = isinstance(caller, Principal)
            why = f": its filing is {prefix.status}" if owner else ""
            raise PrefixNotHomed(f"prefix '{name.owner_prefix}' is not homed on this server{why}")
        return prefix

    def _require(self, caller: Caller, row: Handle | None, prefix: Prefix, needed: AdminPermission) -> None:
        if caller is None:
            raise AuthenticationNeeded("authentication needed")
        if isinstance(caller, Principal):
            # Naming authority handles hold the prefix's credentials: administrators only.
            on_na_handle = bool(needed & NA_PERMISSIONS) or (row is not None and row.prefix == NA_PREFIX)
            permission = "identifiers.admin" if on_na_handle else "identifiers.write"
            if not caller.can(permission):
                raise NotAuthorized(f"role '{caller.role}' lacks permission '{permission}'")
            return
        rights = self._rights(caller, row) if row is not None else NO_PERMISSIONS
        prefix_row = self.repo.handle(f"0.na/{prefix.prefix}")
        if prefix_row is not None and prefix_row is not row:
            rights |= self._rights(caller, prefix_row)
        if needed not in rights:
            missing = "|".join(p.name or "" for p in AdminPermission if p in needed and p not in rights).lower()
            raise NotAuthorized(f"{caller.reference} lacks the HS_ADMIN permission {missing}")

    def _check_changes(
        self,
        caller: Caller,
        row: Handle,
        prefix: Prefix,
        old: dict[int, HandleValue],
        new: dict[int, HandleValue],
    ) -> None:
        needed = NO_PERMISSIONS
        for index in old.keys() | new.keys():
            before, after = old.get(index), new.get(index)
            if before is not None and after is not None and before.same_content(after):
                continue
            if before is not None and not before.value_permissions.admin_write:
                raise NotAuthorized(f"the value at index {index} is not writable")
            needed |= _required_for_change(before, after)
        if needed:
            self._require(caller, row, prefix, needed)

    @staticmethod
    def _keep_secrets(old: dict[int, HandleValue], new: dict[int, HandleValue]) -> None:
        """Store secret keys hashed; a record read back and written again keeps its hashes."""
        for index, value in new.items():
            if value.type != HS_SECKEY or value.data.format != "string":
                continue
            secret = str(value.data.value)
            previous = old.get(index)
            if previous is not None and previous.type == HS_SECKEY and previous.data.value == secret:
                continue
            if secret.startswith(ARGON2_MARK):
                raise InvalidValue("an HS_SECKEY value must be the secret itself, not a hash")
            if len(secret) < 8:
                raise InvalidValue("an HS_SECKEY secret must be at least 8 characters")
            value.data.value = hash_password(secret)

    def _rights(self, identity: HandleIdentity, row: Handle, depth: int = 0) -> AdminPermission:
        """The HS_ADMIN rights `row` grants `identity` (directly, or as a member of an HS_VLIST)."""
        rights = NO_PERMISSIONS
        for value in load_values(row.values):
            if value.type != HS_ADMIN or value.data.format != "admin":
                continue
            admin = value.admin()
            if self._names(identity, admin.handle.lower(), admin.index, depth):
                rights |= parse_admin_permissions(admin.permissions)
        return rights

    def _names(self, identity: HandleIdentity, key: str, index: int, depth: int) -> bool:
        """Whether `index:key` is the identity, or an HS_VLIST group holding it."""
        me = identity.reference
        if key == me.name.key and index in (0, me.index):
            return True
        if depth >= VLIST_DEPTH:
            return False
        group_row = self.repo.handle(key)
        if group_row is None:
            return False
        for value in load_values(group_row.values):
            if value.type == HS_VLIST and value.index == index and isinstance(value.data.value, list):
                for member in value.data.value:
                    if self._names(identity, str(member["handle"]).lower(), int(member["index"]), depth + 1):
                        return True
        return False

    def _audit(self, actor: Caller | str, action: str, object_id: str, tenant_id: str, detail: str) -> None:
        who: Principal | str = actor if isinstance(actor, Principal | str) else _label(actor)
        record = audit.AuditRecord(action=action, object_type="handle", object_id=object_id, detail=detail)
        audit.append(self.session, who, record, tenant_id=tenant_id)
