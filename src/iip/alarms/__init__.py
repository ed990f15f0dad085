"""Monitoring and early warning: streaming alarm rules, the ISA-18.2 alarm lifecycle, notifications."""

from iip.kernel.module import CommandGroup, Manifest

manifest = Manifest(
    name="alarms",
    depends_on=("telemetry", "devices"),
    cli={
        "alarms": CommandGroup("iip.alarms.cli:alarms_app", "Alarms: list, acknowledge, shelve."),
        "rules": CommandGroup("iip.alarms.cli:rules_app", "Alarm rules: import, list, try one on stored data."),
    },
)
