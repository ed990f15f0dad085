"""Tenants, users, API keys and the audit log: who may do what, and what was done."""

from pathlib import Path

from iip.access.cli import COMMANDS
from iip.access.pages import API_KEYS_PATH, AUDIT_PATH, USERS_PATH, pages_router
from iip.access.router import router
from iip.kernel.module import HealthReport, Module, Page
from iip.kernel.runtime import Runtime


def _health(runtime: Runtime) -> HealthReport:
    runtime.db.ping()
    return HealthReport(ok=True, detail="database reachable")


module = Module(
    name="access",
    title="Access",
    router=router,
    pages_router=pages_router,
    pages=(
        Page(USERS_PATH, "Users", "access.admin", icon="users"),
        Page(API_KEYS_PATH, "API keys", "access.admin", icon="key"),
        Page(AUDIT_PATH, "Audit log", "audit.read", icon="audit"),
    ),
    cli=COMMANDS,
    health=_health,
    permissions=("access.read", "access.admin", "audit.read", "platform.write"),
    template_dir=str(Path(__file__).parent / "templates"),
)
