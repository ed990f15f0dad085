"""Request and response models of the anti-counterfeit code API (never ORM objects over the wire)."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

NO_NUL = r"^[^\x00]*$"
MAX_BATCH = 100_000
MAX_MARKETS = 50
Text = Annotated[str, StringConstraints(max_length=2000, pattern=NO_NUL)]
Gtin = Annotated[str, StringConstraints(min_length=8, max_length=14, pattern=r"^\d+$")]
Lot = Annotated[str, StringConstraints(min_length=1, max_length=20, pattern=NO_NUL)]
Place = Annotated[str, StringConstraints(min_length=2, max_length=6, pattern=r"^[A-Za-z]{2}(-[A-Za-z0-9]{1,3})?$")]
Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]
TenantId = Annotated[str, StringConstraints(max_length=32, pattern=NO_NUL)]


class CodeStatus(StrEnum):
    """What a verification answers."""

    GENUINE = "genuine"
    UNKNOWN = "unknown"  # the signature fails, the key is unknown, or the code was never issued
    RECALLED = "recalled"
    DECOMMISSIONED = "decommissioned"
    ALREADY_USED = "already_used"  # a single-use code scanned before


class MarkKind(StrEnum):
    RECALL = "recall"
    DECOMMISSION = "decommission"


class AlertKind(StrEnum):
    REPEATED_SCAN = "repeated_scan"
    OUTSIDE_MARKET = "outside_market"
    FAR_FROM_MARKET = "far_from_market"
    IMPOSSIBLE_TRAVEL = "impossible_travel"


class MarketIn(BaseModel):
    code: Place = Field(description="ISO 3166-1 alpha-2 country (CN) or ISO 3166-2 subdivision (CN-GD)")
    latitude: Latitude | None = None
    longitude: Longitude | None = None


class BatchCreate(BaseModel):
    gtin: Gtin = Field(description="GTIN-8, -12, -13 or -14, check digit included")
    count: int = Field(ge=1, le=MAX_BATCH, description="how many codes to issue")
    lot: Lot | None = Field(default=None, description="batch/lot (AI 10), up to 20 characters of GS1's set 82")
    expiry: dt.date | None = Field(default=None, description="expiry date (AI 17)")
    markets: list[MarketIn] = Field(default_factory=list, max_length=MAX_MARKETS, description="intended markets")
    single_use: bool = Field(default=True, description="a second scan answers `already_used` and raises an alert")
    resolver: Annotated[str, StringConstraints(max_length=300, pattern=NO_NUL)] | None = Field(
        default=None,
        description="base URL the codes start with (default: the tenant's policy, else this platform's /v)",
    )
    note: Annotated[str, StringConstraints(max_length=200, pattern=NO_NUL)] = ""
    tenant_id: TenantId | None = Field(default=None, description="platform operators: the tenant to issue for")


class MarketOut(BaseModel):
    code: str
    latitude: float | None = None
    longitude: float | None = None


class BatchOut(BaseModel):
    id: str
    tenant_id: str
    gtin: str
    lot: str | None
    expiry: dt.date | None
    markets: list[MarketOut]
    single_use: bool
    count: int
    key_id: str
    resolver: str
    note: str
    created_by: str
    created_at: dt.datetime
    recalled: bool = Field(description="an active recall mark covers the whole batch")
    decommissioned: bool = Field(description="an active decommission mark covers the whole batch")
    scanned: int = Field(description="codes of the batch scanned at least once")
    example_uri: str | None = Field(description="the URI of the batch's first code")


class BatchPage(BaseModel):
    items: list[BatchOut]
    total: int
    offset: int
    limit: int


class MarkCreate(BaseModel):
    kind: MarkKind
    gtin: Gtin
    lot: Lot | None = None
    batch_id: Annotated[str, StringConstraints(max_length=32, pattern=NO_NUL)] | None = None
    serial: Annotated[str, StringConstraints(min_length=1, max_length=20, pattern=NO_NUL)] | None = None
    reason: Text = ""
    tenant_id: TenantId | None = Field(default=None, description="platform operators: the tenant to act in")


class MarkOut(BaseModel):
    id: str
    tenant_id: str
    kind: MarkKind
    gtin: str
    lot: str | None
    batch_id: str | None
    serial: str | None
    reason: str
    created_by: str
    created_at: dt.datetime
    withdrawn_by: str
    withdrawn_at: dt.datetime | None
    active: bool


class AlertOut(BaseModel):
    id: str
    tenant_id: str
    kind: AlertKind
    batch_id: str
    gtin: str
    serial: str
    message: str
    details: dict[str, Any]
    created_at: dt.datetime


class AlertPage(BaseModel):
    items: list[AlertOut]
    total: int
    offset: int
    limit: int


class ScanPlace(BaseModel):
    place: str | None = Field(description="ISO 3166 country or subdivision the client gave")
    latitude: float | None
    longitude: float | None


class VerifyOut(BaseModel):
    status: CodeStatus
    genuine: bool = Field(description="true only for `genuine`")
    reason: str = Field(description="why, in English")
    gtin: str | None = None
    serial: str | None = None
    lot: str | None = None
    expiry: dt.date | None = None
    scan_count: int = Field(default=0, description="scans of this code, this one included")
    first_scan_at: dt.datetime | None = None
    first_scan_place: ScanPlace | None = None


class PolicyOut(BaseModel):
    resolver: str = Field(description="base URL new batches start their codes with; empty: this platform's /v")
    far_km: float = Field(description="a scan further than this from every market point raises an alert")
    max_speed_kmh: float = Field(description="consecutive scans needing a faster journey raise an alert")
    travel_tolerance_km: float = Field(description="distances up to this are never judged (position noise)")


class PolicyIn(BaseModel):
    resolver: Annotated[str, StringConstraints(max_length=300, pattern=NO_NUL)] = ""
    far_km: float = Field(default=500.0, gt=0, le=20_100)
    max_speed_kmh: float = Field(default=900.0, gt=0, le=100_000)
    travel_tolerance_km: float = Field(default=25.0, ge=0, le=20_100)
    tenant_id: TenantId | None = Field(default=None, description="platform operators: the tenant to act in")


class PublicKey(BaseModel):
    """An Ed25519 public key as a JSON Web Key (RFC 8037), and whether it still signs new codes."""

    kty: Literal["OKP"] = "OKP"
    crv: Literal["Ed25519"] = "Ed25519"
    x: str = Field(description="the raw public key, base64url")
    kid: str = Field(description="the key id codes carry in their `k` parameter")
    use: Literal["sig"] = "sig"
    alg: Literal["EdDSA"] = "EdDSA"
    active: bool = Field(description="false for a retired key: its codes still verify")


class PublicKeySet(BaseModel):
    keys: list[PublicKey]


class RotatedKey(BaseModel):
    retired_key_id: str | None
    key_id: str
