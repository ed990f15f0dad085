"""What other contexts may use of `devices`: where each device sits (profile and site)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from iip.kernel.runtime import Runtime


@dataclass(frozen=True, slots=True)
class DevicePlacement:
    """A device's key, the name of its profile and its site."""

    key: str
    profile: str
    site: str
    enabled: bool


def device_placements(runtime: Runtime, tenant_id: str) -> list[DevicePlacement]:
    """Every device of a tenant, with its profile name and site (synchronous: a thread from asyncio)."""
    from iip.devices.models import Device, Profile

    query = (
        select(Device.key, Profile.name, Device.site, Device.enabled)
        .join(Profile, Device.profile_id == Profile.id)
        .where(Device.tenant_id == tenant_id)
        .order_by(Device.key)
    )
    with runtime.db.session() as session:
        return [DevicePlacement(key, profile, site, enabled) for key, profile, site, enabled in session.execute(query)]


def placements_fingerprint(runtime: Runtime) -> tuple[object, ...]:
    """Changes whenever a device is added, removed, moved to another profile or site, or switched."""
    from iip.devices.models import Device

    with runtime.db.session() as session:
        return tuple(session.execute(select(func.count(Device.id), func.max(Device.updated_at))).one())
