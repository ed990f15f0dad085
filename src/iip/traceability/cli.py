"""`iip trace ...`: capture, events, genealogy, recall."""

from __future__ import annotations

import typer

trace_app = typer.Typer(help="EPCIS capture, events, genealogy, recall.", no_args_is_help=True)
# Each area registers its commands below, one line each, from its own `*_cli.py`.
