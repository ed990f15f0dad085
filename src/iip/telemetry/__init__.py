"""Time-series telemetry and the device twin: the live digital mirror of the plant."""

from iip.kernel.module import CommandGroup, Manifest

manifest = Manifest(
    name="telemetry",
    cli={"telemetry": CommandGroup("iip.telemetry.cli:telemetry_app", "Time-series telemetry: query and export.")},
)
