"""Tenants, users, API keys and the audit log: who may do what, and what was done."""

from iip.access.cli import COMMANDS
from iip.access.router import router
from iip.kernel.module import HealthReport, Module
from iip.kernel.runtime import Runtime


def _health(runtime: Runtime) -> HealthReport:
    runtime.db.ping()
    return HealthReport(ok=True, detail="database reachable")


module = Module(
    name="access",
    title="Access",
    router=router,
    cli=COMMANDS,
    health=_health,
    permissions=("access.read", "access.admin", "audit.read", "platform.write"),
)
