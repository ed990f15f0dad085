"""The contract every context fulfils, and the registry that finds them.

A context is a sub-package of `iip`. Its `__init__` stays light and exports `manifest: Manifest` (what
the `iip` command needs: name, dependencies, command groups named by import path); its `module.py`
exports `module: Module` (routers, pages, lifespans). A context without a manifest exports `module`
from its `__init__`. The app factory, the console and the migrations iterate `discover_modules()`,
the CLI `discover_command_groups()`; nothing imports contexts by name.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from types import ModuleType

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


@dataclass(frozen=True, slots=True)
class CommandGroup:
    """A top-level `iip` command group, named without importing it."""

    target: str  # "package.module:attribute" of a typer.Typer
    help: str  # what `iip --help` lists; the same text the Typer is given

    def load(self) -> typer.Typer:
        import typer

        module_name, _, attribute = self.target.partition(":")
        group = getattr(importlib.import_module(module_name), attribute, None)
        if not isinstance(group, typer.Typer):
            raise ModuleError(f"command group '{self.target}' is not a typer.Typer")
        return group


@dataclass(frozen=True, slots=True)
class Manifest:
    """What the `iip` command needs of a context, declared in its light `__init__`.

    `name` and `depends_on` order the groups in `iip --help` as the registry orders modules; the
    context's `Module` takes the same values.
    """

    name: str
    depends_on: Sequence[str] = ()
    cli: Mapping[str, CommandGroup] = field(default_factory=dict)


@dataclass(frozen=True)
class Module:
    """What a context declares about itself."""

    name: str
    title: str  # message id, e.g. "Access"
    depends_on: Sequence[str] = ()
    router: APIRouter | None = None
    pages_router: APIRouter | None = None
    pages: Sequence[Page] = ()
    cli: Mapping[str, typer.Typer | CommandGroup] = field(default_factory=dict)  # top-level command groups
    lifespan: Lifespan | None = None
    health: HealthCheck | None = None
    demo: DemoLoader | None = None
    permissions: Sequence[str] = ()
    template_dir: str | None = None
    asgi_layers: Sequence[AsgiLayer] = ()
    extra: dict[str, Any] = field(default_factory=dict)


class ModuleError(Exception):
    pass


def _context_packages() -> list[ModuleType]:
    import iip

    return [
        importlib.import_module(f"iip.{info.name}")
        for info in pkgutil.iter_modules(iip.__path__)
        if info.ispkg and info.name not in INFRASTRUCTURE and not info.name.startswith("_")
    ]


def _module_of(package: ModuleType) -> Module | None:
    if isinstance(getattr(package, "manifest", None), Manifest):
        package = importlib.import_module(f"{package.__name__}.module")
    module = getattr(package, "module", None)
    return module if isinstance(module, Module) else None


@cache
def discover_modules() -> tuple[Module, ...]:
    """Every context under `iip`, ordered so each comes after what it depends on."""
    found = {module.name: module for module in map(_module_of, _context_packages()) if module is not None}
    return order_modules(found.values())


@cache
def discover_command_groups() -> dict[str, typer.Typer | CommandGroup]:
    """Every context's top-level command groups, in registry order.

    Contexts with a manifest are read from it alone, so listing and dispatching commands does not
    import their routers, pages and lifespans.
    """
    declared: dict[str, Manifest | Module] = {}
    for package in _context_packages():
        manifest = getattr(package, "manifest", None)
        found = manifest if isinstance(manifest, Manifest) else _module_of(package)
        if found is not None:
            declared[found.name] = found
    groups: dict[str, typer.Typer | CommandGroup] = {}
    for context in order_modules(declared.values()):
        groups.update(context.cli)
    return groups


class Declared(Protocol):
    """A module or a manifest: what ordering needs."""

    @property
    def name(self) -> str: ...
    @property
    def depends_on(self) -> Sequence[str]: ...


DeclaredT = TypeVar("DeclaredT", bound=Declared)


def order_modules(modules: Iterable[DeclaredT]) -> tuple[DeclaredT, ...]:
    by_name = {m.name: m for m in modules}
    ordered: list[DeclaredT] = []
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
