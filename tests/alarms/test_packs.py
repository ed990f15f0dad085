"""The shipped rule packs: every rule parses, is rationalised and fits the profiles its pack documents."""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from iip.alarms.expressions import compile_expression
from iip.alarms.packs import PACKAGE, PackInfo, list_packs, load_pack, rule_metrics
from iip.alarms.rules import (
    ExpressionRule,
    NoDataRule,
    RollingAverageRule,
    RuleKind,
    RuleSpec,
    Scope,
    ThresholdRule,
    parse_rule,
    rule_data,
)
from iip.kernel.errors import Invalid, NotFound

PACKS = ("energy", "environment", "petrochemical-safety")
CJK = re.compile(r"[\u4e00-\u9fff]")
ROOT = Path(__file__).resolve().parents[2]


def pack_info(name: str) -> PackInfo:
    return next(info for info in list_packs() if info.name == name)


def header(name: str) -> str:
    text = (resources.files(PACKAGE) / f"{name}.yaml").read_text(encoding="utf-8")
    return "\n".join(line for line in text.splitlines() if line.startswith("#"))


def all_rules() -> list[RuleSpec]:
    return [rule for name in PACKS for rule in load_pack(name)]


def test_the_packs_are_listed_with_their_profiles_and_metrics() -> None:
    infos = list_packs()
    assert [info.name for info in infos] == list(PACKS)
    petro = pack_info("petrochemical-safety")
    assert petro.title == "Petrochemical safety / 石化安全"
    assert "GB/T 50493-2019" in petro.description
    assert petro.profiles == ("gas-detector", "h2s-detector", "pressure-vessel", "reactor", "storage-tank")
    assert petro.metrics["reactor"] == ("feed_flow", "pressure", "temperature")  # feed_flow from suppress_when
    assert pack_info("energy").metrics["site-energy"] == ("active_power", "coal_baseline", "gas_flow", "steam_flow")
    for info in infos:
        assert info.rules == len(load_pack(info.name)) >= 5
        assert CJK.search(info.title)
        assert info.description


@pytest.mark.parametrize("name", PACKS)
def test_every_rule_parses_and_names_its_pack(name: str) -> None:
    rules = load_pack(name)
    for rule in rules:
        assert rule.pack == name
        assert rule.scope.profile is not None
        assert rule.scope.device is None
        assert parse_rule(rule_data(rule)) == rule  # what the rule store keeps reads back the same


@pytest.mark.parametrize("name", PACKS)
def test_every_rule_is_rationalised_and_bilingual(name: str) -> None:
    for rule in load_pack(name):
        why = rule.rationalisation
        assert why.cause, rule.key
        assert why.consequence, rule.key
        assert why.corrective_action, rule.key
        assert why.response_time_s, rule.key
        english, _, chinese = rule.title.partition(" / ")
        assert CJK.search(chinese), rule.title
        assert english, rule.title
        assert not CJK.search(english), rule.title
        assert rule.message.startswith("{device}: "), rule.key
        assert not CJK.search(rule.message), rule.key


@pytest.mark.parametrize("name", PACKS)
def test_the_header_documents_every_profile_and_metric(name: str) -> None:
    text = header(name)
    info = pack_info(name)
    for profile, metrics in info.metrics.items():
        (line,) = [line for line in text.splitlines() if re.match(rf"#\s+{re.escape(profile)}\s", line)]
        for metric in metrics:
            assert re.search(rf"\b{metric}\b", line), f"{name}: {profile} does not document {metric}"


def test_rule_keys_are_unique_across_packs() -> None:
    keys = [rule.key for rule in all_rules()]
    assert len(keys) == len(set(keys))


def test_envelopes_are_ordered_hh_h_l_ll() -> None:
    limits: dict[tuple[str | None, str, str], float] = {}
    for rule in all_rules():
        suffix = rule.key.rsplit(".", 1)[1]
        if isinstance(rule, ThresholdRule) and suffix in {"hh", "h", "l", "ll"}:
            limit = rule.high if suffix.startswith("h") else rule.low
            assert limit is not None, rule.key
            limits[(rule.scope.profile, rule.metric, suffix)] = limit
    envelopes = {(profile, metric) for profile, metric, _ in limits}
    assert ("reactor", "temperature") in envelopes
    assert ("pressure-vessel", "pressure") in envelopes
    assert ("storage-tank", "level") in envelopes
    for profile, metric in envelopes:
        ordered = [limits.get((profile, metric, suffix)) for suffix in ("hh", "h", "l", "ll")]
        present = [limit for limit in ordered if limit is not None]
        assert present == sorted(present, reverse=True), (profile, metric)
        assert len(present) >= 2


def test_gas_detection_follows_gb_t_50493() -> None:
    rules = {rule.key: rule for rule in load_pack("petrochemical-safety")}
    level1, level2 = rules["petro.gas.lel.level1"], rules["petro.gas.lel.level2"]
    assert isinstance(level1, ThresholdRule)
    assert isinstance(level2, ThresholdRule)
    assert (level1.high, level2.high) == (20, 40)  # at most 25 and 50 %LEL
    assert level2.latched
    assert level2.priority == "critical"
    h2s1, h2s2 = rules["petro.h2s.level1"], rules["petro.h2s.level2"]
    assert isinstance(h2s1, ThresholdRule)
    assert isinstance(h2s2, ThresholdRule)
    # 100 % and 200 % of the GBZ 2.1 MAC of 10 mg/m3, in ppm (34.08 g/mol, 22.4 L/mol at 0 °C).
    mg_per_ppm = 34.08 / 22.4
    assert (h2s1.high or 0) * mg_per_ppm == pytest.approx(10, abs=0.05)
    assert (h2s2.high or 0) * mg_per_ppm == pytest.approx(20, abs=0.1)
    silent = [rule for rule in rules.values() if isinstance(rule, NoDataRule)]
    assert {rule.scope.profile for rule in silent} == {"gas-detector", "h2s-detector"}


def test_environment_limits_are_rolling_averages() -> None:
    rules = load_pack("environment")
    limits = [rule for rule in rules if isinstance(rule, RollingAverageRule) and rule.key.endswith("limit")]
    assert {rule.metric: rule.window_s for rule in limits} == {
        "so2": 3600,
        "nox": 3600,
        "particulate": 3600,
        "cod": 86400,
        "ammonia": 86400,
    }


def test_energy_rules_compare_with_baselines() -> None:
    rules = {rule.key: rule for rule in load_pack("energy")}
    assert {rule.kind for rule in rules.values()} >= {RuleKind.EXPRESSION, RuleKind.DEVIATION}
    assert rule_metrics(rules["energy.site.coal-above-baseline"]) == {
        "active_power",
        "steam_flow",
        "gas_flow",
        "coal_baseline",
    }


def test_expressions_evaluate_as_documented() -> None:
    rules = {rule.key: rule for name in PACKS for rule in load_pack(name)}
    coal = rules["energy.site.coal-above-baseline"]
    assert isinstance(coal, ExpressionRule)
    site = {"active_power": 1000.0, "steam_flow": 1.0, "gas_flow": 100.0}  # 122.9 + 128.6 + 121.43 kgce/h
    above = compile_expression(coal.expression)
    assert above.evaluate(lambda _, metric: {**site, "coal_baseline": 330.0}.get(metric)) is True  # > 363
    assert above.evaluate(lambda _, metric: {**site, "coal_baseline": 340.0}.get(metric)) is False  # < 374
    assert above.evaluate(lambda _, metric: {**site, "coal_baseline": 0.0}.get(metric)) is False
    idle = rules["petro.reactor.temperature.l"].suppress_when
    assert idle is not None
    assert compile_expression(idle).evaluate(lambda _, metric: {"feed_flow": 5.0}.get(metric)) is True
    assert compile_expression(idle).evaluate(lambda _, metric: {"feed_flow": 800.0}.get(metric)) is False


# --------------------------------------------------------------------------- profile_map


def test_profile_map_renames_the_pack_profiles() -> None:
    original = load_pack("petrochemical-safety")
    renamed = load_pack("petrochemical-safety", profile_map={"reactor": "sim-reactor", "gas-detector": "gd-100"})

    assert len(renamed) == len(original)
    for before, after in zip(original, renamed, strict=True):
        profile = before.scope.profile or ""
        assert after.scope == Scope(profile={"reactor": "sim-reactor", "gas-detector": "gd-100"}.get(profile, profile))
        assert {**rule_data(after), "scope": None} == {**rule_data(before), "scope": None}
    # The cached pack is not changed by a mapping.
    assert load_pack("petrochemical-safety") == original


def test_profile_map_refuses_unknown_profiles_and_bad_names() -> None:
    with pytest.raises(
        Invalid, match=r"profile_map names 'boiler', a profile pack 'energy' does not use; its profiles"
    ):
        load_pack("energy", profile_map={"boiler": "b-1"})
    with pytest.raises(Invalid, match=r"maps 'steam-meter' to '9 bad', which is not a profile name"):
        load_pack("energy", profile_map={"steam-meter": "9 bad"})


def test_an_unknown_pack_is_not_found() -> None:
    with pytest.raises(NotFound, match=r"no rule pack '../energy'; the packs are energy, environment") as caught:
        load_pack("../energy")
    assert caught.value.instance_code == "rule_pack_not_found"


def test_the_packs_are_packaged() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "**/*.yaml" in config["tool"]["setuptools"]["package-data"]["iip"]
