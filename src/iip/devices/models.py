"""ORM models of the device registry (tables prefixed `devices_`).

Profiles are stored as the JSON of a validated `DeviceProfile`, with a version that grows on each
change. Device and gateway tokens are kept as SHA-256 hashes, like API keys. Dead letters keep what
ingest refused, with the reason, for people to look at; they are not replayed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from iip.kernel.db import Base, utcnow

KEY_LENGTH = 128  # profile names, device and gateway keys (the NAME rule of `profiles`)


class Profile(Base):
    """A device profile of one tenant: what a kind of device measures, and how it is read."""

    __tablename__ = "devices_profile"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(KEY_LENGTH))
    protocol: Mapped[str] = mapped_column(String(20))  # copied from the definition, for filtering
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)  # DeviceProfile.model_dump(mode="json")
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Gateway(Base):
    """An edge gateway devices are reached through; it may send their telemetry with its own token."""

    __tablename__ = "devices_gateway"
    __table_args__ = (UniqueConstraint("tenant_id", "key"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(KEY_LENGTH))
    name: Mapped[str] = mapped_column(String(200), default="")
    site: Mapped[str] = mapped_column(String(200), default="", index=True)
    token_prefix: Mapped[str | None] = mapped_column(String(16), default=None)
    token_hash: Mapped[str | None] = mapped_column(String(64), default=None, unique=True)
    token_created_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Device(Base):
    """A registered device: its profile, where it is, how it is reached, its credentials."""

    __tablename__ = "devices_device"
    __table_args__ = (
        UniqueConstraint("tenant_id", "key"),
        # Sparkplug topics carry no tenant: the ids name one device across the whole platform.
        UniqueConstraint(
            "sparkplug_group_id",
            "sparkplug_edge_node_id",
            "sparkplug_device_id",
            name="uq_devices_device_sparkplug_ids",
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(KEY_LENGTH))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    site: Mapped[str] = mapped_column(String(200), default="", index=True)
    # RESTRICT: a profile in use cannot be deleted (the service answers Conflict before this).
    profile_id: Mapped[str] = mapped_column(ForeignKey("devices_profile.id", ondelete="RESTRICT"), index=True)
    connection: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    gateway_id: Mapped[str | None] = mapped_column(
        ForeignKey("devices_gateway.id", ondelete="RESTRICT"), default=None, index=True
    )
    sparkplug_group_id: Mapped[str | None] = mapped_column(String(KEY_LENGTH), default=None)
    sparkplug_edge_node_id: Mapped[str | None] = mapped_column(String(KEY_LENGTH), default=None)
    sparkplug_device_id: Mapped[str | None] = mapped_column(String(KEY_LENGTH), default=None)
    enabled: Mapped[bool] = mapped_column(default=True)
    token_prefix: Mapped[str | None] = mapped_column(String(16), default=None)
    token_hash: Mapped[str | None] = mapped_column(String(64), default=None, unique=True)
    token_created_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    rejected_count: Mapped[int] = mapped_column(BigInteger, default=0)  # messages sent to the dead letters
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    # Loaded with the device in one query: every answer names the profile and the gateway by key.
    profile: Mapped[Profile] = relationship(lazy="joined", innerjoin=True)
    gateway: Mapped[Gateway | None] = relationship(lazy="joined")


class DeadLetter(Base):
    """A message ingest refused, with why. Tenant and device are unknown when the message did not say."""

    __tablename__ = "devices_dead_letter"
    # Lists are a tenant's newest first (by id); purges go by time.
    __table_args__ = (Index("ix_devices_dead_letter_tenant_id_id", "tenant_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    # No foreign key: a letter names what the message claimed, and outlives the device.
    tenant_id: Mapped[str | None] = mapped_column(String(32), default=None)
    device: Mapped[str | None] = mapped_column(String(KEY_LENGTH), default=None, index=True)
    source: Mapped[str] = mapped_column(String(20))
    topic: Mapped[str] = mapped_column(String(500), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    raw: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


# --- commands


class Command(Base):
    """A value sent to a device: written before it is sent, finished once (see `iip.devices.commands`)."""

    __tablename__ = "devices_command"
    # A device's history is listed newest first.
    __table_args__ = (Index("ix_devices_command_tenant_id_device_requested_at", "tenant_id", "device", "requested_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"))
    # The device's key, not a foreign key: the history outlives the device.
    device: Mapped[str] = mapped_column(String(KEY_LENGTH))
    metric: Mapped[str] = mapped_column(String(KEY_LENGTH))
    value: Mapped[Any] = mapped_column(JSON)
    protocol: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(20))  # api, twin
    requested_by: Mapped[str] = mapped_column(String(200))  # principal label, as the audit log names it
    requested_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    timeout_ms: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), index=True)  # pending, sent, acknowledged, failed, timed_out
    detail: Mapped[str] = mapped_column(Text, default="")
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)
