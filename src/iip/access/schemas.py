"""Wire models of tenants, users, API keys and the audit log."""

from __future__ import annotations

import datetime as dt

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from iip.kernel.auth import Role

# PostgreSQL text cannot hold NUL while SQLite can; refusing it here keeps both backends alike.
NO_NUL = r"^[^\x00]*$"


class Orm(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class TenantOut(Orm):
    id: str
    name: str
    display_name: str
    active: bool
    created_at: dt.datetime


class TenantCreate(BaseModel):
    name: str = Field(min_length=2, max_length=100, examples=["acme-chem"])
    display_name: str = Field(default="", max_length=200, pattern=NO_NUL)


class TenantUpdate(BaseModel):
    display_name: str | None = Field(default=None, max_length=200, pattern=NO_NUL)
    active: bool | None = None


class UserOut(Orm):
    id: str
    tenant_id: str
    username: str
    display_name: str
    role: Role
    active: bool
    locked_until: dt.datetime | None
    language: str | None
    created_at: dt.datetime
    last_login_at: dt.datetime | None


class UserCreate(BaseModel):
    username: str = Field(min_length=2, max_length=100)
    password: str = Field(min_length=1, max_length=1024)
    role: Role = Role.VIEWER
    display_name: str = Field(default="", max_length=200, pattern=NO_NUL)
    tenant_id: str | None = Field(
        default=None, pattern=NO_NUL, description="Platform operators only; default: your tenant."
    )


class UserUpdate(BaseModel):
    role: Role | None = None
    active: bool | None = None
    display_name: str | None = Field(default=None, max_length=200, pattern=NO_NUL)
    password: str | None = Field(default=None, min_length=1, max_length=1024)


class ApiKeyOut(Orm):
    id: str
    tenant_id: str
    name: str
    prefix: str
    role: Role
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None


class ApiKeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=NO_NUL)
    role: Role = Role.VIEWER
    # Aware only: a naive time cannot be compared with the stored UTC times.
    expires_at: AwareDatetime | None = Field(default=None, description="ISO 8601 with a time zone.")
    tenant_id: str | None = Field(
        default=None, pattern=NO_NUL, description="Platform operators only; default: your tenant."
    )


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The secret; shown once, never again.")


class MeOut(BaseModel):
    kind: str
    id: str
    name: str
    tenant_id: str
    role: Role


class AuditEntryOut(Orm):
    seq: int
    at: dt.datetime
    principal: str
    tenant_id: str | None
    action: str
    object_type: str
    object_id: str
    outcome: str
    source: str
    detail: str
    hash: str


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_before_seq: int | None = Field(description="Pass as before_seq for the next (older) page.")


class AuditVerification(BaseModel):
    ok: bool
    checked: int
    problem: str
    seq: int | None
