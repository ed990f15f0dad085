"""The traceability context's `Module`: the EPCIS 2.0 REST binding under `/epcis`."""

from fastapi import APIRouter

from iip.kernel.module import Module
from iip.traceability import (
    manifest,
    models,  # noqa: F401 - registers the context's tables
)
from iip.traceability.authenticity import models as authenticity_models  # noqa: F401 - registers the code tables
from iip.traceability.authenticity.router import router as authenticity_router
from iip.traceability.capture_router import router as capture_router
from iip.traceability.genealogy_router import router as genealogy_router
from iip.traceability.lifespan import traceability_lifespan
from iip.traceability.master_data_router import router as master_data_router
from iip.traceability.pages import PAGES, TEMPLATE_DIR, pages_router
from iip.traceability.profiles_router import router as profiles_router
from iip.traceability.query_router import router as query_router
from iip.traceability.subscriptions_router import router as subscriptions_router

router = APIRouter()
router.include_router(authenticity_router)
router.include_router(capture_router)
router.include_router(genealogy_router)
router.include_router(query_router)
router.include_router(profiles_router)
router.include_router(master_data_router)
router.include_router(subscriptions_router)

module = Module(
    name=manifest.name,
    title="Traceability",
    depends_on=manifest.depends_on,
    router=router,
    pages_router=pages_router,
    pages=PAGES,
    template_dir=TEMPLATE_DIR,
    cli=manifest.cli,
    lifespan=traceability_lifespan,
    permissions=("traceability.read", "traceability.write", "traceability.admin"),
)
