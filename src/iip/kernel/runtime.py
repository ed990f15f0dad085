"""What a running process owns: settings, database, bus and the registered modules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from iip.kernel.bus import Bus, create_bus
from iip.kernel.db import Database
from iip.kernel.module import Module, discover_modules
from iip.kernel.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    db: Database
    bus: Bus
    modules: tuple[Module, ...] = field(default_factory=tuple)
    # Process-wide objects a context's lifespan starts and its routers use (a twin cache, an
    # ingest client), keyed "<context>.<name>"; nothing here survives a restart.
    services: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings, *, modules: tuple[Module, ...] | None = None) -> Runtime:
        settings.ensure_data_dir()
        return cls(
            settings=settings,
            db=Database(settings.effective_database_url),
            bus=create_bus(settings.bus),
            modules=discover_modules() if modules is None else modules,
        )
