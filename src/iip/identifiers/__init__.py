"""Identifier registration and resolution (标识解析): Handle/IDIS-compatible, GS1 Digital Link."""

from fastapi import APIRouter

from iip.identifiers import models as models
from iip.identifiers.catalog_router import router as catalog_router
from iip.identifiers.cli import id_app
from iip.identifiers.filing_router import router as filing_router
from iip.identifiers.gs1.router import router as digital_link_router
from iip.identifiers.router import router as handle_router
from iip.identifiers.signing import node_key_lifespan
from iip.identifiers.signing_router import router as signing_router
from iip.kernel.module import Module

router = APIRouter()
router.include_router(handle_router)
router.include_router(filing_router)
router.include_router(signing_router)
router.include_router(catalog_router)
router.include_router(digital_link_router)  # Digital Link paths live at the root of the host

module = Module(
    name="identifiers",
    title="Identifiers",
    router=router,
    cli={"id": id_app},
    lifespan=node_key_lifespan,
    permissions=("identifiers.read", "identifiers.write", "identifiers.admin"),
)
