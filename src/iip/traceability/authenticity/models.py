"""ORM models of anti-counterfeit codes (tables prefixed `traceability_code`).

- `traceability_code_key`: each tenant's Ed25519 signing keys. The key id is what codes name
  (`codes.key_id_of`), unique across tenants, so a public verification finds the tenant by it.
  The private seed is sealed at rest (`kernel.sealing`, bound to the key id); retired keys stay
  published so the codes they signed keep verifying.
- `traceability_code_batch`: one issuance: GTIN, lot, expiry, intended markets, single- or
  multi-use, the resolver base the URIs start with and the key that signed them.
- `traceability_code`: one row per code, written in bulk: serial, signature, and how often it was
  scanned (counted in the row, so two scans of a single-use code at once cannot both be first).
- `traceability_code_scan`: every verification of a code of a known key: when, where the client
  said it was, its user agent, a keyed hash of its address, and the answer given.
- `traceability_code_mark`: an operator's recall or decommission of a GTIN, lot, batch or serial.
- `traceability_code_alert`: a repeated single-use scan, a scan outside or far from the market, an
  impossible journey.
- `traceability_code_policy`: a tenant's thresholds and default resolver base.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, Double, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from iip.kernel.db import Base, utcnow
from iip.kernel.sealing import sealed_length

ACTOR_LENGTH = 200
RESOLVER_LENGTH = 300
SEED_TEXT_LENGTH = 44  # base64 of a 32-byte seed
_ROW_ID = BigInteger().with_variant(Integer, "sqlite")


class CodeKey(Base):
    """One Ed25519 signing key of a tenant."""

    __tablename__ = "traceability_code_key"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # codes.key_id_of(public key)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"), index=True)
    public_key: Mapped[str] = mapped_column(String(64))  # raw, base64url
    private_key: Mapped[str] = mapped_column(String(sealed_length(SEED_TEXT_LENGTH) + 8))  # sealed seed
    active: Mapped[bool] = mapped_column(default=True)  # signs new codes; one per tenant
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class CodeBatch(Base):
    """Codes issued together for one GTIN (and lot)."""

    __tablename__ = "traceability_code_batch"
    __table_args__ = (
        Index("ix_traceability_code_batch_tenant_created", "tenant_id", "created_at"),
        Index("ix_traceability_code_batch_tenant_gtin", "tenant_id", "gtin", "lot"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"))
    gtin: Mapped[str] = mapped_column(String(14))
    lot: Mapped[str | None] = mapped_column(String(20), default=None)
    expiry: Mapped[str | None] = mapped_column(String(6), default=None)  # AI 17, YYMMDD
    markets: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)  # geo.Market.as_dict()
    single_use: Mapped[bool] = mapped_column(default=True)
    count: Mapped[int] = mapped_column(Integer)
    scanned: Mapped[int] = mapped_column(Integer, default=0)  # codes scanned at least once
    key_id: Mapped[str] = mapped_column(ForeignKey("traceability_code_key.id"))
    resolver: Mapped[str] = mapped_column(String(RESOLVER_LENGTH))
    note: Mapped[str] = mapped_column(String(200), default="")
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Code(Base):
    """One issued code."""

    __tablename__ = "traceability_code"
    __table_args__ = (
        UniqueConstraint("tenant_id", "gtin", "serial"),
        Index("ix_traceability_code_batch", "batch_id", "id"),
    )

    id: Mapped[int] = mapped_column(_ROW_ID, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32))
    batch_id: Mapped[str] = mapped_column(ForeignKey("traceability_code_batch.id", ondelete="CASCADE"))
    gtin: Mapped[str] = mapped_column(String(14))
    serial: Mapped[str] = mapped_column(String(20))
    signature: Mapped[str] = mapped_column(String(86))  # base64url
    scan_count: Mapped[int] = mapped_column(Integer, default=0)


class CodeScan(Base):
    """One verification of a code whose key is known."""

    __tablename__ = "traceability_code_scan"
    __table_args__ = (
        Index("ix_traceability_code_scan_code", "code_id", "scanned_at"),
        Index("ix_traceability_code_scan_tenant", "tenant_id", "scanned_at"),
    )

    id: Mapped[int] = mapped_column(_ROW_ID, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"))
    code_id: Mapped[int | None] = mapped_column(
        ForeignKey("traceability_code.id", ondelete="CASCADE"), default=None
    )  # None: the signature failed or the code was never issued
    gtin: Mapped[str] = mapped_column(String(14))
    serial: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))  # the answer given
    scanned_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    place: Mapped[str | None] = mapped_column(String(6), default=None)  # ISO 3166 country or subdivision
    latitude: Mapped[float | None] = mapped_column(Double, default=None)
    longitude: Mapped[float | None] = mapped_column(Double, default=None)
    located_at: Mapped[dt.datetime | None] = mapped_column(default=None)  # when the place was given
    user_agent: Mapped[str] = mapped_column(String(300), default="")
    address_hash: Mapped[str] = mapped_column(String(64), default="")  # keyed hash of the client address


class CodeMark(Base):
    """An operator's recall or decommission of the codes of a GTIN, narrowed by lot, batch or serial."""

    __tablename__ = "traceability_code_mark"
    __table_args__ = (Index("ix_traceability_code_mark_lookup", "tenant_id", "gtin"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))  # recall, decommission
    gtin: Mapped[str] = mapped_column(String(14))
    lot: Mapped[str | None] = mapped_column(String(20), default=None)
    batch_id: Mapped[str | None] = mapped_column(
        ForeignKey("traceability_code_batch.id", ondelete="CASCADE"), default=None
    )
    serial: Mapped[str | None] = mapped_column(String(20), default=None)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    withdrawn_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    withdrawn_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class CodeAlert(Base):
    """Something about a scan that suggests a copied or diverted code."""

    __tablename__ = "traceability_code_alert"
    __table_args__ = (Index("ix_traceability_code_alert_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(30))  # repeated_scan, outside_market, far_from_market, impossible_travel
    batch_id: Mapped[str] = mapped_column(ForeignKey("traceability_code_batch.id", ondelete="CASCADE"), index=True)
    code_id: Mapped[int] = mapped_column(BigInteger)
    scan_id: Mapped[int] = mapped_column(BigInteger)
    gtin: Mapped[str] = mapped_column(String(14))
    serial: Mapped[str] = mapped_column(String(20))
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class CodePolicy(Base):
    """A tenant's alert thresholds and the resolver base new batches use by default."""

    __tablename__ = "traceability_code_policy"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"), primary_key=True)
    resolver: Mapped[str] = mapped_column(String(RESOLVER_LENGTH), default="")  # "": the platform's own /v
    far_km: Mapped[float] = mapped_column(Double)
    max_speed_kmh: Mapped[float] = mapped_column(Double)
    travel_tolerance_km: Mapped[float] = mapped_column(Double)
    updated_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH), default="")
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
