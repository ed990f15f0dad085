"""Analytics: process monitoring, fault diagnosis, remaining useful life, SPC; a model registry and live scoring."""

from iip.kernel.module import CommandGroup, Manifest

manifest = Manifest(
    name="analytics",
    depends_on=("telemetry", "alarms"),
    cli={
        "analytics": CommandGroup(
            "iip.analytics.cli:analytics_app", "Analytics models: train, evaluate, score, list, deploy, retire."
        )
    },
)
