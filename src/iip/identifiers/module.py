"""The identifiers context's `Module`: its API, console pages, the node key and the fast resolution layer."""

from pathlib import Path

from fastapi import APIRouter

from iip.console.web import N_
from iip.identifiers import (
    manifest,
    models,  # noqa: F401 - registers the context's tables
)
from iip.identifiers.catalog_router import router as catalog_router
from iip.identifiers.fast_resolve import resolution_layer
from iip.identifiers.filing_router import router as filing_router
from iip.identifiers.gs1.router import router as digital_link_router
from iip.identifiers.hierarchy_router import router as hierarchy_router
from iip.identifiers.pages import FILINGS_PATH, REGISTER_PATH, SEARCH_PATH, pages_router
from iip.identifiers.router import router as handle_router
from iip.identifiers.signing import node_key_lifespan
from iip.identifiers.signing_router import router as signing_router
from iip.kernel.module import Module, Page

router = APIRouter()
router.include_router(handle_router)
router.include_router(filing_router)
router.include_router(signing_router)
router.include_router(hierarchy_router)
router.include_router(catalog_router)
router.include_router(digital_link_router)  # Digital Link paths live at the root of the host

module = Module(
    name=manifest.name,
    title="Identifiers",
    depends_on=manifest.depends_on,
    router=router,
    cli=manifest.cli,
    pages_router=pages_router,
    pages=(
        Page(SEARCH_PATH, N_("Identifier search"), "identifiers.read", icon="search"),
        Page(REGISTER_PATH, N_("Register identifier"), "identifiers.write", icon="plus"),
        Page(FILINGS_PATH, N_("Prefix filings"), "identifiers.read", icon="stamp"),
    ),
    lifespan=node_key_lifespan,
    asgi_layers=(resolution_layer,),
    permissions=("identifiers.read", "identifiers.write", "identifiers.admin"),
    # Beside the attribute templates' JSON Schemas; console pages live in its `identifiers/` folder.
    template_dir=str(Path(__file__).parent / "templates"),
)
