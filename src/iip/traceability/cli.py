"""`iip trace ...`: capture, events, genealogy, recall, master data."""

from __future__ import annotations

import typer

trace_app = typer.Typer(help="EPCIS capture, events, genealogy, recall.", no_args_is_help=True)
# Each area registers its commands below, one line each, from its own `*_cli.py`.

from iip.traceability.authenticity.cli import codes_app  # noqa: E402
from iip.traceability.capture_cli import capture_command  # noqa: E402
from iip.traceability.genealogy_cli import genealogy_command, recall_command  # noqa: E402

trace_app.command("genealogy")(genealogy_command)
trace_app.command("recall")(recall_command)
trace_app.add_typer(codes_app, name="codes")
trace_app.command("capture")(capture_command)

from iip.traceability.query_cli import events_command  # noqa: E402

trace_app.command("events")(events_command)

from iip.traceability.master_data_cli import master_data_command  # noqa: E402

trace_app.command("masterdata")(master_data_command)
