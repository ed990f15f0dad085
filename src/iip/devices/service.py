"""Use cases of the device registry: profiles, gateways, devices, their tokens, the registry document.

Every call is scoped to the acting principal's tenant (platform operators reach every tenant by
id); another tenant's object is indistinguishable from a missing one. Changes are announced through
`on_change` once the transaction commits, so the in-memory directory ingest uses reloads.

The registry document (YAML or JSON, `profiles:`, `gateways:`, `devices:`) is imported all or
nothing: every item is checked first and every error is named with its place
(`devices[3].profile: unknown profile 'pumpx'`); items are matched by name or key, so importing the
same document again changes nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from iip.devices.models import DeadLetter, Device, Gateway, Profile
from iip.devices.profiles import DeviceProfile, Protocol
from iip.devices.repository import RegistryRepository
from iip.devices.schemas import (
    CONNECTION_MODELS,
    DeadLetterOut,
    DeviceCreated,
    DeviceOut,
    DeviceSpec,
    DeviceUpdate,
    GatewayOut,
    GatewaySpec,
    GatewayUpdate,
    ImportReport,
    ProfileOut,
    SectionReport,
    SparkplugIds,
)
from iip.kernel.auth import AccessService, Principal, new_id, sha256_hex
from iip.kernel.db import utcnow
from iip.kernel.documents import read_document, validation_messages
from iip.kernel.errors import Conflict, Invalid, NotFound

# Distinct from API keys (`iip_`), so ingest tells the kinds of credential apart without a lookup.
DEVICE_TOKEN_PREFIX = "iipd_"  # noqa: S105 - a prefix, not a secret
GATEWAY_TOKEN_PREFIX = "iipg_"  # noqa: S105
SECTIONS = ("profiles", "gateways", "devices")
MAX_ERRORS = 200  # a document wrong everywhere is answered with its first errors
MAX_DOCUMENT_BYTES = 10 * 1024 * 1024
# YAML aliases can make a small file expand into a huge tree: what is walked is bounded.
MAX_DOCUMENT_NODES = 2_000_000
SparkplugKey = tuple[str, str, str | None]
Spec = TypeVar("Spec", bound=BaseModel)


# --- tokens


@dataclass(frozen=True, slots=True)
class IssuedToken:
    secret: str  # shown once
    prefix: str  # public part, kept to tell tokens apart
    digest: str  # what is stored


def issue_token(kind_prefix: str) -> IssuedToken:
    prefix = secrets.token_hex(6)
    secret = f"{kind_prefix}{prefix}_{secrets.token_urlsafe(32)}"
    return IssuedToken(secret, prefix, token_digest(secret))


def token_digest(token: str) -> str:
    return sha256_hex(token)


# --- the registry document as text


def parse_document(data: bytes | str, document_format: str | None = None) -> Any:
    """A registry document from YAML or JSON text (`document_format` "yaml" or "json"; None: guess)."""
    return read_document(data, document_format, max_bytes=MAX_DOCUMENT_BYTES, max_values=MAX_DOCUMENT_NODES)


# --- validation helpers


def check_connection(protocol: Protocol, data: Mapping[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """The connection settings normalised for the protocol (defaults filled in), or the errors."""
    try:
        return CONNECTION_MODELS[protocol].model_validate(data).model_dump(mode="json"), []
    except ValidationError as err:
        return {}, validation_messages(err, where)


def _sparkplug_key(ids: SparkplugIds | None) -> SparkplugKey | None:
    return None if ids is None else (ids.group_id, ids.edge_node_id, ids.device_id)


def _device_sparkplug(device: Device) -> SparkplugKey | None:
    if device.sparkplug_group_id is None or device.sparkplug_edge_node_id is None:
        return None
    return (device.sparkplug_group_id, device.sparkplug_edge_node_id, device.sparkplug_device_id)


def _set_sparkplug(device: Device, ids: SparkplugKey | None) -> None:
    group, edge, node_device = ids if ids is not None else (None, None, None)
    device.sparkplug_group_id, device.sparkplug_edge_node_id, device.sparkplug_device_id = group, edge, node_device


def _describe_sparkplug(ids: SparkplugKey) -> str:
    return "/".join(part for part in ids if part is not None)


# --- views


def stored_profile(row: Profile) -> DeviceProfile:
    return DeviceProfile.model_validate(row.definition)


def profile_view(row: Profile, devices: int) -> ProfileOut:
    return ProfileOut(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        protocol=Protocol(row.protocol),
        version=row.version,
        definition=stored_profile(row),
        devices=devices,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def gateway_view(row: Gateway) -> GatewayOut:
    return GatewayOut.model_validate(row)


def device_view(row: Device) -> DeviceOut:
    ids = _device_sparkplug(row)
    return DeviceOut(
        id=row.id,
        tenant_id=row.tenant_id,
        key=row.key,
        display_name=row.display_name,
        site=row.site,
        profile=row.profile.name,
        protocol=Protocol(row.profile.protocol),
        connection=row.connection,
        gateway=row.gateway.key if row.gateway is not None else None,
        sparkplug=None if ids is None else SparkplugIds(group_id=ids[0], edge_node_id=ids[1], device_id=ids[2]),
        enabled=row.enabled,
        token_prefix=row.token_prefix,
        token_created_at=row.token_created_at,
        rejected_count=row.rejected_count,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def device_created(row: Device, token: str | None) -> DeviceCreated:
    return DeviceCreated(**device_view(row).model_dump(), token=token)


def device_spec(row: Device) -> DeviceSpec:
    """The device as the registry document writes it."""
    view = device_view(row)
    return DeviceSpec(
        key=view.key,
        display_name=view.display_name,
        site=view.site,
        profile=view.profile,
        connection=view.connection,
        gateway=view.gateway,
        sparkplug=view.sparkplug,
        enabled=view.enabled,
    )


def dead_letter_view(row: DeadLetter) -> DeadLetterOut:
    raw = bytes(row.raw or b"")
    try:
        text, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    return DeadLetterOut(
        id=row.id,
        tenant_id=row.tenant_id,
        device=row.device,
        source=row.source,
        topic=row.topic,
        reason=row.reason,
        received_at=row.received_at,
        raw=text,
        raw_encoding="utf-8" if encoding == "utf-8" else "base64",
        raw_size=len(raw),
    )


# --- the registry


class DeviceRegistry:
    """Profiles, gateways and devices of the actor's tenant (every tenant for platform operators)."""

    def __init__(self, session: Session, actor: Principal, *, on_change: Callable[[], None] | None = None) -> None:
        self.session = session
        self.actor = actor
        self.repo = RegistryRepository(session)
        self.on_change = on_change
        self._announced = False

    # scoping

    @property
    def _visible_tenant(self) -> str | None:
        """The tenant lists are limited to; None: every tenant (platform operators)."""
        return None if self.actor.is_platform else self.actor.tenant_id

    def tenant_for(self, tenant_id: str | None) -> str:
        """The tenant a new object goes to: the actor's own, or (platform operators) the one named."""
        if tenant_id and self.actor.is_platform and tenant_id != self.actor.tenant_id:
            return AccessService(self.session).get_tenant(tenant_id, self.actor).id
        return self.actor.tenant_id

    def _visible(self, row: Device | Gateway | Profile | None) -> bool:
        return row is not None and (self.actor.is_platform or row.tenant_id == self.actor.tenant_id)

    def _changed(self) -> None:
        """Tell the directory once this transaction commits (a reload before would see the old state)."""
        if self.on_change is None or self._announced:
            return
        self._announced = True
        callback = self.on_change
        event.listen(self.session, "after_commit", lambda _session: callback(), once=True)

    def _flush(self, what: str) -> None:
        try:
            self.session.flush()
        except IntegrityError:
            # Checked before writing; only a concurrent change of the same names gets here.
            raise Conflict(f"{what} changed concurrently; try again", code="concurrent_change") from None

    # profiles

    def list_profiles(self, *, protocol: str | None = None, text: str | None = None) -> list[ProfileOut]:
        rows = self.repo.profiles(self._visible_tenant, protocol=protocol, text=text)
        usage = self.repo.profile_usage(r.id for r in rows)
        return [profile_view(r, usage.get(r.id, 0)) for r in rows]

    def get_profile(self, ref: str) -> Profile:
        row = self.repo.by_id(Profile, ref)
        if not self._visible(row):
            row = self.repo.profile(self.actor.tenant_id, ref)
        if row is None:
            raise NotFound(f"profile '{ref[:128]}' not found", code="profile_not_found")
        return row

    def describe_profile(self, row: Profile) -> ProfileOut:
        return profile_view(row, self.repo.profile_usage([row.id]).get(row.id, 0))

    def create_profile(self, definition: DeviceProfile, *, tenant_id: str | None = None) -> Profile:
        tenant = self.tenant_for(tenant_id)
        if self.repo.profile(tenant, definition.name) is not None:
            raise Conflict(f"profile '{definition.name}' already exists", code="profile_exists")
        row = self._new_profile(tenant, definition)
        self._flush(f"profile '{definition.name}'")
        self._changed()
        return row

    def update_profile(self, ref: str, definition: DeviceProfile) -> Profile:
        row = self.get_profile(ref)
        if definition.name != row.name and self.repo.profile(row.tenant_id, definition.name) is not None:
            raise Conflict(f"profile '{definition.name}' already exists", code="profile_exists")
        if definition.protocol.value != row.protocol:
            misfits = self._misfits(self.repo.devices_of_profile(row.id), definition.protocol, set())
            if misfits:
                raise Conflict(
                    f"profile '{row.name}' is used by devices whose connection settings do not fit "
                    f"{definition.protocol}: {'; '.join(misfits[:10])}",
                    code="profile_in_use",
                )
        if self._set_profile(row, definition):
            self._flush(f"profile '{definition.name}'")
            self._changed()
        return row

    def delete_profile(self, ref: str) -> Profile:
        row = self.get_profile(ref)
        used = self.repo.profile_usage([row.id]).get(row.id, 0)
        if used:
            raise Conflict(f"profile '{row.name}' is used by {used} device(s)", code="profile_in_use")
        self.session.delete(row)
        self._flush(f"profile '{row.name}'")
        self._changed()
        return row

    def _new_profile(self, tenant_id: str, definition: DeviceProfile) -> Profile:
        now = utcnow()
        row = Profile(
            id=new_id(),
            tenant_id=tenant_id,
            name=definition.name,
            protocol=definition.protocol.value,
            definition=definition.model_dump(mode="json"),
            version=1,
            created_at=now,
            updated_at=now,
        )
        self.session.add(row)
        return row

    @staticmethod
    def _set_profile(row: Profile, definition: DeviceProfile) -> bool:
        stored = definition.model_dump(mode="json")
        if stored == row.definition and definition.name == row.name:
            return False
        row.name = definition.name
        row.protocol = definition.protocol.value
        row.definition = stored
        row.version += 1
        row.updated_at = utcnow()
        return True

    def _misfits(self, devices: Iterable[Device], protocol: Protocol, skip: set[str]) -> list[str]:
        misfits: list[str] = []
        for device in devices:
            if device.key in skip:
                continue
            _, errors = check_connection(protocol, device.connection, "connection")
            if errors:
                misfits.append(f"device '{device.key}' ({errors[0]})")
        return misfits

    # gateways

    def list_gateways(self, *, site: str | None = None, text: str | None = None) -> list[Gateway]:
        return self.repo.gateways(self._visible_tenant, site=site, text=text)

    def get_gateway(self, ref: str) -> Gateway:
        row = self.repo.by_id(Gateway, ref)
        if not self._visible(row):
            row = self.repo.gateway(self.actor.tenant_id, ref)
        if row is None:
            raise NotFound(f"gateway '{ref[:128]}' not found", code="gateway_not_found")
        return row

    def create_gateway(
        self, spec: GatewaySpec, *, tenant_id: str | None = None, with_token: bool = True
    ) -> tuple[Gateway, str | None]:
        tenant = self.tenant_for(tenant_id)
        if self.repo.gateway(tenant, spec.key) is not None:
            raise Conflict(f"gateway '{spec.key}' already exists", code="gateway_exists")
        row = self._new_gateway(tenant, spec)
        secret = self._give_token(row, GATEWAY_TOKEN_PREFIX) if with_token else None
        self._flush(f"gateway '{spec.key}'")
        self._changed()
        return row, secret

    def update_gateway(self, ref: str, changes: GatewayUpdate) -> Gateway:
        row = self.get_gateway(ref)
        changed = False
        for name in ("name", "site"):
            value = getattr(changes, name)
            if value is not None and value != getattr(row, name):
                setattr(row, name, value)
                changed = True
        if changed:
            row.updated_at = utcnow()
            self._flush(f"gateway '{row.key}'")
            self._changed()
        return row

    def delete_gateway(self, ref: str) -> Gateway:
        row = self.get_gateway(ref)
        used = self.repo.gateway_in_use(row.id)
        if used:
            raise Conflict(f"gateway '{row.key}' is used by {used} device(s)", code="gateway_in_use")
        self.session.delete(row)
        self._flush(f"gateway '{row.key}'")
        self._changed()
        return row

    def rotate_gateway_token(self, ref: str) -> tuple[Gateway, str]:
        row = self.get_gateway(ref)
        secret = self._give_token(row, GATEWAY_TOKEN_PREFIX)
        self._flush(f"gateway '{row.key}'")
        self._changed()
        return row, secret

    def revoke_gateway_token(self, ref: str) -> Gateway:
        row = self.get_gateway(ref)
        if self._take_token(row):
            self._flush(f"gateway '{row.key}'")
            self._changed()
        return row

    def _new_gateway(self, tenant_id: str, spec: GatewaySpec) -> Gateway:
        now = utcnow()
        row = Gateway(id=new_id(), tenant_id=tenant_id, key=spec.key, name=spec.name, site=spec.site)
        row.created_at = row.updated_at = now
        self.session.add(row)
        return row

    # devices

    def list_devices(
        self,
        *,
        site: str | None = None,
        profile: str | None = None,
        protocol: str | None = None,
        gateway: str | None = None,
        text: str | None = None,
        enabled: bool | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Device]:
        return self.repo.devices(
            self._visible_tenant,
            site=site,
            profile=profile,
            protocol=protocol,
            gateway=gateway,
            text=text,
            enabled=enabled,
            limit=limit,
            offset=offset,
        )

    def get_device(self, ref: str) -> Device:
        row = self.repo.by_id(Device, ref)
        if not self._visible(row):
            row = self.repo.device(self.actor.tenant_id, ref)
        if row is None:
            raise NotFound(f"device '{ref[:128]}' not found", code="device_not_found")
        return row

    def create_device(
        self, spec: DeviceSpec, *, tenant_id: str | None = None, with_token: bool = True
    ) -> tuple[Device, str | None]:
        tenant = self.tenant_for(tenant_id)
        if self.repo.device(tenant, spec.key) is not None:
            raise Conflict(f"device '{spec.key}' already exists", code="device_exists")
        profile = self._profile_named(tenant, spec.profile)
        connection = self._connection(Protocol(profile.protocol), spec.connection)
        gateway = self._gateway_keyed(tenant, spec.gateway) if spec.gateway else None
        ids = _sparkplug_key(spec.sparkplug)
        self._sparkplug_free(ids, tenant, spec.key)
        now = utcnow()
        row = Device(
            id=new_id(),
            tenant_id=tenant,
            key=spec.key,
            display_name=spec.display_name,
            site=spec.site,
            profile=profile,
            connection=connection,
            gateway=gateway,
            enabled=spec.enabled,
            rejected_count=0,
            created_at=now,
            updated_at=now,
        )
        _set_sparkplug(row, ids)
        self.session.add(row)
        secret = self._give_token(row, DEVICE_TOKEN_PREFIX) if with_token else None
        self._flush(f"device '{spec.key}'")
        self._changed()
        return row, secret

    def update_device(self, ref: str, changes: DeviceUpdate) -> Device:
        row = self.get_device(ref)
        given = changes.model_fields_set
        changed = False
        profile = row.profile
        new_profile = changes.profile is not None and changes.profile != profile.name
        if new_profile and changes.profile is not None:
            profile = self._profile_named(row.tenant_id, changes.profile)
        if changes.connection is not None or new_profile:
            # The settings must fit the protocol of the profile the device ends up with.
            wanted = changes.connection if changes.connection is not None else row.connection
            connection = self._connection(Protocol(profile.protocol), wanted)
            if new_profile:
                row.profile = profile
                changed = True
            if connection != row.connection:
                row.connection = connection
                changed = True
        if "gateway" in given:
            gateway = self._gateway_keyed(row.tenant_id, changes.gateway) if changes.gateway else None
            if gateway is not row.gateway:
                row.gateway = gateway
                changed = True
        if "sparkplug" in given:
            ids = _sparkplug_key(changes.sparkplug)
            if ids != _device_sparkplug(row):
                self._sparkplug_free(ids, row.tenant_id, row.key)
                _set_sparkplug(row, ids)
                changed = True
        for name in ("display_name", "site", "enabled"):
            value = getattr(changes, name)
            if value is not None and value != getattr(row, name):
                setattr(row, name, value)
                changed = True
        if changed:
            row.updated_at = utcnow()
            self._flush(f"device '{row.key}'")
            self._changed()
        return row

    def delete_device(self, ref: str) -> Device:
        row = self.get_device(ref)
        self.session.delete(row)
        self._flush(f"device '{row.key}'")
        self._changed()
        return row

    def rotate_device_token(self, ref: str) -> tuple[Device, str]:
        row = self.get_device(ref)
        secret = self._give_token(row, DEVICE_TOKEN_PREFIX)
        self._flush(f"device '{row.key}'")
        self._changed()
        return row, secret

    def revoke_device_token(self, ref: str) -> Device:
        row = self.get_device(ref)
        if self._take_token(row):
            self._flush(f"device '{row.key}'")
            self._changed()
        return row

    def _profile_named(self, tenant_id: str, name: str) -> Profile:
        profile = self.repo.profile(tenant_id, name)
        if profile is None:
            raise Invalid(f"profile: unknown profile '{name}'", code="unknown_profile")
        return profile

    def _gateway_keyed(self, tenant_id: str, key: str) -> Gateway:
        gateway = self.repo.gateway(tenant_id, key)
        if gateway is None:
            raise Invalid(f"gateway: unknown gateway '{key}'", code="unknown_gateway")
        return gateway

    @staticmethod
    def _connection(protocol: Protocol, data: Mapping[str, Any]) -> dict[str, Any]:
        connection, errors = check_connection(protocol, data, "connection")
        if errors:
            raise Invalid(errors[0], code="invalid_connection", errors=errors)
        return connection

    def _sparkplug_free(self, ids: SparkplugKey | None, tenant_id: str, key: str) -> None:
        if ids is None:
            return
        for other in self.repo.devices_by_sparkplug([ids]):
            if (other.tenant_id, other.key) != (tenant_id, key):
                raise Conflict(
                    f"Sparkplug ids {_describe_sparkplug(ids)} are registered to another device",
                    code="sparkplug_ids_taken",
                )

    @staticmethod
    def _give_token(row: Device | Gateway, kind_prefix: str) -> str:
        token = issue_token(kind_prefix)
        row.token_prefix, row.token_hash = token.prefix, token.digest
        row.token_created_at = row.updated_at = utcnow()
        return token.secret

    @staticmethod
    def _take_token(row: Device | Gateway) -> bool:
        if row.token_hash is None:
            return False
        row.token_prefix = row.token_hash = row.token_created_at = None
        row.updated_at = utcnow()
        return True

    # the registry document

    def export_document(self, *, tenant_id: str | None = None) -> dict[str, Any]:
        """The tenant's profiles, gateways and devices in the shape `import_document` takes (no tokens)."""
        tenant = self.tenant_for(tenant_id)
        return {
            "profiles": [_compact_profile(r) for r in self.repo.profiles(tenant)],
            "gateways": [
                GatewaySpec(key=g.key, name=g.name, site=g.site).model_dump(exclude_defaults=True)
                for g in self.repo.gateways(tenant)
            ],
            "devices": [
                device_spec(d).model_dump(mode="json", exclude_defaults=True) for d in self.repo.devices(tenant)
            ],
        }

    def import_document(self, document: Any, *, tenant_id: str | None = None) -> ImportReport:
        """Create or update every item of the document, or (any error) change nothing."""
        tenant = self.tenant_for(tenant_id)
        plan = _ImportPlan(self.repo, tenant)
        plan.check(document)
        if plan.errors:
            errors = plan.errors[:MAX_ERRORS]
            more = len(plan.errors) - len(errors)
            summary = errors[0] if len(plan.errors) == 1 else f"{len(plan.errors)} errors, the first: {errors[0]}"
            raise Invalid(summary, code="invalid_document", errors=errors, more_errors=more or None)
        report = plan.apply(self)
        self._flush("the registry")
        if any(s.created or s.updated for s in (report.profiles, report.gateways, report.devices)):
            self._changed()
        return report

    # dead letters

    def dead_letters(
        self,
        *,
        device: str | None = None,
        source: str | None = None,
        since: dt.datetime | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[DeadLetterOut]:
        rows = self.repo.dead_letters(
            self._visible_tenant, device=device, source=source, since=since, before_id=before_id, limit=limit
        )
        return [dead_letter_view(r) for r in rows]

    def purge_dead_letters(
        self, *, device: str | None = None, source: str | None = None, before: dt.datetime | None = None
    ) -> int:
        return self.repo.purge_dead_letters(self._visible_tenant, device=device, source=source, before=before)


def _compact_profile(row: Profile) -> dict[str, Any]:
    try:
        return stored_profile(row).model_dump(mode="json", exclude_defaults=True)
    except ValidationError:  # stored by an older release under other rules: export it as it is
        return dict(row.definition)


class _ImportPlan:
    """A registry document checked against the tenant's registry, then applied."""

    def __init__(self, repo: RegistryRepository, tenant_id: str) -> None:
        self.repo = repo
        self.tenant_id = tenant_id
        self.errors: list[str] = []
        self.profiles: dict[str, DeviceProfile] = {}
        self.gateways: dict[str, GatewaySpec] = {}
        self.devices: dict[str, tuple[DeviceSpec, dict[str, Any]]] = {}  # key -> spec, normalised connection
        self.existing_profiles: dict[str, Profile] = {}
        self.existing_gateways: dict[str, Gateway] = {}
        self.existing_devices: dict[str, Device] = {}

    def check(self, document: Any) -> None:
        if document is None:
            document = {}
        if not isinstance(document, dict):
            self.errors.append("the document must be a mapping with `profiles`, `gateways` and `devices` lists")
            return
        for name in document:
            if name not in SECTIONS:
                self.errors.append(f"{str(name)[:100]}: unknown section; expected profiles, gateways, devices")
        sections: dict[str, list[Any]] = {}
        for section in SECTIONS:
            value = document.get(section)
            if value is not None and not isinstance(value, list):
                self.errors.append(f"{section}: must be a list")
            sections[section] = value if isinstance(value, list) else []
        self.existing_profiles = {p.name: p for p in self.repo.profiles(self.tenant_id)}
        self.existing_gateways = {g.key: g for g in self.repo.gateways(self.tenant_id)}
        self.existing_devices = {d.key: d for d in self.repo.devices(self.tenant_id)}
        self.profiles = self._items(sections["profiles"], "profiles", DeviceProfile, "name")
        self.gateways = self._items(sections["gateways"], "gateways", GatewaySpec, "key")
        self._check_devices(self._items(sections["devices"], "devices", DeviceSpec, "key"), sections["devices"])
        self._check_protocol_changes(sections["profiles"])

    def _items(self, raw_items: list[Any], section: str, model: type[Spec], name_field: str) -> dict[str, Spec]:
        found: dict[str, Spec] = {}
        places: dict[str, int] = {}
        for index, raw in enumerate(raw_items):
            try:
                item = model.model_validate(raw)
            except ValidationError as err:
                self.errors += validation_messages(err, f"{section}[{index}]")
                continue
            name = getattr(item, name_field)
            if name in found:
                first = f"{section}[{places[name]}]"
                self.errors.append(f"{section}[{index}].{name_field}: '{name}' appears twice (first at {first})")
                continue
            found[name], places[name] = item, index
        return found

    def _protocol_of(self, profile: str) -> Protocol | None:
        if profile in self.profiles:
            return self.profiles[profile].protocol
        existing = self.existing_profiles.get(profile)
        return Protocol(existing.protocol) if existing is not None else None

    def _check_devices(self, specs: dict[str, DeviceSpec], raw_items: list[Any]) -> None:
        index_of = {str(raw.get("key")): i for i, raw in reversed(list(enumerate(raw_items))) if isinstance(raw, dict)}
        claimed: dict[SparkplugKey, str] = {}
        for key, spec in specs.items():
            where = f"devices[{index_of.get(key, '?')}]"
            protocol = self._protocol_of(spec.profile)
            connection: dict[str, Any] = {}
            if protocol is None:
                self.errors.append(f"{where}.profile: unknown profile '{spec.profile}'")
            else:
                connection, errors = check_connection(protocol, spec.connection, f"{where}.connection")
                self.errors += errors
            if spec.gateway and spec.gateway not in self.gateways and spec.gateway not in self.existing_gateways:
                self.errors.append(f"{where}.gateway: unknown gateway '{spec.gateway}'")
            ids = _sparkplug_key(spec.sparkplug)
            if ids is not None:
                if ids in claimed:
                    used_by = claimed[ids]
                    self.errors.append(f"{where}.sparkplug: ids {_describe_sparkplug(ids)} also used by '{used_by}'")
                claimed[ids] = key
            self.devices[key] = (spec, connection)
        for other in self.repo.devices_by_sparkplug(claimed):
            ids = _device_sparkplug(other)
            owner = claimed.get(ids) if ids is not None else None
            if owner is None or (other.tenant_id == self.tenant_id and other.key in self.devices):
                continue  # a device of this document: its ids are replaced by the document's
            where = f"devices[{index_of.get(owner, '?')}]"
            ids_text = _describe_sparkplug(ids) if ids is not None else ""
            self.errors.append(f"{where}.sparkplug: ids {ids_text} are registered to another device")

    def _check_protocol_changes(self, raw_items: list[Any]) -> None:
        """Devices left out of the document must still fit their profile when its protocol changes."""
        index_of = {str(raw.get("name")): i for i, raw in reversed(list(enumerate(raw_items))) if isinstance(raw, dict)}
        for name, definition in self.profiles.items():
            existing = self.existing_profiles.get(name)
            if existing is None or existing.protocol == definition.protocol.value:
                continue
            # Devices of the document are checked against the profile they name there.
            staying = [
                d for d in self.existing_devices.values() if d.profile_id == existing.id and d.key not in self.devices
            ]
            for device in staying:
                _, errors = check_connection(definition.protocol, device.connection, "connection")
                if errors:
                    self.errors.append(
                        f"profiles[{index_of.get(name, '?')}].protocol: device '{device.key}' (not in this document) "
                        f"does not fit {definition.protocol}: {errors[0]}"
                    )

    def apply(self, registry: DeviceRegistry) -> ImportReport:
        report = ImportReport()
        profiles = self._apply_profiles(registry, report.profiles)
        gateways = self._apply_gateways(registry, report.gateways)
        self._apply_devices(registry, report.devices, profiles, gateways)
        return report

    def _apply_profiles(self, registry: DeviceRegistry, report: SectionReport) -> dict[str, Profile]:
        rows = dict(self.existing_profiles)
        for name, definition in self.profiles.items():
            row = rows.get(name)
            if row is None:
                rows[name] = registry._new_profile(self.tenant_id, definition)
                report.created.append(name)
            else:
                _count(report, name, registry._set_profile(row, definition))
        return rows

    def _apply_gateways(self, registry: DeviceRegistry, report: SectionReport) -> dict[str, Gateway]:
        rows = dict(self.existing_gateways)
        for key, spec in self.gateways.items():
            row = rows.get(key)
            if row is None:
                rows[key] = registry._new_gateway(self.tenant_id, spec)
                report.created.append(key)
                continue
            changed = (row.name, row.site) != (spec.name, spec.site)
            if changed:
                row.name, row.site, row.updated_at = spec.name, spec.site, utcnow()
            _count(report, key, changed)
        return rows

    def _apply_devices(
        self,
        registry: DeviceRegistry,
        report: SectionReport,
        profiles: dict[str, Profile],
        gateways: dict[str, Gateway],
    ) -> None:
        # Ids moving between devices of the document: free them all first, or the swap breaks uniqueness.
        moving = {
            key
            for key, (spec, _) in self.devices.items()
            if key in self.existing_devices
            and _device_sparkplug(self.existing_devices[key]) not in (None, _sparkplug_key(spec.sparkplug))
        }
        if moving:
            for key in moving:
                _set_sparkplug(self.existing_devices[key], None)
            registry._flush("the registry")
        for key, (spec, connection) in self.devices.items():
            profile = profiles[spec.profile]
            gateway = gateways[spec.gateway] if spec.gateway else None
            ids = _sparkplug_key(spec.sparkplug)
            existing = self.existing_devices.get(key)
            if existing is None:
                device = Device(id=new_id(), tenant_id=self.tenant_id, key=key, rejected_count=0)
                device.created_at = device.updated_at = utcnow()
                registry.session.add(device)
                _fill_device(device, spec, connection, profile, gateway, ids)
                report.created.append(key)
                continue
            before = _device_state(existing)
            _fill_device(existing, spec, connection, profile, gateway, ids)
            changed = _device_state(existing) != before or key in moving
            if changed:
                existing.updated_at = utcnow()
            _count(report, key, changed)


def _fill_device(
    device: Device,
    spec: DeviceSpec,
    connection: dict[str, Any],
    profile: Profile,
    gateway: Gateway | None,
    ids: SparkplugKey | None,
) -> None:
    device.display_name, device.site, device.enabled = spec.display_name, spec.site, spec.enabled
    device.profile, device.gateway, device.connection = profile, gateway, connection
    _set_sparkplug(device, ids)


def _device_state(device: Device) -> tuple[Any, ...]:
    return (
        device.display_name,
        device.site,
        device.enabled,
        device.profile.id,
        device.gateway.id if device.gateway is not None else None,
        device.connection,
        _device_sparkplug(device),
    )


def _count(section: SectionReport, name: str, changed: bool) -> None:
    (section.updated if changed else section.unchanged).append(name)
