"""The access context's `Module`: its API, console pages and health check."""

from pathlib import Path

from iip.access import manifest
from iip.access.pages import API_KEYS_PATH, AUDIT_PATH, USERS_PATH, pages_router
from iip.access.router import router
from iip.kernel.module import HealthReport, Module, Page
from iip.kernel.runtime import Runtime


def _health(runtime: Runtime) -> HealthReport:
    runtime.db.ping()
    return HealthReport(ok=True, detail="database reachable")


module = Module(
    name=manifest.name,
    title="Access",
    depends_on=manifest.depends_on,
    router=router,
    pages_router=pages_router,
    pages=(
        Page(USERS_PATH, "Users", "access.admin", icon="users"),
        Page(API_KEYS_PATH, "API keys", "access.admin", icon="key"),
        Page(AUDIT_PATH, "Audit log", "audit.read", icon="audit"),
    ),
    cli=manifest.cli,
    health=_health,
    permissions=("access.read", "access.admin", "audit.read", "platform.write"),
    template_dir=str(Path(__file__).parent / "templates"),
)
