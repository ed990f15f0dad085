"""Delegation: a prefix homed on another node, and the referral this node answers for it.

A parent node delegates a prefix (`88.118.8`) to the child node that homes it by holding the prefix
handle `0.NA/88.118.8` with two values, as a Handle server describes a prefix:

- index 1, HS_SITE (format `site`, HANDLE.NET's site info JSON): the child's REST base URL as one
  server with an HTTP or HTTPS interface (address, port, and a `path` attribute when the base URL
  has one); the server's `publicKey` is the child's node key.
- index 300, HS_PUBKEY (format `base64`): the child's raw 32-byte Ed25519 node key, the key records
  from that node must be signed with.

The parent signs that record like any other, so a resolver that trusts the parent learns the child's
key from it. A resolution of a handle under a delegated prefix that is not held here is answered with
a service referral (Handle response code 302) carrying the prefix handle's values and signature.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from iip.identifiers.codec import (
    DEFAULT_TTL,
    HS_PUBKEY,
    HS_SITE,
    HandleData,
    HandleName,
    HandleProblem,
    HandleValue,
    ResponseCode,
    SiteData,
    dump_values,
    load_values,
    parse_prefix,
    timestamp,
)
from iip.identifiers.models import Handle, Prefix
from iip.identifiers.repository import HandleRepository
from iip.identifiers.signing import sign_row
from iip.kernel import audit
from iip.kernel.auth import Principal, new_id
from iip.kernel.db import utcnow
from iip.kernel.errors import Conflict, Invalid, NotFound
from iip.kernel.settings import NodeRole

SITE_INDEX = 1
PUBKEY_INDEX = 300
PUBLIC_KEY_BYTES = 32
ADDRESS_RE = re.compile(r"^[A-Za-z0-9.:_-]{1,255}$")
PATH_RE = re.compile(r"^/[^\s?#]*$")
DEFAULT_PORTS = {"http": 80, "https": 443}


# --- pure: the values of a delegation


def ancestors(prefix: str) -> list[str]:
    """`88.118.8` -> `88.118.8`, `88.118`, `88`: the prefix and those above it, longest first."""
    parts = prefix.lower().split(".")
    return [".".join(parts[:n]) for n in range(len(parts), 0, -1)]


def is_under(prefix: str, parent: str) -> bool:
    """Whether `prefix` is `parent` itself or below it (`88.118.8` is under `88.118`, not under `88.11`)."""
    prefix, parent = prefix.lower(), parent.lower()
    return prefix == parent or prefix.startswith(f"{parent}.")


def parse_public_key(text: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Invalid("the public key must be base64", code="invalid_public_key") from None
    if len(raw) != PUBLIC_KEY_BYTES:
        raise Invalid("the public key must be a raw 32-byte Ed25519 key", code="invalid_public_key")
    return raw


def site_data(node_url: str, public_key: bytes) -> SiteData:
    """HS_SITE data for a node reached at `node_url` (http or https, optional base path)."""
    parts = urlsplit(node_url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.query or parts.fragment:
        raise Invalid(f"'{node_url[:200]}' is not an http:// or https:// base URL", code="invalid_node_url")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise Invalid(f"'{node_url[:200]}' has an invalid port", code="invalid_node_url") from None
    path = parts.path.rstrip("/")
    attributes = [{"name": "desc", "value": "IIP identifier node"}]
    if path:
        attributes.append({"name": "path", "value": path})
    return SiteData.model_validate(
        {
            "attributes": attributes,
            "servers": [
                {
                    "serverId": 1,
                    "address": parts.hostname,
                    "publicKey": {"format": "base64", "value": base64.b64encode(public_key).decode()},
                    "interfaces": [{"query": True, "admin": False, "protocol": parts.scheme.upper(), "port": port}],
                }
            ],
        }
    )


def site_url(site: SiteData) -> str:
    """The REST base URL of the first server with an HTTP(S) interface (HTTPS preferred)."""
    for wanted in ("HTTPS", "HTTP"):
        for server in site.servers:
            for interface in server.interfaces:
                if interface.protocol != wanted:
                    continue
                if not ADDRESS_RE.match(server.address):
                    raise Invalid(f"HS_SITE server address '{server.address[:100]}' is not a host name or address")
                host = f"[{server.address}]" if ":" in server.address else server.address
                scheme = wanted.lower()
                port = "" if interface.port == DEFAULT_PORTS[scheme] else f":{interface.port}"
                path = site.attribute("path") or ""
                if path and not PATH_RE.match(path):
                    raise Invalid("the HS_SITE path attribute is not a URL path")
                return f"{scheme}://{host}{port}{path.rstrip('/')}"
    raise Invalid("the HS_SITE value has no HTTP or HTTPS interface")


def delegation_values(node_url: str, public_key: bytes, ttl: int = DEFAULT_TTL) -> list[HandleValue]:
    site = site_data(node_url, public_key)
    return [
        HandleValue(
            index=SITE_INDEX,
            type=HS_SITE,
            data=HandleData(format="site", value=site.model_dump(by_alias=True, exclude_none=True)),
            ttl=ttl,
        ),
        HandleValue(
            index=PUBKEY_INDEX,
            type=HS_PUBKEY,
            data=HandleData(format="base64", value=base64.b64encode(public_key).decode()),
            ttl=ttl,
        ),
    ]


@dataclass(frozen=True, slots=True)
class Delegation:
    """What a prefix handle says about the node homing its prefix."""

    node_url: str
    public_key: bytes
    ttl: int  # the shortest TTL of the two values


def read_delegation(values: Sequence[HandleValue]) -> Delegation:
    """The HS_SITE and HS_PUBKEY of a prefix handle; Invalid if either is missing or malformed."""
    site = next((v for v in values if v.type.upper() == HS_SITE and v.data.format == "site"), None)
    key = next((v for v in values if v.type.upper() == HS_PUBKEY), None)
    if site is None or key is None:
        raise Invalid("the prefix handle lacks an HS_SITE or an HS_PUBKEY value")
    try:
        site_info = SiteData.model_validate(site.data.value)
    except ValidationError:
        raise Invalid("the HS_SITE value is malformed") from None
    if key.data.format != "base64" or not isinstance(key.data.value, str):
        raise Invalid("the HS_PUBKEY value is not a base64 Ed25519 key")
    return Delegation(site_url(site_info), parse_public_key(key.data.value), min(site.ttl, key.ttl))


# --- referrals


@dataclass(frozen=True, slots=True)
class Referral:
    prefix: str  # the delegated prefix, e.g. 88.118
    node_url: str
    handle: str  # the prefix handle, 0.NA/88.118
    values: list[dict[str, Any]]  # its values as the REST API shows them
    signature: str

    def to_wire(self) -> dict[str, Any]:
        return {"handle": self.handle, "values": self.values, "signature": self.signature}


class ServiceReferral(HandleProblem):
    """The handle's prefix is homed on another node: ask it (Handle RC_SERVICE_REFERRAL)."""

    code = "service_referral"
    response_code = ResponseCode.SERVICE_REFERRAL
    http_status = 307

    def __init__(self, message: str, referral: Referral) -> None:
        super().__init__(message)
        self.referral = referral


def find_referral(session: Session, name: HandleName) -> Referral | None:
    """The delegation covering the handle's prefix, unless a prefix homed here covers it more closely."""
    if name.is_prefix_handle:
        return None  # prefix handles are answered by the node holding them
    candidates = ancestors(name.prefix_key)
    rows = {p.prefix: p for p in session.scalars(select(Prefix).where(Prefix.prefix.in_(candidates)))}
    for candidate in candidates:
        row = rows.get(candidate)
        if row is None:
            continue
        if not row.node_url:
            return None
        record = HandleRepository(session).handle(f"0.na/{candidate}")
        if record is None:
            return None
        wire = [v.to_wire() for v in load_values(record.values)]
        return Referral(candidate, row.node_url, record.handle, wire, record.signature)
    return None


# --- delegating


class DelegationService:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.repo = HandleRepository(session)

    def delegate(
        self,
        tenant_id: str,
        prefix: str,
        node_url: str,
        public_key: bytes,
        *,
        role: NodeRole,
        actor: Principal | str,
        ttl: int = DEFAULT_TTL,
    ) -> Prefix:
        """Delegate `prefix` to the node at `node_url` (or update the delegation: a new URL or key)."""
        if isinstance(actor, Principal):
            actor.require("platform.write")
        key = parse_prefix(prefix).lower()
        if role is NodeRole.ENTERPRISE:
            raise Invalid("an enterprise node homes its prefixes itself and delegates none", code="node_role")
        if not 0 <= ttl <= 2**31 - 1:
            raise Invalid("the TTL must be between 0 and 2^31-1 seconds")
        values = delegation_values(node_url.rstrip("/"), public_key, ttl)
        record = self.repo.prefix(key)
        if record is not None and not record.node_url:
            raise Conflict(f"prefix '{prefix}' is homed on this node (or applied for)", code="prefix_exists")
        if record is None:
            self._check_parent(key, role)
            if self.repo.exists(f"0.na/{key}"):
                raise Conflict(f"handle '0.NA/{prefix}' already exists", code="handle_exists")
            record = Prefix(id=new_id(), tenant_id=tenant_id, prefix=key, node_url=node_url.rstrip("/"))
            self.repo.add_prefix(record)
            self._write_record(key, tenant_id, values, actor, created=True)
        else:
            record.node_url = node_url.rstrip("/")
            record.tenant_id = tenant_id
            record.updated_at = utcnow()
            self._write_record(key, tenant_id, values, actor, created=False)
        self.session.flush()
        self._audit(actor, "identifiers.prefix.delegate", key, tenant_id, f"to {record.node_url}")
        return record

    def undelegate(self, prefix: str, *, actor: Principal | str) -> Prefix:
        record = self.get(prefix, actor)
        if isinstance(actor, Principal):
            actor.require("platform.write")
        row = self.repo.handle(f"0.na/{record.prefix}")
        if row is not None:
            self.repo.record_history(row, "delete", self._label(actor), row.values)
            self.repo.delete(row)
        self.session.delete(record)
        self.session.flush()
        self._audit(actor, "identifiers.prefix.undelegate", record.prefix, record.tenant_id, f"was {record.node_url}")
        return record

    def all(self, actor: Principal | str) -> list[Prefix]:
        query = select(Prefix).where(Prefix.node_url != "").order_by(Prefix.prefix)
        if isinstance(actor, Principal):
            actor.require("identifiers.read")
            if not actor.is_platform:
                query = query.where(Prefix.tenant_id == actor.tenant_id)
        return list(self.session.scalars(query))

    def get(self, prefix: str, actor: Principal | str) -> Prefix:
        """A delegation of the actor's tenant (any for operators and the CLI); others answer as missing."""
        record = self.repo.prefix(prefix.lower())
        foreign = record is not None and isinstance(actor, Principal) and not actor.is_platform
        if foreign and isinstance(actor, Principal) and record is not None:
            foreign = record.tenant_id != actor.tenant_id
        if record is None or not record.node_url or foreign:
            raise NotFound(f"no delegation of prefix '{prefix[:100]}'", code="delegation_not_found")
        if isinstance(actor, Principal):
            actor.require("identifiers.read")
        return record

    def delegation(self, record: Prefix) -> Delegation:
        row = self.repo.handle(f"0.na/{record.prefix}")
        if row is None:
            raise NotFound(f"the prefix handle of '{record.prefix}' is missing")
        return read_delegation(load_values(row.values))

    def _check_parent(self, key: str, role: NodeRole) -> None:
        """A secondary node delegates only below a prefix it homes; the root may delegate any prefix."""
        if role is NodeRole.ROOT:
            return
        above = ancestors(key)[1:]
        homed = self.session.scalars(
            select(Prefix).where(Prefix.prefix.in_(above), Prefix.node_url == "", Prefix.status == "approved")
        ).first()
        if homed is None:
            raise Invalid(
                f"prefix '{key}' is not below a prefix homed on this node; only the root node delegates others",
                code="parent_not_homed",
            )

    def _write_record(
        self, key: str, tenant_id: str, values: list[HandleValue], actor: Principal | str, *, created: bool
    ) -> None:
        now = timestamp(utcnow())
        row = self.repo.handle(f"0.na/{key}")
        old = {v.index: v for v in load_values(row.values)} if row is not None else {}
        for value in values:
            previous = old.get(value.index)
            same = previous is not None and previous.same_content(value)
            value.timestamp = previous.timestamp if same and previous is not None else now
        if row is None:
            row = Handle(
                tenant_id=tenant_id, key=f"0.na/{key}", handle=f"0.NA/{key}", prefix="0.na", values=[], version=0
            )
            self.session.add(row)
        row.values = dump_values(values)
        row.tenant_id = tenant_id
        sign_row(self.session, row)
        row.version += 1
        row.updated_at = utcnow()
        self.session.flush()
        self.repo.record_history(row, "create" if created else "update", self._label(actor))

    @staticmethod
    def _label(actor: Principal | str) -> str:
        return actor if isinstance(actor, str) else actor.label

    def _audit(self, actor: Principal | str, action: str, prefix: str, tenant_id: str, detail: str) -> None:
        record = audit.AuditRecord(action=action, object_type="prefix", object_id=prefix, detail=detail)
        audit.append(self.session, actor, record, tenant_id=tenant_id)
