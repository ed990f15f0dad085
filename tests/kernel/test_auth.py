"""Passwords, login lockout, API keys and the role permission table."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from sqlalchemy import select, text

from iip.kernel.auth import (
    AccessService,
    ApiKey,
    Principal,
    Role,
    User,
    hash_password,
    role_can,
    sha256_hex,
    tenant_to_read,
    verify_password,
)
from iip.kernel.db import Database, utcnow
from iip.kernel.errors import Conflict, Forbidden, Invalid, NotFound, Unauthenticated
from iip.kernel.settings import AuthSettings

PASSWORD = "correct horse battery"
POLICY = AuthSettings()


# --- passwords --------------------------------------------------------------------------------


def test_password_hash_is_argon2id_and_salted() -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first.startswith("$argon2id$")
    assert first != second
    assert PASSWORD not in first
    assert verify_password(first, PASSWORD)
    assert verify_password(second, PASSWORD)
    assert not verify_password(first, PASSWORD + "!")
    assert not verify_password("not-a-hash", PASSWORD)


def test_created_user_keeps_only_the_password_hash(migrated_db: Database) -> None:
    with migrated_db.session() as session:
        service = AccessService(session)
        tenant = service.create_tenant("acme")
        user = service.create_user(tenant.id, "Bob", PASSWORD, Role.ENGINEER)
        assert user.username == "bob"
    with migrated_db.session() as session:
        stored = session.scalar(select(User.password_hash).where(User.username == "bob"))
    assert stored is not None
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    assert verify_password(stored, PASSWORD)


def test_short_password_and_duplicate_user_are_refused(migrated_db: Database) -> None:
    with migrated_db.session() as session:
        service = AccessService(session, min_password_length=12)
        tenant = service.create_tenant("acme")
        with pytest.raises(Invalid, match="at least 12"):
            service.create_user(tenant.id, "bob", "short-pw", Role.VIEWER)
        service.create_user(tenant.id, "bob", PASSWORD, Role.VIEWER)
        with pytest.raises(Conflict):
            service.create_user(tenant.id, "BOB", PASSWORD, Role.VIEWER)


# --- login and lockout ------------------------------------------------------------------------


@pytest.fixture
def bob(migrated_db: Database) -> str:
    with migrated_db.session() as session:
        service = AccessService(session)
        tenant = service.create_tenant("acme")
        return service.create_user(tenant.id, "bob", PASSWORD, Role.ENGINEER).id


def attempt(db: Database, password: str, username: str = "bob") -> str:
    """One login attempt in its own transaction, committed either way (as a login endpoint must)."""
    with db.session() as session:
        try:
            AccessService(session).login(
                username, password, threshold=POLICY.lockout_threshold, lockout_minutes=POLICY.lockout_minutes
            )
        except Unauthenticated as err:
            return err.instance_code
    return "ok"


def load_user(db: Database, user_id: str) -> User:
    with db.session() as session:
        user = session.get(User, user_id)
        assert user is not None
        return user


def test_login_with_the_right_password(migrated_db: Database, bob: str) -> None:
    assert attempt(migrated_db, PASSWORD) == "ok"
    assert attempt(migrated_db, PASSWORD, username=" BOB ") == "ok"
    assert load_user(migrated_db, bob).last_login_at is not None


def test_unknown_user_and_wrong_password_look_the_same(migrated_db: Database, bob: str) -> None:
    assert attempt(migrated_db, PASSWORD, username="nobody") == "bad_credentials"
    assert attempt(migrated_db, "wrong password") == "bad_credentials"


def test_lockout_after_five_failures(migrated_db: Database, bob: str) -> None:
    assert POLICY.lockout_threshold == 5
    codes = [attempt(migrated_db, f"wrong {i}") for i in range(5)]
    assert codes == ["bad_credentials"] * 4 + ["locked"]

    # Locked: even the right password is refused.
    assert attempt(migrated_db, PASSWORD) == "locked"
    user = load_user(migrated_db, bob)
    assert user.locked_until is not None
    assert user.locked_until > utcnow() + dt.timedelta(minutes=POLICY.lockout_minutes - 1)

    # The lock expires.
    with migrated_db.session() as session:
        session.execute(
            text("UPDATE kernel_user SET locked_until = :past WHERE id = :id"),
            {"past": utcnow() - dt.timedelta(seconds=1), "id": bob},
        )
    assert attempt(migrated_db, PASSWORD) == "ok"
    user = load_user(migrated_db, bob)
    assert user.locked_until is None
    assert user.failed_logins == 0


def test_success_resets_the_failure_count(migrated_db: Database, bob: str) -> None:
    for i in range(4):
        assert attempt(migrated_db, f"wrong {i}") == "bad_credentials"
    assert load_user(migrated_db, bob).failed_logins == 4
    assert attempt(migrated_db, PASSWORD) == "ok"
    assert load_user(migrated_db, bob).failed_logins == 0
    # Four more failures after a success do not lock.
    assert [attempt(migrated_db, "wrong") for _ in range(4)] == ["bad_credentials"] * 4
    assert attempt(migrated_db, PASSWORD) == "ok"


def test_inactive_user_cannot_log_in(migrated_db: Database, bob: str) -> None:
    with migrated_db.session() as session:
        user = session.get(User, bob)
        assert user is not None
        user.active = False
    assert attempt(migrated_db, PASSWORD) == "bad_credentials"


# --- API keys ---------------------------------------------------------------------------------


@pytest.fixture
def tenant_id(migrated_db: Database) -> str:
    with migrated_db.session() as session:
        return AccessService(session).create_tenant("acme").id


def create_key(db: Database, tenant_id: str, role: Role = Role.VIEWER, **kwargs: object) -> tuple[str, str]:
    with db.session() as session:
        key, secret = AccessService(session).create_api_key(tenant_id, "ingest", role, **kwargs)  # type: ignore[arg-type]
        return key.id, secret


def authenticate(db: Database, secret: str) -> Principal:
    with db.session() as session:
        return AccessService(session).authenticate_api_key(secret)


def test_api_key_secret_is_stored_only_as_a_hash(migrated_db: Database, tenant_id: str) -> None:
    key_id, secret = create_key(migrated_db, tenant_id)
    assert secret.startswith("iip_")
    with migrated_db.engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM kernel_api_key WHERE id = :id"), {"id": key_id}).one()
    values = [str(v) for v in row]
    assert row.key_hash == sha256_hex(secret)
    assert not any(secret in v for v in values)
    assert secret.split("_")[1] == row.prefix  # the public part, used to find the key


def test_api_key_authenticates_with_its_role(migrated_db: Database, tenant_id: str) -> None:
    key_id, secret = create_key(migrated_db, tenant_id, Role.OPERATOR)
    principal = authenticate(migrated_db, secret)
    assert (principal.kind, principal.id, principal.tenant_id) == ("apikey", key_id, tenant_id)
    assert principal.role is Role.OPERATOR
    with migrated_db.session() as session:
        key = session.get(ApiKey, key_id)
        assert key is not None
        assert key.last_used_at is not None


@pytest.mark.parametrize("mangle", [lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"), lambda s: s + "x"])
def test_wrong_secret_with_a_real_prefix_is_refused(migrated_db: Database, tenant_id: str, mangle: object) -> None:
    _key_id, secret = create_key(migrated_db, tenant_id)
    with pytest.raises(Unauthenticated, match="unknown"):
        authenticate(migrated_db, mangle(secret))  # type: ignore[operator]


@pytest.mark.parametrize("secret", ["", "iip_", "not-a-key", "iip_abc", "Bearer iip_x_y"])
def test_malformed_keys_are_refused(migrated_db: Database, secret: str) -> None:
    with pytest.raises(Unauthenticated):
        authenticate(migrated_db, secret)


def test_revoked_key_is_refused(migrated_db: Database, tenant_id: str) -> None:
    key_id, secret = create_key(migrated_db, tenant_id)
    authenticate(migrated_db, secret)
    with migrated_db.session() as session:
        revoked = AccessService(session).revoke_api_key(key_id, None)
        assert revoked.revoked_at is not None
    with pytest.raises(Unauthenticated, match="revoked"):
        authenticate(migrated_db, secret)


def test_revoke_by_prefix(migrated_db: Database, tenant_id: str) -> None:
    _key_id, secret = create_key(migrated_db, tenant_id)
    with migrated_db.session() as session:
        AccessService(session).revoke_api_key(secret.split("_")[1], None)
    with pytest.raises(Unauthenticated, match="revoked"):
        authenticate(migrated_db, secret)


def test_expired_key_is_refused(migrated_db: Database, tenant_id: str) -> None:
    key_id, secret = create_key(migrated_db, tenant_id, expires_at=utcnow() + dt.timedelta(days=1))
    authenticate(migrated_db, secret)
    with migrated_db.session() as session:
        session.execute(
            text("UPDATE kernel_api_key SET expires_at = :past WHERE id = :id"),
            {"past": utcnow() - dt.timedelta(seconds=1), "id": key_id},
        )
    with pytest.raises(Unauthenticated, match="expired"):
        authenticate(migrated_db, secret)


def test_key_cannot_be_created_already_expired(migrated_db: Database, tenant_id: str) -> None:
    with pytest.raises(Invalid):
        create_key(migrated_db, tenant_id, expires_at=utcnow() - dt.timedelta(minutes=1))


def test_key_of_an_inactive_tenant_is_refused(migrated_db: Database, tenant_id: str) -> None:
    _key_id, secret = create_key(migrated_db, tenant_id)
    with migrated_db.session() as session:
        session.execute(text("UPDATE kernel_tenant SET active = :no WHERE id = :id"), {"no": False, "id": tenant_id})
    with pytest.raises(Unauthenticated, match="inactive"):
        authenticate(migrated_db, secret)


def test_only_a_platform_operator_creates_platform_operator_keys(migrated_db: Database, tenant_id: str) -> None:
    admin = Principal("user", "u1", "alice", tenant_id, Role.ADMIN)
    with migrated_db.session() as session, pytest.raises(Forbidden):
        AccessService(session).create_api_key(tenant_id, "escalate", Role.PLATFORM_OPERATOR, actor=admin)


# --- roles and permissions --------------------------------------------------------------------

ALL_ROLES = tuple(Role)


@pytest.mark.parametrize(
    ("role", "granted", "refused"),
    [
        (Role.VIEWER, {"x.read"}, {"x.operate", "x.write", "x.admin", "audit.read", "platform.write"}),
        (Role.OPERATOR, {"x.read", "x.operate"}, {"x.write", "x.admin", "audit.read", "platform.write"}),
        (
            Role.ENGINEER,
            {"x.read", "x.operate", "x.write"},
            {"x.admin", "access.admin", "audit.read", "platform.write"},
        ),
        (Role.ADMIN, {"x.read", "x.write", "access.admin", "audit.read"}, {"platform.write", "platform.read"}),
        (Role.AUDITOR, {"x.read", "audit.read"}, {"x.write", "x.operate", "access.admin", "platform.write"}),
        (Role.PLATFORM_OPERATOR, {"x.read", "x.write", "access.admin", "audit.read", "platform.write"}, set()),
    ],
)
def test_role_permission_table(role: Role, granted: set[str], refused: set[str]) -> None:
    assert {p for p in granted if role_can(role, p)} == granted
    assert {p for p in refused if role_can(role, p)} == set()


def test_only_platform_operators_have_platform_write() -> None:
    assert [r for r in ALL_ROLES if role_can(r, "platform.write")] == [Role.PLATFORM_OPERATOR]


def test_principal_require_raises_forbidden_naming_the_permission() -> None:
    viewer = Principal("apikey", "k", "dash", "t", Role.VIEWER)
    viewer.require("devices.read")
    with pytest.raises(Forbidden) as caught:
        viewer.require("devices.write")
    assert caught.value.details == {"permission": "devices.write"}
    assert viewer.label == "apikey:dash"
    assert dataclasses.replace(viewer, role=Role.PLATFORM_OPERATOR).is_platform
    assert not viewer.is_platform


# --- tenant scope -----------------------------------------------------------------------------


def test_a_tenant_member_reads_and_writes_only_in_its_own_tenant(migrated_db: Database, tenant_id: str) -> None:
    member = Principal("user", "u1", "alice", tenant_id, Role.ADMIN)
    with migrated_db.session() as session:
        other = AccessService(session).create_tenant("other").id
        assert tenant_to_read(member, other) == tenant_id
        assert tenant_to_read(member, None) == tenant_id
        assert AccessService(session).tenant_to_write(member, other) == tenant_id


def test_a_platform_operator_names_the_tenant(migrated_db: Database, tenant_id: str) -> None:
    operator = Principal("user", "op", "operator", "", Role.PLATFORM_OPERATOR)
    with migrated_db.session() as session:
        access = AccessService(session)
        assert tenant_to_read(operator, None) is None  # every tenant
        assert tenant_to_read(operator, tenant_id) == tenant_id
        assert access.tenant_to_write(operator, tenant_id) == tenant_id
        with pytest.raises(Invalid) as refused:
            access.tenant_to_write(operator, None)
        assert refused.value.instance_code == "tenant_required"
        with pytest.raises(NotFound):
            access.tenant_to_write(operator, "no-such-tenant")
