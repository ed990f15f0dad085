"""The root command lists context groups from their manifests and imports a group only when it runs."""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import typer
from typer.testing import CliRunner

from iip.cli.app import app
from iip.kernel.module import (
    INFRASTRUCTURE,
    CommandGroup,
    Manifest,
    Module,
    ModuleError,
    discover_command_groups,
    discover_modules,
)
from tests.cli.conftest import outer_environment

# Runs `iip <args>` in a fresh interpreter, then prints every module it imported after a marker line.
IMPORTS_AFTER = """
import sys
from iip.cli.app import main
try:
    main()
except SystemExit:
    pass
print("--- modules ---")
print("\\n".join(sorted(sys.modules)))
"""
HEAVY = ("fastapi", "asyncua", "sqlalchemy")
CONTEXT_CODE = re.compile(r"iip\.(?!kernel\.)\w+\.(module|router|pages|lifespan)$")


def modules_imported_by(tmp_path: Path, *args: str) -> tuple[str, set[str]]:
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS_AFTER, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**outer_environment(), "IIP_DATA_DIR": str(tmp_path / "var")},
        timeout=120,
        check=True,
    )
    output, _, modules = result.stdout.partition("--- modules ---\n")
    return output, set(modules.split())


def context_packages() -> list[ModuleType]:
    import iip

    return [
        importlib.import_module(f"iip.{info.name}")
        for info in pkgutil.iter_modules(iip.__path__)
        if info.ispkg and info.name not in INFRASTRUCTURE
    ]


def contexts_without_manifest() -> list[str]:
    return [
        package.__name__
        for package in context_packages()
        if isinstance(getattr(package, "module", None), Module) and not hasattr(package, "manifest")
    ]


def heavy_or_context_code(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY or CONTEXT_CODE.match(m))


def test_version_imports_no_context(tmp_path: Path) -> None:
    output, modules = modules_imported_by(tmp_path, "--version")
    assert output.startswith("iip ")
    assert heavy_or_context_code(modules) == []
    assert not {m for m in modules if m.startswith("iip.") and m.split(".")[1] not in {"cli", "kernel"}}


def test_every_context_declares_a_manifest() -> None:
    # Without one, `iip --help` imports the whole context to find its commands.
    assert contexts_without_manifest() == []


def test_help_lists_every_group_without_importing_them(tmp_path: Path) -> None:
    output, modules = modules_imported_by(tmp_path, "--help")
    for name in discover_command_groups():
        assert re.search(rf"^│ {name} ", output, re.MULTILINE), name
    assert heavy_or_context_code(modules) == []
    assert not {m for m in modules if m.endswith(".cli") and m != "iip.cli"}


def test_a_group_imports_no_other_group_and_no_context_module(tmp_path: Path) -> None:
    output, modules = modules_imported_by(tmp_path, "tenant", "--help")
    assert "Tenants (enterprises)." in output
    assert "iip.access.cli" in modules
    # A context without a manifest is imported whole for the list of groups, its command group with it.
    whole = tuple(f"{name}." for name in contexts_without_manifest())
    other_groups = {m for m in modules if m.startswith("iip.") and m.endswith(".cli") and not m.startswith(whole)}
    assert other_groups == {"iip.cli", "iip.access.cli"}
    assert [m for m in modules if CONTEXT_CODE.match(m) and not m.startswith(whole)] == []
    assert "asyncua" not in modules


def test_declared_help_is_the_help_of_the_group() -> None:
    """`iip --help` shows the declared help; `iip <group> --help` the Typer app's own."""
    declared = {name: group for name, group in discover_command_groups().items() if isinstance(group, CommandGroup)}
    assert {"tenant", "alarms", "rules", "devices", "edge", "sim", "id"} <= set(declared)
    for name, group in declared.items():
        mounted = typer.Typer()
        mounted.add_typer(group.load(), name=name)
        command = typer.main.get_group(mounted).commands[name]
        assert (command.help, command.short_help, command.hidden) == (group.help, None, False), name


def test_manifest_and_module_agree() -> None:
    modules = {m.name: m for m in discover_modules()}
    manifests = [p.manifest for p in context_packages() if isinstance(getattr(p, "manifest", None), Manifest)]
    assert {"access", "alarms", "devices", "identifiers"} <= {m.name for m in manifests}
    for manifest in manifests:
        module = modules[manifest.name]
        assert (module.depends_on, module.cli) == (manifest.depends_on, manifest.cli)


def test_listing_follows_the_registry_order() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    listed = re.findall(r"^│ (\S+) ", result.stdout, re.MULTILINE)
    registry = [name for module in discover_modules() for name in module.cli]
    assert [name for name in listed if name not in {"--version", "--help"}] == ["run", "db", *registry]


def test_a_mistyped_group_is_suggested() -> None:
    result = CliRunner().invoke(app, ["alrms"])
    assert result.exit_code == 2
    assert "Did you mean 'alarms'?" in result.output


def test_a_group_that_names_no_typer_app_is_refused() -> None:
    with pytest.raises(ModuleError, match=re.escape("'iip.cli.app:main' is not a typer.Typer")):
        CommandGroup("iip.cli.app:main", "not a group").load()
