"""Early-warning rule packs: YAML lists of rules for common plant equipment, scoped to profile names.

Each pack (`<name>.yaml` beside this module) starts with a comment: its title, what it is for, the
profiles its rules are scoped to and the metrics (with units) those profiles must report, and
where its limits come from. `load_pack` validates every rule and renames the pack's profiles to the
tenant's (`profile_map`), ready for the rule store's import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml
from pydantic import ValidationError

from iip.alarms.expressions import compile_expression
from iip.alarms.rules import RuleSpec, Scope, parse_rule
from iip.kernel.errors import Invalid, NotFound

PACKAGE = "iip.alarms.packs"
SUFFIX = ".yaml"
PROFILE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,127}$")  # the device profile name rule


@dataclass(frozen=True, slots=True)
class PackInfo:
    """What a pack holds: its profiles, and per profile the metrics its rules read."""

    name: str
    title: str
    description: str
    profiles: tuple[str, ...]
    metrics: dict[str, tuple[str, ...]]
    rules: int


@dataclass(frozen=True, slots=True)
class _Pack:
    name: str
    title: str
    description: str
    rules: tuple[RuleSpec, ...]

    def info(self) -> PackInfo:
        metrics: dict[str, set[str]] = {}
        for rule in self.rules:
            profile = rule.scope.profile or ""
            metrics.setdefault(profile, set()).update(rule_metrics(rule))
        return PackInfo(
            self.name,
            self.title,
            self.description,
            tuple(sorted(metrics)),
            {profile: tuple(sorted(names)) for profile, names in sorted(metrics.items())},
            len(self.rules),
        )


def pack_names() -> list[str]:
    """The names of the packs shipped with the platform."""
    folder = resources.files(PACKAGE)
    return sorted(entry.name.removesuffix(SUFFIX) for entry in folder.iterdir() if entry.name.endswith(SUFFIX))


def list_packs() -> list[PackInfo]:
    return [_pack(name).info() for name in pack_names()]


def load_pack(name: str, *, profile_map: dict[str, str] | None = None) -> list[RuleSpec]:
    """The pack's rules, each with `pack` set to the pack's name; `profile_map` renames the pack's
    profiles (pack profile -> tenant profile), the others keep their names."""
    names = pack_names()
    if name not in names:
        raise NotFound(f"no rule pack {name[:100]!r}; the packs are {', '.join(names)}", code="rule_pack_not_found")
    pack = _pack(name)
    renames = dict(profile_map or {})
    used = {rule.scope.profile for rule in pack.rules}
    for source, renamed in renames.items():
        if source not in used:
            raise Invalid(
                f"profile_map names {source[:100]!r}, a profile pack {name!r} does not use; "
                f"its profiles are {', '.join(sorted(p for p in used if p))}"
            )
        if not isinstance(renamed, str) or not PROFILE_NAME.match(renamed):
            raise Invalid(
                f"profile_map maps {source!r} to {str(renamed)[:100]!r}, which is not a profile name "
                "(letters, digits, '_', '.', '-', starting with a letter, at most 128)"
            )
    rules: list[RuleSpec] = []
    for rule in pack.rules:
        target = renames.get(rule.scope.profile or "")
        rules.append(rule if target is None else rule.model_copy(update={"scope": Scope(profile=target)}))
    return rules


def rule_metrics(rule: RuleSpec) -> set[str]:
    """The metrics of its own device a rule reads (references to other devices left out)."""
    found: set[str] = set()
    for field in ("metric", "reference"):
        value = getattr(rule, field, None)
        if isinstance(value, str) and "/" not in value:
            found.add(value)
    for field in ("expression", "suppress_when"):
        text = getattr(rule, field, None)
        if isinstance(text, str):
            try:
                found |= compile_expression(text).names
            except Invalid as err:
                raise Invalid(f"rule {rule.key!r}, {field}: {err.message}") from None
    return found


def _header(text: str) -> tuple[str, str]:
    """The title (first comment line) and the description (the comment's next paragraph)."""
    lines: list[str] = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    title = lines[0] if lines else ""
    paragraph: list[str] = []
    for line in lines[1:]:
        if line:
            paragraph.append(line)
        elif paragraph:
            break
    return title, " ".join(paragraph)


def _error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


@cache
def _pack(name: str) -> _Pack:
    text = (resources.files(PACKAGE) / f"{name}{SUFFIX}").read_text(encoding="utf-8")
    data: Any = yaml.safe_load(text)
    if not isinstance(data, list):
        raise Invalid(f"rule pack {name!r} is not a list of rules")
    rules: list[RuleSpec] = []
    keys: set[str] = set()
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise Invalid(f"rule pack {name!r}, rule {index}: not a mapping")
        place = f"rule pack {name!r}, rule {index} ({str(item.get('key'))[:100]})"
        try:
            rule = parse_rule({**item, "pack": name})
        except ValidationError as err:
            raise Invalid(f"{place}: {_error(err)}") from None
        if rule.scope.profile is None:
            raise Invalid(f"{place}: a pack scopes its rules to profiles, not to a device")
        if rule.key in keys:
            raise Invalid(f"{place}: the key is used twice")
        keys.add(rule.key)
        rule_metrics(rule)  # the expressions must compile
        rules.append(rule)
    title, description = _header(text)
    return _Pack(name, title or name, description, tuple(rules))
