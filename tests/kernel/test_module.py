"""The module registry: discovery and dependency order."""

from __future__ import annotations

import pytest

from iip.kernel.module import INFRASTRUCTURE, Module, ModuleError, discover_modules, order_modules


def mod(name: str, *depends_on: str) -> Module:
    return Module(name=name, title=name.title(), depends_on=depends_on)


def names(modules: tuple[Module, ...]) -> list[str]:
    return [m.name for m in modules]


def test_discovery_finds_access() -> None:
    modules = discover_modules()
    assert "access" in names(modules)
    access = next(m for m in modules if m.name == "access")
    assert access.router is not None
    assert {"tenant", "user", "apikey", "audit"} <= set(access.cli)


def test_discovery_skips_infrastructure_and_orders_dependencies() -> None:
    modules = discover_modules()
    found = names(modules)
    assert not set(found) & INFRASTRUCTURE
    assert len(found) == len(set(found))
    for position, module in enumerate(modules):
        for dependency in module.depends_on:
            assert found.index(dependency) < position, f"{module.name} comes before {dependency}"


def test_order_puts_dependencies_first() -> None:
    ordered = names(order_modules([mod("alarms", "telemetry"), mod("telemetry", "devices"), mod("devices")]))
    assert ordered == ["devices", "telemetry", "alarms"]


def test_order_of_a_diamond() -> None:
    ordered = names(
        order_modules([mod("top", "left", "right"), mod("left", "base"), mod("right", "base"), mod("base")])
    )
    assert ordered[0] == "base"
    assert ordered[-1] == "top"
    assert sorted(ordered) == ["base", "left", "right", "top"]


def test_order_is_deterministic_for_independent_modules() -> None:
    assert names(order_modules([mod("b"), mod("c"), mod("a")])) == ["a", "b", "c"]


def test_cycle_is_reported_with_its_path() -> None:
    with pytest.raises(ModuleError) as caught:
        order_modules([mod("a", "b"), mod("b", "c"), mod("c", "a")])
    assert str(caught.value) == "module dependency cycle: a -> b -> c -> a"


def test_self_dependency_is_a_cycle() -> None:
    with pytest.raises(ModuleError, match="cycle: solo -> solo"):
        order_modules([mod("solo", "solo")])


def test_unknown_dependency_names_both_modules() -> None:
    with pytest.raises(ModuleError) as caught:
        order_modules([mod("alarms", "telemetry"), mod("devices")])
    assert str(caught.value) == "module 'alarms' depends on unknown module 'telemetry'"
