"""The security context's `Module`: its API, console pages, message catalogues and platform services
(bulletin delivery retries, live monitoring, the decoy: `lifespans.py`)."""

from pathlib import Path

from iip.kernel.module import Module
from iip.security import (
    manifest,
    models,  # noqa: F401 - registers the context's tables
)
from iip.security.lifespans import security_lifespan
from iip.security.pages import PAGES, pages_router
from iip.security.router import router

# The console templates; `locale/` beside them holds the context's message catalogues.
TEMPLATE_DIR = str(Path(__file__).parent / "templates")

module = Module(
    name=manifest.name,
    title="Security",
    depends_on=manifest.depends_on,
    router=router,
    pages_router=pages_router,
    pages=PAGES,
    cli=manifest.cli,
    lifespan=security_lifespan,
    permissions=("security.read", "security.write"),
    template_dir=TEMPLATE_DIR,
)
