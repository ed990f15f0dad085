"""`iip telemetry`."""

import typer

telemetry_app = typer.Typer(help="Time-series telemetry: query and export.", no_args_is_help=True)
