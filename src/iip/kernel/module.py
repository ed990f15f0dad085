"""The contract every context fulfils, and the registry that finds them.

A context is a sub-package of `iip` whose `__init__` exports `module: Module`. The app factory, the
CLI, the console and the migrations iterate `discover_modules()`; nothing imports contexts by name.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer
    from fastapi import APIRouter
    from starlette.types import ASGIApp

    from iip.kernel.runtime import Runtime

# Packages of `iip` that are infrastructure, not contexts.
INFRASTRUCTURE = frozenset({"kernel", "api", "cli", "console", "migrations"})


@dataclass(frozen=True, slots=True)
class Page:
    """A console page a module contributes to the navigation."""

    path: str
    title: str  # message id, translated by the console
    permission: str
    icon: str = ""


@dataclass(frozen=True, slots=True)
class HealthReport:
    ok: bool
    detail: str = ""


Lifespan = Callable[["Runtime"], AbstractAsyncContextManager[None]]
HealthCheck = Callable[["Runtime"], HealthReport]
DemoLoader = Callable[["Runtime", str], None]  # (runtime, demo tenant id)
# An ASGI layer put in front of the platform's middleware, for a hot path that cannot afford routing
# and dependencies: given the app to pass the rest to and the runtime, it returns the wrapping app.
AsgiLayer = Callable[["ASGIApp", "Runtime"], "ASGIApp"]


@dataclass(frozen=True)
class Module:
    """What a context declares about itself."""

    name: str
    title: str  # message id, e.g. "Access"
    depends_on: Sequence[str] = ()
    router: APIRouter | None = None
    pages_router: APIRouter | None = None
    pages: Sequence[Page] = ()
    cli: Mapping[str, typer.Typer] = field(default_factory=dict)  # top-level command groups
    lifespan: Lifespan | None = None
    health: HealthCheck | None = None
    demo: DemoLoader | None = None
    permissions: Sequence[str] = ()
    template_dir: str | None = None
    asgi_layers: Sequence[AsgiLayer] = ()
    extra: dict[str, Any] = field(default_factory=dict)


class ModuleError(Exception):
    pass


@cache
def discover_modules() -> tuple[Module, ...]:
    """Every context under `iip`, ordered so each comes after what it depends on."""
    import iip

    found: dict[str, Module] = {}
    for info in pkgutil.iter_modules(iip.__path__):
        if not info.ispkg or info.name in INFRASTRUCTURE or info.name.startswith("_"):
            continue
        package = importlib.import_module(f"iip.{info.name}")
        module = getattr(package, "module", None)
        if isinstance(module, Module):
            found[module.name] = module
    return order_modules(found.values())


def order_modules(modules: Sequence[Module] | Any) -> tuple[Module, ...]:
    by_name = {m.name: m for m in modules}
    ordered: list[Module] = []
    state: dict[str, int] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise ModuleError("module dependency cycle: " + " -> ".join((*chain, name)))
        if name not in by_name:
            raise ModuleError(f"module '{chain[-1]}' depends on unknown module '{name}'")
        state[name] = 1
        for dep in by_name[name].depends_on:
            visit(dep, (*chain, name))
        state[name] = 2
        ordered.append(by_name[name])

    for name in sorted(by_name):
        visit(name, ())
    return tuple(ordered)
