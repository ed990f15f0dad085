"""The `iip` command line: a root Typer app that mounts each module's command groups."""
