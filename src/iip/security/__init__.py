"""Security: passive ICS traffic monitoring, asset inventory, learned allowlist detection, honeypot,
advisory matching and early warning."""

from iip.kernel.module import CommandGroup, Manifest

manifest = Manifest(
    name="security",
    depends_on=("alarms",),
    cli={
        "security": CommandGroup(
            "iip.security.cli:security_app",
            "ICS security: captures, assets, baselines, honeypot, advisories, bulletins.",
        )
    },
)
