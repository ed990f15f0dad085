"""The device registry's use cases on SQLite and PostgreSQL: profiles, devices, gateways, tokens, the document."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from iip.devices.models import Device, Gateway, Profile
from iip.devices.profiles import DeviceProfile
from iip.devices.schemas import DeviceSpec, DeviceUpdate, GatewaySpec, SparkplugIds
from iip.devices.service import (
    DEVICE_TOKEN_PREFIX,
    DeviceRegistry,
    parse_document,
    token_digest,
)
from iip.kernel.auth import AccessService, Principal, Role
from iip.kernel.db import Database
from iip.kernel.documents import render_document
from iip.kernel.errors import Conflict, Invalid, NotFound
from iip.migrations.runner import upgrade
from tests.conftest import BACKENDS, database_url

PUMP: dict[str, Any] = {
    "name": "pump",
    "protocol": "modbus",
    "poll_interval_s": 2,
    "metrics": [
        {"name": "flow", "unit": "m3/h", "modbus": {"address": 0, "data_type": "float32"}},
        {"name": "temp", "unit": "degC", "modbus": {"address": 2, "data_type": "int16", "scale": 0.1}},
    ],
}
METER: dict[str, Any] = {
    "name": "meter",
    "protocol": "http",
    "metrics": [
        {"name": "energy", "unit": "kWh", "mqtt": {"key": "e"}},
        {"name": "power", "unit": "kW"},
        {"name": "state", "data_type": "string"},
    ],
}
DOCUMENT: dict[str, Any] = {
    "profiles": [PUMP, METER],
    "gateways": [{"key": "gw-1", "name": "Line 1 gateway", "site": "plant-a"}],
    "devices": [
        {
            "key": "pump-01",
            "display_name": "Feed pump",
            "site": "plant-a",
            "profile": "pump",
            "connection": {"host": "10.0.4.21", "unit_id": 3},
            "gateway": "gw-1",
        },
        {"key": "meter-01", "site": "plant-b", "profile": "meter", "sparkplug": {"group_id": "g", "edge_node_id": "e"}},
    ],
}


# One migrated database per backend for the module; each test works in tenants of its own.


@pytest.fixture(scope="module", params=BACKENDS)
def shared_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    folder: Path = tmp_path_factory.mktemp("devices")
    with database_url(str(request.param), folder) as url:
        db = Database(url)
        upgrade(db)
        yield db
        db.dispose()


@dataclass(frozen=True)
class TenantRef:
    id: str
    name: str


def new_tenant(db: Database) -> TenantRef:
    with db.session() as session:
        tenant = AccessService(session).create_tenant(f"t-{uuid.uuid4().hex[:12]}")
        return TenantRef(tenant.id, tenant.name)


@pytest.fixture
def tenant_a(shared_db: Database) -> TenantRef:
    return new_tenant(shared_db)


@pytest.fixture
def tenant_b(shared_db: Database) -> TenantRef:
    return new_tenant(shared_db)


@pytest.fixture
def migrated_db(shared_db: Database) -> Database:
    return shared_db


def sample_document() -> dict[str, Any]:
    """DOCUMENT with Sparkplug ids of its own (they are unique platform-wide)."""
    document = copy.deepcopy(DOCUMENT)
    document["devices"][1]["sparkplug"]["group_id"] = f"g-{uuid.uuid4().hex[:8]}"
    return document


def actor_of(tenant: TenantRef, role: Role = Role.ADMIN) -> Principal:
    return Principal("apikey", f"key-{tenant.name}", tenant.name, tenant.id, role)


def platform_actor(tenant: TenantRef) -> Principal:
    return Principal("apikey", "platform", "platform", tenant.id, Role.PLATFORM_OPERATOR)


def import_into(db: Database, tenant: TenantRef, document: Any) -> dict[str, Any]:
    with db.session() as session:
        report = DeviceRegistry(session, actor_of(tenant)).import_document(document)
        return report.model_dump()


def export_of(db: Database, tenant: TenantRef) -> dict[str, Any]:
    with db.session() as session:
        return DeviceRegistry(session, actor_of(tenant)).export_document()


def counts(db: Database, tenant: TenantRef) -> tuple[int, int, int]:
    with db.session() as session:
        return tuple(  # type: ignore[return-value]
            session.scalar(select(func.count()).select_from(model).where(model.tenant_id == tenant.id)) or 0
            for model in (Profile, Gateway, Device)
        )


# --- profiles


def test_profile_versions_grow_only_on_change(migrated_db: Database, tenant_a: TenantRef) -> None:
    with migrated_db.session() as session:
        registry = DeviceRegistry(session, actor_of(tenant_a))
        row = registry.create_profile(DeviceProfile.model_validate(PUMP))
        assert (row.version, row.protocol) == (1, "modbus")
        same = registry.update_profile("pump", DeviceProfile.model_validate(PUMP))
        assert same.version == 1
        changed = copy.deepcopy(PUMP)
        changed["metrics"][0]["unit"] = "l/s"
        assert registry.update_profile(row.id, DeviceProfile.model_validate(changed)).version == 2
        with pytest.raises(Conflict) as exists:
            registry.create_profile(DeviceProfile.model_validate(PUMP))
        assert exists.value.instance_code == "profile_exists"
    with migrated_db.session() as session:
        stored = session.scalar(select(Profile).where(Profile.tenant_id == tenant_a.id, Profile.name == "pump"))
        assert stored is not None
        assert DeviceProfile.model_validate(stored.definition).metrics[0].unit == "l/s"


def test_a_profile_in_use_cannot_be_deleted_or_change_to_a_protocol_its_devices_do_not_fit(
    migrated_db: Database, tenant_a: TenantRef
) -> None:
    document = sample_document()
    import_into(migrated_db, tenant_a, document)
    opcua = {**PUMP, "protocol": "opcua", "metrics": [{"name": "flow", "opcua": {"node_id": "ns=2;s=Flow"}}]}
    with migrated_db.session() as session:
        registry = DeviceRegistry(session, actor_of(tenant_a))
        with pytest.raises(Conflict) as in_use:
            registry.delete_profile("pump")
        assert in_use.value.instance_code == "profile_in_use"
        with pytest.raises(Conflict) as misfit:
            registry.update_profile("pump", DeviceProfile.model_validate(opcua))
        assert "pump-01" in misfit.value.message
        assert "endpoint" in misfit.value.message
    with migrated_db.session() as session:
        registry = DeviceRegistry(session, actor_of(tenant_a))
        registry.delete_device("pump-01")
        registry.update_profile("pump", DeviceProfile.model_validate(opcua))  # no device left to misfit
        registry.delete_profile("pump")
    assert counts(migrated_db, tenant_a) == (1, 1, 1)


# --- devices


def test_device_validation_names_the_problem(migrated_db: Database, tenant_a: TenantRef) -> None:
    import_into(migrated_db, tenant_a, {"profiles": [PUMP]})
    with migrated_db.session() as session:
        registry = DeviceRegistry(session, actor_of(tenant_a))
        with pytest.raises(Invalid) as unknown:
            registry.create_device(DeviceSpec(key="d1", profile="pumpx"))
        assert unknown.value.message == "profile: unknown profile 'pumpx'"
        with pytest.raises(Invalid) as connection:
            registry.create_device(DeviceSpec(key="d1", profile="pump", connection={"host": "10.0.0.1", "port": 0}))
        assert connection.value.message.startswith("connection.port:")
        with pytest.raises(Invalid) as extra:
            registry.create_device(DeviceSpec(key="d1", profile="pump", connection={"host": "h", "baud": 9600}))
        assert "connection.baud" in extra.value.message
        with pytest.raises(Invalid) as gateway:
            registry.create_device(DeviceSpec(key="d1", profile="pump", connection={"host": "h"}, gateway="gw-9"))
        assert gateway.value.message == "gateway: unknown gateway 'gw-9'"
        device, token = registry.create_device(DeviceSpec(key="d1", profile="pump", connection={"host": "h"}))
        assert device.connection == {"host": "h", "port": 502, "unit_id": 1, "timeout_s": 3.0}
        assert token is not None
        assert token.startswith(DEVICE_TOKEN_PREFIX)
        assert device.token_hash == token_digest(token)
        assert token not in str(device.token_hash)
        with pytest.raises(Conflict):
            registry.create_device(DeviceSpec(key="d1", profile="pump", connection={"host": "h"}))
    assert counts(migrated_db, tenant_a) == (1, 0, 1)


def test_keys_follow_the_name_rule() -> None:
    for bad in ("1abc", "a/b", "a b", "a+b", "export", "x" * 129, ""):
        with pytest.raises(ValueError, match="key"):
            DeviceSpec(key=bad, profile="pump")
    assert DeviceSpec(key="Pump_01.a-b", profile="pump").key == "Pump_01.a-b"


def test_update_device_checks_the_connection_against_the_new_profile(
    migrated_db: Database, tenant_a: TenantRef
) -> None:
    document = sample_document()
    import_into(migrated_db, tenant_a, document)
    with migrated_db.session() as session:
        registry = DeviceRegistry(session, actor_of(tenant_a))
        with pytest.raises(Invalid) as misfit:
            registry.update_device("pump-01", DeviceUpdate(profile="meter"))  # an HTTP profile takes no settings
        assert "connection.host" in misfit.value.message
    with migrated_db.session() as session:
        registry = DeviceRegistry(session, actor_of(tenant_a))
        moved = registry.update_device("pump-01", DeviceUpdate(profile="meter", connection={}, gateway=None))
        assert (moved.profile.name, moved.connection, moved.gateway) == ("meter", {}, None)
        renamed = registry.update_device("pump-01", DeviceUpdate(display_name="Renamed"))
        assert renamed.gateway is None  # not given: left alone
        assert renamed.profile.name == "meter"


def test_sparkplug_ids_name_one_device_across_tenants(
    migrated_db: Database, tenant_a: TenantRef, tenant_b: TenantRef
) -> None:
    document = sample_document()
    group = document["devices"][1]["sparkplug"]["group_id"]
    import_into(migrated_db, tenant_a, document)
    import_into(migrated_db, tenant_b, {"profiles": [METER]})
    with migrated_db.session() as session:
        registry = DeviceRegistry(session, actor_of(tenant_b))
        with pytest.raises(Conflict) as taken:  # the edge node's ids, taken in tenant A
            registry.create_device(
                DeviceSpec(key="m", profile="meter", sparkplug=SparkplugIds(group_id=group, edge_node_id="e"))
            )
        assert taken.value.instance_code == "sparkplug_ids_taken"
        assert "meter-01" not in taken.value.message  # another tenant's device is not named
        below = SparkplugIds(group_id=group, edge_node_id="e", device_id="m")
        device, _ = registry.create_device(DeviceSpec(key="m", profile="meter", sparkplug=below), with_token=False)
        assert device.token_hash is None


def test_tokens_rotate_and_revoke(migrated_db: Database, tenant_a: TenantRef) -> None:
    document = sample_document()
    import_into(migrated_db, tenant_a, document)
    with migrated_db.session() as session:
        registry = DeviceRegistry(session, actor_of(tenant_a))
        device, first = registry.rotate_device_token("pump-01")
        first_hash = device.token_hash
        device, second = registry.rotate_device_token(device.id)
        assert first != second
        assert device.token_hash == token_digest(second) != first_hash
        assert registry.revoke_device_token("pump-01").token_hash is None
        assert registry.revoke_device_token("pump-01").token_prefix is None  # again: nothing to revoke
        gateway, secret = registry.rotate_gateway_token("gw-1")
        assert secret.startswith("iipg_")
        assert gateway.token_hash == token_digest(secret)
        assert registry.revoke_gateway_token("gw-1").token_hash is None


def test_another_tenants_objects_are_not_found(migrated_db: Database, tenant_a: TenantRef, tenant_b: TenantRef) -> None:
    document = sample_document()
    import_into(migrated_db, tenant_b, document)
    with migrated_db.session() as session:
        b_device = DeviceRegistry(session, actor_of(tenant_b)).get_device("pump-01").id
        a = DeviceRegistry(session, actor_of(tenant_a))
        for lookup in (a.get_device, a.delete_device, a.rotate_device_token):
            for ref in (b_device, "pump-01"):
                with pytest.raises(NotFound):
                    lookup(ref)
        with pytest.raises(NotFound):
            a.get_profile("pump")
        with pytest.raises(NotFound):
            a.get_gateway("gw-1")
        assert a.list_devices() == []
        assert a.export_document() == {"profiles": [], "gateways": [], "devices": []}
        platform = DeviceRegistry(session, platform_actor(tenant_a))
        assert platform.get_device(b_device).key == "pump-01"
        assert b_device in {d.id for d in platform.list_devices()}


def test_filters(migrated_db: Database, tenant_a: TenantRef) -> None:
    document = sample_document()
    import_into(migrated_db, tenant_a, document)
    with migrated_db.session() as session:
        registry = DeviceRegistry(session, actor_of(tenant_a))

        def keys(**filters: Any) -> list[str]:
            return [d.key for d in registry.list_devices(**filters)]

        assert keys() == ["meter-01", "pump-01"]
        assert keys(site="plant-a") == ["pump-01"]
        assert keys(profile="meter") == ["meter-01"]
        assert keys(protocol="modbus") == ["pump-01"]
        assert keys(gateway="gw-1") == ["pump-01"]
        assert keys(text="FEED") == ["pump-01"]
        assert keys(text="%") == []  # wildcards are literal
        assert keys(enabled=False) == []
        assert keys(limit=1, offset=1) == ["pump-01"]


# --- the registry document


def test_import_creates_then_reimport_changes_nothing(migrated_db: Database, tenant_a: TenantRef) -> None:
    document = sample_document()
    first = import_into(migrated_db, tenant_a, document)
    assert first["profiles"]["created"] == ["pump", "meter"]
    assert first["gateways"]["created"] == ["gw-1"]
    assert first["devices"]["created"] == ["pump-01", "meter-01"]
    with migrated_db.session() as session:
        mine = select(Device).where(Device.tenant_id == tenant_a.id)
        before = {d.key: (d.updated_at, d.connection) for d in session.scalars(mine)}
    again = import_into(migrated_db, tenant_a, document)
    assert again["profiles"] == {"created": [], "updated": [], "unchanged": ["pump", "meter"]}
    assert again["gateways"] == {"created": [], "updated": [], "unchanged": ["gw-1"]}
    assert again["devices"] == {"created": [], "updated": [], "unchanged": ["pump-01", "meter-01"]}
    with migrated_db.session() as session:
        after = {d.key: (d.updated_at, d.connection) for d in session.scalars(mine)}
        versions = {p.name: p.version for p in session.scalars(select(Profile).where(Profile.tenant_id == tenant_a.id))}
    assert after == before
    assert versions == {"pump": 1, "meter": 1}
    assert counts(migrated_db, tenant_a) == (2, 1, 2)


def test_import_updates_in_place(migrated_db: Database, tenant_a: TenantRef) -> None:
    document = sample_document()
    import_into(migrated_db, tenant_a, document)
    changed = copy.deepcopy(document)
    changed["profiles"][0]["metrics"][1]["unit"] = "K"
    changed["devices"][0]["connection"]["port"] = 1502
    changed["devices"][1]["enabled"] = False
    del changed["gateways"]  # left out: stays as it is
    report = import_into(migrated_db, tenant_a, changed)
    assert report["profiles"]["updated"] == ["pump"]
    assert report["devices"]["updated"] == ["pump-01", "meter-01"]
    with migrated_db.session() as session:
        registry = DeviceRegistry(session, actor_of(tenant_a))
        pump = registry.get_device("pump-01")
        assert pump.connection["port"] == 1502
        assert pump.gateway is not None
        assert not registry.get_device("meter-01").enabled
        assert registry.get_profile("pump").version == 2
    assert counts(migrated_db, tenant_a) == (2, 1, 2)


def test_a_bad_document_changes_nothing_and_names_every_error(migrated_db: Database, tenant_a: TenantRef) -> None:
    document = sample_document()
    import_into(migrated_db, tenant_a, document)
    before = export_of(migrated_db, tenant_a)
    bad = copy.deepcopy(document)
    bad["profiles"][0]["metrics"][0]["unit"] = "changed"  # would be an update
    bad["profiles"].append({"name": "valve", "protocol": "modbus", "metrics": [{"name": "open"}]})
    bad["devices"].append({"key": "new-01", "profile": "pump", "connection": {"host": "10.0.0.9"}})  # would be new
    bad["devices"].append({"key": "pump-02", "profile": "pumpx"})
    bad["devices"].append({"key": "pump-01", "profile": "pump", "connection": {"host": "h"}})
    bad["devices"].append({"key": "pump-03", "profile": "pump", "connection": {"host": "h"}, "gateway": "gw-9"})
    bad["devices"].append({"key": "meter-02", "profile": "meter", "sparkplug": document["devices"][1]["sparkplug"]})
    bad["gateways"].append({"key": "gw-2", "colour": "red"})
    with pytest.raises(Invalid) as refused:
        import_into(migrated_db, tenant_a, bad)
    errors = refused.value.details["errors"]
    assert "devices[3].profile: unknown profile 'pumpx'" in errors
    assert "devices[4].key: 'pump-01' appears twice (first at devices[0])" in errors
    assert "devices[5].gateway: unknown gateway 'gw-9'" in errors
    group = document["devices"][1]["sparkplug"]["group_id"]
    assert f"devices[6].sparkplug: ids {group}/e also used by 'meter-01'" in errors
    assert any(e.startswith(("profiles[2].metrics[0].modbus", "profiles[2]:")) for e in errors), errors
    assert any(e.startswith("gateways[1].colour:") for e in errors), errors
    assert refused.value.instance_code == "invalid_document"
    assert export_of(migrated_db, tenant_a) == before
    assert counts(migrated_db, tenant_a) == (2, 1, 2)


def test_document_shape_errors(migrated_db: Database, tenant_a: TenantRef) -> None:
    for document, expected in (
        ([1, 2], "the document must be a mapping"),
        ({"devices": {"key": "x"}}, "devices: must be a list"),
        ({"machines": []}, "machines: unknown section"),
        ({"devices": ["pump-01"]}, "devices[0]: Input should be a valid dictionary"),
    ):
        with pytest.raises(Invalid) as refused:
            import_into(migrated_db, tenant_a, document)
        assert refused.value.message.startswith(expected), refused.value.message
    assert import_into(migrated_db, tenant_a, None)["devices"]["created"] == []  # an empty file


def test_export_import_round_trip_into_another_tenant(
    migrated_db: Database, tenant_a: TenantRef, tenant_b: TenantRef
) -> None:
    document = sample_document()
    spb = copy.deepcopy(document)
    spb["devices"][1].pop("sparkplug")  # Sparkplug ids are unique platform-wide: B cannot take A's
    import_into(migrated_db, tenant_a, spb)
    exported = export_of(migrated_db, tenant_a)
    assert all("token" not in str(d) for d in exported["devices"])
    text = render_document(exported, "yaml")
    report = import_into(migrated_db, tenant_b, parse_document(text.encode(), "yaml"))
    assert report["devices"]["created"] == ["meter-01", "pump-01"]  # exported by key
    assert export_of(migrated_db, tenant_b) == exported
    again = import_into(migrated_db, tenant_a, parse_document(render_document(exported, "json"), None))
    assert again["devices"]["updated"] == again["profiles"]["updated"] == []


def test_sparkplug_ids_can_move_between_devices_of_one_document(migrated_db: Database, tenant_a: TenantRef) -> None:
    profiles = {"profiles": [METER]}
    group = f"g-{uuid.uuid4().hex[:8]}"
    first = {"key": "a", "profile": "meter", "sparkplug": {"group_id": group, "edge_node_id": "n", "device_id": "1"}}
    second = {"key": "b", "profile": "meter", "sparkplug": {"group_id": group, "edge_node_id": "n", "device_id": "2"}}
    import_into(migrated_db, tenant_a, {**profiles, "devices": [first, second]})
    swapped = [{**first, "sparkplug": second["sparkplug"]}, {**second, "sparkplug": first["sparkplug"]}]
    report = import_into(migrated_db, tenant_a, {"devices": swapped})
    assert report["devices"]["updated"] == ["a", "b"]
    with migrated_db.session() as session:
        ids = {
            d.key: d.sparkplug_device_id for d in session.scalars(select(Device).where(Device.tenant_id == tenant_a.id))
        }
    assert ids == {"a": "2", "b": "1"}


def test_parse_document_gives_readable_errors() -> None:
    with pytest.raises(Invalid, match=r"not valid YAML: .* at line 2 column 12"):
        parse_document(b"profiles:\n  - name: a: b\n", "yaml")
    with pytest.raises(Invalid, match=r"not valid JSON: .* line 1 column"):
        parse_document(b'{"profiles": [}', None)
    with pytest.raises(Invalid, match="not UTF-8"):
        parse_document(b"\xff\xfe profiles", None)
    with pytest.raises(Invalid, match="unknown document format"):
        parse_document(b"{}", "toml")
    assert parse_document("profiles: []\n", None) == {"profiles": []}
    assert parse_document(b"\xef\xbb\xbf{}", None) == {}  # a byte order mark is fine


def test_yaml_aliases_cannot_blow_up(monkeypatch: pytest.MonkeyPatch) -> None:
    from iip.devices import service

    monkeypatch.setattr(service, "MAX_DOCUMENT_NODES", 10_000)
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        lines.append(f"{chr(97 + level)}: &{chr(97 + level)} [{', '.join([f'*{chr(96 + level)}'] * 10)}]")
    with pytest.raises(Invalid, match="more than 10000 values"):
        parse_document("\n".join(lines), "yaml")
    assert len(parse_document("\n".join(lines[:2]), "yaml")["b"]) == 10  # the same, smaller, is fine


def test_gateway_in_use_cannot_be_deleted(migrated_db: Database, tenant_a: TenantRef) -> None:
    document = sample_document()
    import_into(migrated_db, tenant_a, document)
    with migrated_db.session() as session:
        registry = DeviceRegistry(session, actor_of(tenant_a))
        with pytest.raises(Conflict) as in_use:
            registry.delete_gateway("gw-1")
        assert in_use.value.instance_code == "gateway_in_use"
        gateway, token = registry.create_gateway(GatewaySpec(key="gw-2"), with_token=False)
        assert token is None
        assert gateway.token_hash is None
        registry.delete_gateway("gw-2")
