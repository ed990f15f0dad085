"""`iip devices`."""

import typer

devices_app = typer.Typer(help="Device registry: profiles, devices, gateways.", no_args_is_help=True)
