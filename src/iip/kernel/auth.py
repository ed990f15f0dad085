"""Tenants, users, API keys, console sessions, roles and permissions.

Every object in IIP belongs to a tenant. A `Principal` is who is acting (a user through the console,
or an API key); `Principal.can(permission)` answers from the role table below, which is data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import ForeignKey, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from iip.kernel.db import Base, utcnow
from iip.kernel.errors import Conflict, Forbidden, Invalid, NotFound, Unauthenticated


def new_id() -> str:
    return uuid.uuid4().hex


class Role(StrEnum):
    PLATFORM_OPERATOR = "platform_operator"
    ADMIN = "admin"
    ENGINEER = "engineer"
    OPERATOR = "operator"
    VIEWER = "viewer"
    AUDITOR = "auditor"


# Permissions are "<area>.<verb>". Verbs: read, operate (acknowledge, run), write (configure),
# admin (users and keys). Roles grant patterns; `platform.*` is cross-tenant.
ROLE_GRANTS: dict[Role, tuple[str, ...]] = {
    Role.PLATFORM_OPERATOR: ("*",),
    Role.ADMIN: ("*.read", "*.operate", "*.write", "*.admin", "audit.read"),
    Role.ENGINEER: ("*.read", "*.operate", "*.write"),
    Role.OPERATOR: ("*.read", "*.operate"),
    Role.VIEWER: ("*.read",),
    Role.AUDITOR: ("*.read", "audit.read"),
}
# Never granted by a wildcard: only roles naming them explicitly (or "*") get these.
EXPLICIT_ONLY = ("audit.read", "platform.read", "platform.write", "platform.admin")


def role_can(role: Role, permission: str) -> bool:
    for pattern in ROLE_GRANTS[role]:
        if pattern in ("*", permission):
            return True
        if permission not in EXPLICIT_ONLY and fnmatchcase(permission, pattern):
            return True
    return False


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is acting, in which tenant, with which role."""

    kind: str  # "user", "apikey", "cli", "system"
    id: str
    name: str
    tenant_id: str
    role: Role

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}"

    def can(self, permission: str) -> bool:
        return role_can(self.role, permission)

    def require(self, permission: str) -> None:
        if not self.can(permission):
            raise Forbidden(f"role '{self.role}' lacks permission '{permission}'", permission=permission)

    @property
    def is_platform(self) -> bool:
        return self.role is Role.PLATFORM_OPERATOR


# --- tables -----------------------------------------------------------------------------------


class Tenant(Base):
    __tablename__ = "kernel_tenant"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    active: Mapped[bool] = mapped_column(default=True)


class User(Base):
    __tablename__ = "kernel_user"
    __table_args__ = (UniqueConstraint("username"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"), index=True)
    username: Mapped[str] = mapped_column(String(100))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    language: Mapped[str | None] = mapped_column(String(10), default=None)
    active: Mapped[bool] = mapped_column(default=True)
    failed_logins: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class ApiKey(Base):
    __tablename__ = "kernel_api_key"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class ConsoleSession(Base):
    __tablename__ = "kernel_console_session"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the cookie value
    user_id: Mapped[str] = mapped_column(ForeignKey("kernel_user.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()


# --- secrets ----------------------------------------------------------------------------------

_hasher = PasswordHasher()
API_KEY_PREFIX = "iip_"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,99}$")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@cache
def _dummy_hash() -> str:
    """A fixed hash to verify against when the user does not exist, so timing does not reveal
    usernames; made on first use, as hashing costs a tenth of a second that every CLI start-up paid."""
    return _hasher.hash(secrets.token_hex(16))


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def check_name(value: str, what: str) -> str:
    value = value.strip().lower()
    if not NAME_RE.match(value):
        raise Invalid(f"{what} must be 2-100 characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit")
    return value


# --- services ---------------------------------------------------------------------------------


def tenant_to_read(actor: Principal, tenant_id: str | None) -> str | None:
    """The tenant a read of `actor` is limited to: its own; for a platform operator the one named,
    or None (every tenant)."""
    if actor.is_platform:
        return tenant_id or None
    return actor.tenant_id


class TenantScoped:
    """What a context's use-case class acting for `actor` in `session` shares: which tenant its reads
    are limited to, where new objects go, and whether it may see an object of a given tenant."""

    session: Session
    actor: Principal

    def _scope(self, tenant_id: str | None) -> str | None:
        """The tenant a read is limited to: a platform operator may name one (None: every tenant)."""
        return tenant_to_read(self.actor, tenant_id)

    def tenant_for(self, tenant_id: str | None) -> str:
        """The tenant a new object goes to: the actor's own, or (platform operators) the one named."""
        return AccessService(self.session).tenant_to_write(self.actor, tenant_id)

    def _may_see(self, tenant_id: str) -> bool:
        return self.actor.is_platform or tenant_id == self.actor.tenant_id


class AccessService:
    """Tenants, users and API keys. Callers pass the acting principal; scoping is enforced here."""

    def __init__(self, session: Session, *, min_password_length: int = 10) -> None:
        self.session = session
        self.min_password_length = min_password_length

    # tenants

    def create_tenant(self, name: str, display_name: str = "") -> Tenant:
        name = check_name(name, "tenant name")
        if self.session.scalar(select(Tenant).where(Tenant.name == name)) is not None:
            raise Conflict(f"tenant '{name}' already exists", code="tenant_exists")
        tenant = Tenant(id=new_id(), name=name, display_name=display_name or name)
        self.session.add(tenant)
        self.session.flush()
        return tenant

    def list_tenants(self, actor: Principal | None = None) -> list[Tenant]:
        query = select(Tenant).order_by(Tenant.name)
        if actor is not None and not actor.is_platform:
            query = query.where(Tenant.id == actor.tenant_id)
        return list(self.session.scalars(query))

    def get_tenant(self, tenant_id: str, actor: Principal | None = None) -> Tenant:
        tenant = self.session.get(Tenant, tenant_id)
        if tenant is None or (actor is not None and not actor.is_platform and tenant.id != actor.tenant_id):
            raise NotFound(f"tenant '{tenant_id}' not found")
        return tenant

    def tenant_to_write(self, actor: Principal, tenant_id: str | None) -> str:
        """The tenant a new object of `actor` goes to: its own, or (platform operators) the one named."""
        if tenant_id and actor.is_platform and tenant_id != actor.tenant_id:
            return self.get_tenant(tenant_id, actor).id
        if not actor.tenant_id:
            raise Invalid("name the tenant to act in", code="tenant_required")
        return actor.tenant_id

    def tenant_by_name(self, name: str) -> Tenant:
        tenant = self.session.scalar(select(Tenant).where(Tenant.name == name.strip().lower()))
        if tenant is None:
            raise NotFound(f"tenant '{name}' not found")
        return tenant

    # users

    def create_user(
        self,
        tenant_id: str,
        username: str,
        password: str,
        role: Role,
        display_name: str = "",
        actor: Principal | None = None,
    ) -> User:
        tenant = self.get_tenant(tenant_id, actor)
        if actor is not None and role is Role.PLATFORM_OPERATOR and not actor.is_platform:
            raise Forbidden("only a platform operator can create platform operators")
        username = check_name(username, "username")
        if len(password) < self.min_password_length:
            raise Invalid(f"password must be at least {self.min_password_length} characters")
        if self.session.scalar(select(User).where(User.username == username)) is not None:
            raise Conflict(f"user '{username}' already exists", code="user_exists")
        user = User(
            id=new_id(),
            tenant_id=tenant.id,
            username=username,
            display_name=display_name or username,
            password_hash=hash_password(password),
            role=role.value,
        )
        self.session.add(user)
        self.session.flush()
        return user

    def list_users(self, actor: Principal) -> list[User]:
        query = select(User).order_by(User.username)
        if not actor.is_platform:
            query = query.where(User.tenant_id == actor.tenant_id)
        return list(self.session.scalars(query))

    def get_user(self, user_id: str, actor: Principal) -> User:
        user = self.session.get(User, user_id)
        if user is None or (not actor.is_platform and user.tenant_id != actor.tenant_id):
            raise NotFound(f"user '{user_id}' not found")
        return user

    def update_user(
        self,
        user_id: str,
        actor: Principal,
        *,
        role: Role | None = None,
        active: bool | None = None,
        display_name: str | None = None,
        password: str | None = None,
    ) -> User:
        user = self.get_user(user_id, actor)
        # Otherwise a tenant admin could reset a platform operator's password and act across tenants.
        if user.role == Role.PLATFORM_OPERATOR.value and not actor.is_platform:
            raise Forbidden("only a platform operator can change a platform operator")
        if role is not None:
            if role is Role.PLATFORM_OPERATOR and not actor.is_platform:
                raise Forbidden("only a platform operator can grant the platform operator role")
            user.role = role.value
        if active is not None:
            if not active and user.id == actor.id:
                raise Invalid("you cannot deactivate yourself")
            user.active = active
        if display_name is not None:
            user.display_name = display_name
        if password is not None:
            if len(password) < self.min_password_length:
                raise Invalid(f"password must be at least {self.min_password_length} characters")
            user.password_hash = hash_password(password)
            user.failed_logins = 0
            user.locked_until = None
        self.session.flush()
        return user

    def unlock_user(self, user_id: str, actor: Principal) -> User:
        user = self.get_user(user_id, actor)
        user.failed_logins = 0
        user.locked_until = None
        self.session.flush()
        return user

    # API keys

    def create_api_key(
        self,
        tenant_id: str,
        name: str,
        role: Role,
        *,
        expires_at: dt.datetime | None = None,
        actor: Principal | None = None,
    ) -> tuple[ApiKey, str]:
        """Create a key; the secret is returned once and only its hash is stored."""
        tenant = self.get_tenant(tenant_id, actor)
        if actor is not None and role is Role.PLATFORM_OPERATOR and not actor.is_platform:
            raise Forbidden("only a platform operator can create platform operator keys")
        if expires_at is not None and expires_at <= utcnow():
            raise Invalid("expiry must be in the future")
        prefix = secrets.token_hex(6)
        secret = f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
        key = ApiKey(
            id=new_id(),
            tenant_id=tenant.id,
            name=name.strip()[:100] or "key",
            prefix=prefix,
            key_hash=sha256_hex(secret),
            role=role.value,
            expires_at=expires_at,
        )
        self.session.add(key)
        self.session.flush()
        return key, secret

    def list_api_keys(self, actor: Principal) -> list[ApiKey]:
        query = select(ApiKey).order_by(ApiKey.created_at)
        if not actor.is_platform:
            query = query.where(ApiKey.tenant_id == actor.tenant_id)
        return list(self.session.scalars(query))

    def get_api_key(self, key_id: str, actor: Principal | None) -> ApiKey:
        key = self.session.get(ApiKey, key_id)
        if key is None:
            key = self.session.scalar(select(ApiKey).where(ApiKey.prefix == key_id))
        if key is None or (actor is not None and not actor.is_platform and key.tenant_id != actor.tenant_id):
            raise NotFound(f"API key '{key_id}' not found")
        return key

    def revoke_api_key(self, key_id: str, actor: Principal | None) -> ApiKey:
        key = self.get_api_key(key_id, actor)
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            self.session.flush()
        return key

    def authenticate_api_key(self, secret: str) -> Principal:
        parts = secret.split("_")
        if len(parts) < 3 or not secret.startswith(API_KEY_PREFIX):
            raise Unauthenticated("malformed API key")
        key = self.session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1]))
        if key is None or not hmac.compare_digest(key.key_hash, sha256_hex(secret)):
            raise Unauthenticated("unknown API key")
        now = utcnow()
        if key.revoked_at is not None:
            raise Unauthenticated("API key revoked")
        if key.expires_at is not None and key.expires_at <= now:
            raise Unauthenticated("API key expired")
        tenant = self.session.get(Tenant, key.tenant_id)
        if tenant is None or not tenant.active:
            raise Unauthenticated("tenant inactive")
        if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
            key.last_used_at = now  # coarse, to keep reads from writing on every call
        return Principal("apikey", key.id, key.name, key.tenant_id, Role(key.role))

    # console login

    def login(self, username: str, password: str, *, threshold: int, lockout_minutes: int) -> User:
        """Check a password. Raises Unauthenticated (code `locked` when locked out)."""
        user = self.session.scalar(select(User).where(User.username == username.strip().lower()))
        now = utcnow()
        if user is None:
            verify_password(_dummy_hash(), password)
            raise Unauthenticated("wrong username or password", code="bad_credentials")
        if user.locked_until is not None and user.locked_until > now:
            raise Unauthenticated("account locked after repeated failed logins", code="locked")
        if not verify_password(user.password_hash, password) or not user.active:
            user.failed_logins += 1
            if user.failed_logins >= threshold:
                user.locked_until = now + dt.timedelta(minutes=lockout_minutes)
                user.failed_logins = 0
                self.session.flush()
                raise Unauthenticated("account locked after repeated failed logins", code="locked")
            self.session.flush()
            raise Unauthenticated("wrong username or password", code="bad_credentials")
        user.failed_logins = 0
        user.locked_until = None
        user.last_login_at = now
        self.session.flush()
        return user

    def open_session(self, user: User, hours: int) -> tuple[str, ConsoleSession]:
        token = secrets.token_urlsafe(32)
        record = ConsoleSession(
            id=sha256_hex(token),
            user_id=user.id,
            csrf_token=secrets.token_urlsafe(32),
            expires_at=utcnow() + dt.timedelta(hours=hours),
        )
        self.session.add(record)
        self.session.flush()
        return token, record

    def resolve_session(self, token: str) -> tuple[Principal, ConsoleSession, User]:
        record = self.session.get(ConsoleSession, sha256_hex(token))
        if record is None or record.expires_at <= utcnow():
            raise Unauthenticated("session expired")
        user = self.session.get(User, record.user_id)
        if user is None or not user.active:
            raise Unauthenticated("user inactive")
        principal = Principal("user", user.id, user.username, user.tenant_id, Role(user.role))
        return principal, record, user

    def close_session(self, token: str) -> None:
        record = self.session.get(ConsoleSession, sha256_hex(token))
        if record is not None:
            self.session.delete(record)
            self.session.flush()


def user_principal(user: User) -> Principal:
    return Principal("user", user.id, user.username, user.tenant_id, Role(user.role))
