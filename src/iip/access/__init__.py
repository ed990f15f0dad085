"""Tenants, users, API keys and the audit log: who may do what, and what was done."""

from iip.kernel.module import CommandGroup, Manifest

manifest = Manifest(
    name="access",
    cli={
        "tenant": CommandGroup("iip.access.cli:tenant_app", "Tenants (enterprises)."),
        "user": CommandGroup("iip.access.cli:user_app", "Console users."),
        "apikey": CommandGroup("iip.access.cli:apikey_app", "API keys."),
        "audit": CommandGroup("iip.access.cli:audit_app", "The hash-chained audit log."),
    },
)
