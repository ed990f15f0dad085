"""The demo tenant and login that `make run` creates once."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import select

from iip.kernel import audit
from iip.kernel.auth import AccessService, Principal, Role, User
from iip.kernel.errors import NotFound
from iip.kernel.runtime import Runtime

DEMO_TENANT = "demo"
DEMO_USER = "admin"
LOGIN_FILE = "demo-login.txt"


@dataclass(frozen=True)
class DemoLogin:
    tenant: str
    username: str
    password: str


def ensure_demo(runtime: Runtime) -> DemoLogin:
    """Create the demo tenant and admin if absent (password kept in the data dir), load module demo data."""
    path = runtime.settings.data_dir / LOGIN_FILE
    with runtime.db.session() as session:
        service = AccessService(session)
        user = session.scalar(select(User).where(User.username == DEMO_USER))
        if user is not None and path.exists():
            return DemoLogin(DEMO_TENANT, DEMO_USER, path.read_text().strip())
        try:
            tenant = service.tenant_by_name(DEMO_TENANT)
        except NotFound:
            tenant = service.create_tenant(DEMO_TENANT, "Demo Manufacturing Co. 演示制造公司")
        password = secrets.token_urlsafe(12)
        if user is None:
            user = service.create_user(tenant.id, DEMO_USER, password, Role.ADMIN, "Demo administrator")
        else:  # the password file was lost: set a new one
            service.update_user(user.id, _system(tenant.id), password=password)
        record = audit.AuditRecord(action="demo.create", object_type="user", object_id=user.id)
        audit.append(session, "system:demo", record, tenant_id=tenant.id)
        tenant_id = tenant.id
    path.touch(mode=0o600)
    path.write_text(password + "\n")
    for module in runtime.modules:
        if module.demo is not None:
            module.demo(runtime, tenant_id)
    return DemoLogin(DEMO_TENANT, DEMO_USER, password)


def _system(tenant_id: str) -> Principal:
    return Principal("system", "demo", "demo", tenant_id, Role.PLATFORM_OPERATOR)
