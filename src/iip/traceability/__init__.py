"""Traceability (一品一码): a GS1 EPCIS 2.0 repository with capture, query, genealogy and recall."""

from iip.kernel.module import CommandGroup, Manifest

manifest = Manifest(
    name="traceability",
    depends_on=("identifiers",),
    cli={"trace": CommandGroup("iip.traceability.cli:trace_app", "EPCIS capture, events, genealogy, recall.")},
)
