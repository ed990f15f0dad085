"""The traceability context's `Module`: the EPCIS 2.0 REST binding under `/epcis`."""

from fastapi import APIRouter

from iip.kernel.module import Module
from iip.traceability import (
    manifest,
    models,  # noqa: F401 - registers the context's tables
)

router = APIRouter()

module = Module(
    name=manifest.name,
    title="Traceability",
    depends_on=manifest.depends_on,
    router=router,
    cli=manifest.cli,
    permissions=("traceability.read", "traceability.write", "traceability.admin"),
)
