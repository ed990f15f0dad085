"""Identifier registration and resolution (标识解析): Handle/IDIS-compatible, GS1 Digital Link."""

from iip.kernel.module import CommandGroup, Manifest

manifest = Manifest(
    name="identifiers",
    cli={"id": CommandGroup("iip.identifiers.cli:id_app", "Identifiers: Handle/IDIS prefixes and handles.")},
)
