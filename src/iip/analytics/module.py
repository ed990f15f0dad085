"""The analytics context's `Module`: the model registry API and the lifespan of live scoring."""

from pathlib import Path

from iip.analytics import (
    manifest,
    models,  # noqa: F401 - registers the context's tables
)
from iip.analytics.pages import PAGES, pages_router
from iip.analytics.router import router
from iip.analytics.scoring import scoring_lifespan
from iip.kernel.module import Module

# The console templates; `locale/` beside them holds the context's message catalogues.
TEMPLATE_DIR = str(Path(__file__).parent / "templates")

module = Module(
    name=manifest.name,
    title="Analytics",
    depends_on=manifest.depends_on,
    router=router,
    pages_router=pages_router,
    pages=PAGES,
    cli=manifest.cli,
    lifespan=scoring_lifespan,
    permissions=("analytics.read", "analytics.write"),
    template_dir=TEMPLATE_DIR,
)
