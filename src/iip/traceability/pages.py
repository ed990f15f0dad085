"""The traceability context's console pages: each area's pages router and navigation entries, one template folder.

Templates live in `templates/traceability/<area>/`, their translations in `locale/` beside
`templates/`, scripts and styles in `static/` (served at `/static/traceability/`).
"""

from pathlib import Path

from fastapi import APIRouter

from iip.traceability.authenticity.pages import PAGES as AUTHENTICITY_PAGES
from iip.traceability.authenticity.pages import pages_router as authenticity_pages
from iip.traceability.workbench.pages import PAGES as WORKBENCH_PAGES
from iip.traceability.workbench.pages import pages_router as workbench_pages

TEMPLATE_DIR = str(Path(__file__).parent / "templates")

pages_router = APIRouter(include_in_schema=False)
pages_router.include_router(workbench_pages)
pages_router.include_router(authenticity_pages)

PAGES = (*WORKBENCH_PAGES, *AUTHENTICITY_PAGES)
