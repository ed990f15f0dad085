"""`iip id parse` and `iip id label`: what a scanned code names, and QR labels. No database needed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from iip.cli.context import err_console, fail, out_console
from iip.identifiers import codes
from iip.identifiers.gs1 import codec
from iip.kernel.errors import Invalid


def parse_command(
    payload: Annotated[str, typer.Argument(help="Scanned text; write the GS separator as \\x1d or \\u001d.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Say what a scanned payload names: a GS1 element string or Digital Link, or a Handle/IDIS identifier."""
    # Shells cannot type a GS character; accept the escapes people paste from scanner logs.
    scanned = payload.replace("\\x1d", codec.GROUP_SEPARATOR).replace("\\u001d", codec.GROUP_SEPARATOR)
    try:
        parsed = codes.parse_payload(scanned)
    except Invalid as err:
        raise fail(err.message) from None
    fields = parsed.as_dict()
    if as_json:
        out_console.print_json(json.dumps(fields, ensure_ascii=False))
        return
    table = Table("field", "value", show_header=False)
    for name, value in fields.items():
        if value in (None, "", {}):
            continue
        text = ", ".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else str(value)
        shown = text.replace(codec.GROUP_SEPARATOR, "<GS>")
        table.add_row(name.replace("_", " "), escape(shown))
    out_console.print(table)


def label_command(
    target: Annotated[str, typer.Argument(help="Identifier, Digital Link or GS1 element string.")],
    label_format: Annotated[codes.LabelFormat, typer.Option("--format", help="Image format.")] = codes.LabelFormat.PNG,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write; '-' or nothing writes to stdout.")
    ] = None,
    scale: Annotated[int, typer.Option(min=1, max=20, help="Pixels per module.")] = 4,
    caption: Annotated[bool, typer.Option(help="Print the encoded text under the symbol (SVG only).")] = False,
    root: Annotated[str, typer.Option(help="Resolver root for GS1 Digital Links.")] = codec.GS1_ROOT,
) -> None:
    """Write a QR label for an identifier; GS1 targets are encoded as Digital Links under --root."""
    text = target.replace("\\x1d", codec.GROUP_SEPARATOR).replace("\\u001d", codec.GROUP_SEPARATOR)
    try:
        image = codes.label(text, label_format=label_format, scale=scale, caption=caption, root=root)
    except Invalid as err:
        raise fail(err.message) from None
    if output is None or str(output) == "-":
        sys.stdout.buffer.write(image.data)
        sys.stdout.buffer.flush()
        return
    output.write_bytes(image.data)
    err_console.print(f"wrote {output} ({len(image.data)} bytes) encoding {escape(image.content)}", highlight=False)
