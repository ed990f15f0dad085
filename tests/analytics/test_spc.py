"""SPC against textbook answers: Montgomery's piston rings and Table 9.1, Appendix VI constants, hand-built runs."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from iip.analytics.spc import (
    NELSON_RULES,
    SpcDataError,
    capability,
    control_constants,
    cusum_chart,
    ewma_chart,
    individuals_chart,
    nelson_rules,
    western_electric_rules,
    xbar_r_chart,
    xbar_s_chart,
)
from iip.kernel.errors import Invalid

# Montgomery, Introduction to Statistical Quality Control (7th ed.), Tables 6.3 and 6.4: inside
# diameter (mm) of forged piston rings, 25 trial samples of 5, then 15 later samples (also R's
# qcc::pistonrings).
PISTON_RINGS = [
    (74.030, 74.002, 74.019, 73.992, 74.008), (73.995, 73.992, 74.001, 74.011, 74.004),
    (73.988, 74.024, 74.021, 74.005, 74.002), (74.002, 73.996, 73.993, 74.015, 74.009),
    (73.992, 74.007, 74.015, 73.989, 74.014), (74.009, 73.994, 73.997, 73.985, 73.993),
    (73.995, 74.006, 73.994, 74.000, 74.005), (73.985, 74.003, 73.993, 74.015, 73.988),
    (74.008, 73.995, 74.009, 74.005, 74.004), (73.998, 74.000, 73.990, 74.007, 73.995),
    (73.994, 73.998, 73.994, 73.995, 73.990), (74.004, 74.000, 74.007, 74.000, 73.996),
    (73.983, 74.002, 73.998, 73.997, 74.012), (74.006, 73.967, 73.994, 74.000, 73.984),
    (74.012, 74.014, 73.998, 73.999, 74.007), (74.000, 73.984, 74.005, 73.998, 73.996),
    (73.994, 74.012, 73.986, 74.005, 74.007), (74.006, 74.010, 74.018, 74.003, 74.000),
    (73.984, 74.002, 74.003, 74.005, 73.997), (74.000, 74.010, 74.013, 74.020, 74.003),
    (73.988, 74.001, 74.009, 74.005, 73.996), (74.004, 73.999, 73.990, 74.006, 74.009),
    (74.010, 73.989, 73.990, 74.009, 74.014), (74.015, 74.008, 73.993, 74.000, 74.010),
    (73.982, 73.984, 73.995, 74.017, 74.013),
    (74.012, 74.015, 74.030, 73.986, 74.000), (73.995, 74.010, 73.990, 74.015, 74.001),
    (73.987, 73.999, 73.985, 74.000, 73.990), (74.008, 74.010, 74.003, 73.991, 74.006),
    (74.003, 74.000, 74.001, 73.986, 73.997), (73.994, 74.003, 74.015, 74.020, 74.004),
    (74.008, 74.002, 74.018, 73.995, 74.005), (74.001, 74.004, 73.990, 73.996, 73.998),
    (74.015, 74.000, 74.016, 74.025, 74.000), (74.030, 74.005, 74.000, 74.016, 74.012),
    (74.001, 73.990, 73.995, 74.010, 74.024), (74.015, 74.020, 74.024, 74.005, 74.019),
    (74.035, 74.010, 74.012, 74.015, 74.026), (74.017, 74.013, 74.036, 74.025, 74.026),
    (74.010, 74.005, 74.029, 74.000, 74.020),
]  # fmt: skip
TRIAL = np.array(PISTON_RINGS[:25])
LATER = np.array(PISTON_RINGS[25:])

# Montgomery Table 9.1: 20 observations from N(10, 1), then 10 after the mean moved to 11.
TABLE_9_1 = [
    9.45, 7.99, 9.29, 11.66, 12.16, 10.18, 8.04, 11.46, 9.20, 10.34, 9.03, 11.47, 10.51, 9.40, 10.08,
    9.37, 10.62, 10.31, 8.52, 10.84, 10.90, 9.33, 12.29, 11.50, 10.60, 11.08, 10.38, 11.62, 11.31, 10.52,
]  # fmt: skip
# The tabular CUSUM with K = 0.5 and H = 5: C⁺ per period as Montgomery's Table 9.2 gives it; C⁻
# computed from the same recursion separately from the module under test.
CUSUM_UPPER = [
    0.0, 0.0, 0.0, 1.16, 2.82, 2.50, 0.04, 1.00, 0.0, 0.0, 0.0, 0.97, 0.98, 0.0, 0.0,
    0.0, 0.12, 0.0, 0.0, 0.34, 0.74, 0.0, 1.79, 2.79, 2.89, 3.47, 3.35, 4.47, 5.28, 5.30,
]  # fmt: skip
CUSUM_LOWER = [
    0.05, 1.56, 1.77, 0.0, 0.0, 0.0, 1.46, 0.0, 0.30, 0.0, 0.47, 0.0, 0.0, 0.10, 0.0,
    0.13, 0.0, 0.0, 0.98, 0.0, 0.0, 0.17, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
]  # fmt: skip

# Montgomery Appendix VI, as printed (3 decimals, c4 4).
APPENDIX_NAMES = ("a2", "a3", "c4", "b3", "b4", "d2", "d3", "d3_lower", "d4")
APPENDIX_VI = {
    2: (1.880, 2.659, 0.7979, 0.0, 3.267, 1.128, 0.853, 0.0, 3.267),
    5: (0.577, 1.427, 0.9400, 0.0, 2.089, 2.326, 0.864, 0.0, 2.114),
    7: (0.419, 1.182, 0.9594, 0.118, 1.882, 2.704, 0.833, 0.076, 1.924),
    10: (0.308, 0.975, 0.9727, 0.284, 1.716, 3.078, 0.797, 0.223, 1.777),
    25: (0.153, 0.606, 0.9896, 0.565, 1.435, 3.931, 0.708, 0.459, 1.541),
}


@pytest.mark.parametrize("n", sorted(APPENDIX_VI))
def test_constants_match_montgomery_appendix_vi(n: int) -> None:
    constants = control_constants(n)
    for name, printed in zip(APPENDIX_NAMES, APPENDIX_VI[n], strict=True):
        # Half a unit in the last printed place, and a little more: the table rounds d₃(2) = 0.85248 up.
        last_place = 1e-4 if name == "c4" else 1e-3
        assert getattr(constants, name) == pytest.approx(printed, abs=0.6 * last_place), name


def test_d2_for_pairs_is_two_over_root_pi() -> None:
    # The mean range of two standard normal values is 2/√π exactly.
    assert control_constants(2).d2 == pytest.approx(2.0 / math.sqrt(math.pi), abs=1e-9)


def test_piston_rings_xbar_r_trial_limits() -> None:
    charts = xbar_r_chart(TRIAL)
    # By hand from the table: the 25 ranges add up to 0.569, so R̄ = 0.02276; the 125 values to 9250.1475.
    r_bar = sum(max(row) - min(row) for row in PISTON_RINGS[:25]) / 25
    grand = sum(map(sum, PISTON_RINGS[:25])) / 125
    assert r_bar == pytest.approx(0.02276)
    assert charts.location.center == pytest.approx(grand, abs=1e-9)
    assert charts.spread.center == pytest.approx(r_bar, abs=1e-12)
    # With Appendix VI's A₂ = 0.577, D₄ = 2.114, d₂ = 2.326.
    assert float(charts.location.upper[0]) == pytest.approx(grand + 0.577 * r_bar, abs=2e-5)
    assert float(charts.location.lower[0]) == pytest.approx(grand - 0.577 * r_bar, abs=2e-5)
    assert float(charts.spread.upper[0]) == pytest.approx(2.114 * r_bar, abs=2e-5)
    assert float(charts.spread.lower[0]) == 0.0
    assert charts.process_sigma == pytest.approx(r_bar / 2.326, rel=2e-4)
    # Montgomery Example 6.1 prints x̿ = 74.001 and x̄ limits 73.988 / 74.014 (and, from R̄ rounded
    # to 0.023, an R limit of 0.049).
    assert round(charts.location.center, 3) == 74.001
    assert round(float(charts.location.lower[0]), 3) == 73.988
    assert round(float(charts.location.upper[0]), 3) == 74.014
    # The trial samples are in control on both charts, as the book concludes.
    assert charts.location.beyond_limits().size == 0
    assert charts.spread.beyond_limits().size == 0


def test_piston_rings_later_samples_against_trial_limits() -> None:
    trial = xbar_r_chart(TRIAL)
    later = xbar_r_chart(LATER, center=trial.location.center, mean_range=trial.spread.center)
    # By hand: sample 37's mean is 74.0166, 38's 74.0196, 39's 74.0234, all above 74.0146; the others are below.
    assert [int(i) + 26 for i in later.location.beyond_limits()] == [37, 38, 39]
    assert later.spread.beyond_limits().size == 0


def test_piston_rings_xbar_s() -> None:
    charts = xbar_s_chart(TRIAL)
    s_bar = statistics.fmean(statistics.stdev(row) for row in PISTON_RINGS[:25])
    grand = sum(map(sum, PISTON_RINGS[:25])) / 125
    assert charts.spread.center == pytest.approx(s_bar, abs=1e-12)
    # With Appendix VI's A₃ = 1.427, B₄ = 2.089, c₄ = 0.9400; x̄ limits as in Example 6.3, 73.988 / 74.014.
    assert float(charts.location.upper[0]) == pytest.approx(grand + 1.427 * s_bar, abs=1e-5)
    assert float(charts.location.lower[0]) == pytest.approx(grand - 1.427 * s_bar, abs=1e-5)
    assert round(float(charts.location.lower[0]), 3) == 73.988
    assert round(float(charts.location.upper[0]), 3) == 74.014
    assert float(charts.spread.lower[0]) == 0.0
    assert float(charts.spread.upper[0]) == pytest.approx(2.089 * s_bar, abs=1e-5)
    assert charts.process_sigma == pytest.approx(s_bar / 0.94, rel=1e-4)


def test_individuals_chart_by_hand() -> None:
    values = [10.0, 12.0, 11.0, 13.0, 12.0]
    charts = individuals_chart(values)
    # Moving ranges 2, 1, 2, 1: MR̄ = 1.5, σ̂ = 1.5/d₂ = 1.5·√π/2; mean 11.6.
    sigma = 1.5 * math.sqrt(math.pi) / 2.0
    assert charts.location.center == pytest.approx(11.6)
    assert float(charts.location.upper[0]) == pytest.approx(11.6 + 3 * sigma)
    assert float(charts.location.lower[0]) == pytest.approx(11.6 - 3 * sigma)
    assert charts.spread.center == pytest.approx(1.5)
    assert float(charts.spread.upper[0]) == pytest.approx(1.5 * control_constants(2).d4)
    assert math.isnan(charts.spread.values[0])
    assert charts.spread.values[1:].tolist() == pytest.approx([2.0, 1.0, 2.0, 1.0])


def test_ewma_montgomery_example_9_2() -> None:
    chart = ewma_chart(TABLE_9_1, lam=0.1, width=2.7, target=10.0, sigma=1.0)
    # z₁ = 0.1·9.45 + 0.9·10 = 9.945; the first limits are 10 ± 2.7·√(0.1/1.9·(1 − 0.81)) = 10 ± 0.27.
    assert chart.values[0] == pytest.approx(9.945)
    assert float(chart.upper[0]) == pytest.approx(10.27)
    assert float(chart.lower[0]) == pytest.approx(9.73)
    # Steady-state limits 10 ± 2.7·√(0.1/1.9).
    assert float(chart.upper[-1]) == pytest.approx(10.0 + 2.7 * math.sqrt(0.1 / 1.9), abs=1e-3)
    # The shift after period 20 is signalled at periods 29 and 30.
    assert (chart.beyond_limits() + 1).tolist() == [29, 30]


def test_cusum_montgomery_example_9_1() -> None:
    chart = cusum_chart(TABLE_9_1, target=10.0, sigma=1.0, k=0.5, h=5.0)
    assert chart.upper.tolist() == pytest.approx(CUSUM_UPPER, abs=0.006)
    assert chart.lower.tolist() == pytest.approx(CUSUM_LOWER, abs=0.006)
    assert (chart.signals() + 1).tolist() == [29, 30]
    first = int(chart.signals()[0])
    # N⁺ = 7 at period 29: the shift came after period 22; new mean 10 + 0.5 + 5.28/7 = 11.25.
    assert int(chart.run_upper[first]) == 7
    assert chart.shifted_mean(first) == pytest.approx(11.25, abs=0.005)


# -- run rules: each series breaks one rule, where expected, and no other ------------------------

NEUTRAL = [0.5, 1.5, -0.5, -1.5]  # breaks no rule, however often repeated (centre 0, sigma 1)
AFTER = [-0.5, -1.5, 0.5, 1.5]  # the same cycle started elsewhere, to end a segment with a fall
RULE_SERIES: dict[str, tuple[list[float], list[int]]] = {
    "nelson_1": (NEUTRAL * 2 + [0.5, 1.5, 3.5, -1.5] + NEUTRAL * 2, [10]),
    "nelson_2": (NEUTRAL * 3 + [0.5, 0.8, 0.9, 0.3, 0.6, 0.7, 0.2, 0.4, 0.5] + AFTER * 3, [20]),
    "nelson_3": (NEUTRAL * 3 + [-1.8, -1.2, -0.6, 0.4, 1.1, 1.7] + AFTER * 3, [17]),
    "nelson_4": (NEUTRAL * 3 + [-0.5, 1.5] * 7 + [1.8, 0.5, -0.5, -1.5] + NEUTRAL * 2, [25]),
    "nelson_5": (NEUTRAL * 3 + [2.5, -0.5, 2.5] + AFTER * 3, [14]),
    "nelson_6": (NEUTRAL * 3 + [1.5, 1.2, 0.5, 1.8, 1.3] + AFTER * 3, [16]),
    "nelson_7": (
        NEUTRAL * 3
        + [0.5, -0.3, -0.6, 0.4, 0.7, -0.2, -0.5, 0.3, 0.6, -0.4, -0.7, 0.2, 0.5, -0.3, -0.6]
        + [1.5, -0.5, -1.5, 0.5] * 2,
        [26],
    ),
    "nelson_8": (NEUTRAL * 3 + [0.5] + [1.5, 1.2, -1.3, -1.6, 1.4, 1.1, -1.2, -1.5] + NEUTRAL * 2, [20]),
}


def test_neutral_series_breaks_no_rule() -> None:
    signals = nelson_rules(NEUTRAL * 10, 0.0, 1.0)
    assert all(found.size == 0 for found in signals.values())


@pytest.mark.parametrize("rule", [r.key for r in NELSON_RULES])
def test_series_breaks_exactly_one_nelson_rule_where_expected(rule: str) -> None:
    series, expected = RULE_SERIES[rule]
    signals = nelson_rules(series, 0.0, 1.0)
    assert signals[rule].tolist() == expected
    others = {key: found.tolist() for key, found in signals.items() if key != rule and found.size}
    assert others == {}


def test_nelson_rules_scale_with_centre_and_sigma() -> None:
    series, expected = RULE_SERIES["nelson_5"]
    shifted = [50.0 + 4.0 * v for v in series]
    assert nelson_rules(shifted, 50.0, 4.0)["nelson_5"].tolist() == expected


def test_a_run_that_goes_on_signals_at_every_further_point() -> None:
    series = NEUTRAL * 3 + [0.5] * 11 + AFTER * 3
    assert nelson_rules(series, 0.0, 1.0)["nelson_2"].tolist() == [20, 21, 22]


def test_western_electric_rules() -> None:
    eight_above = NEUTRAL * 3 + [0.5, 0.8, 0.9, 0.3, 0.6, 0.7, 0.2, 0.4] + AFTER * 3
    signals = western_electric_rules(eight_above, 0.0, 1.0)
    assert signals["we_4"].tolist() == [19]
    assert {k: v.tolist() for k, v in signals.items() if k != "we_4" and v.size} == {}
    # Rules 2 and 3 are Nelson's 5 and 6; rule 1 is Nelson's 1.
    for we, nelson in (("we_1", "nelson_1"), ("we_2", "nelson_5"), ("we_3", "nelson_6")):
        series, expected = RULE_SERIES[nelson]
        assert western_electric_rules(series, 0.0, 1.0)[we].tolist() == expected


def test_points_on_a_zone_boundary_are_inside_it() -> None:
    assert nelson_rules([0.5, 3.0, -3.0, 0.5], 0.0, 1.0)["nelson_1"].size == 0


def test_chart_methods_apply_rules_with_the_chart_sigma() -> None:
    later = xbar_r_chart(
        LATER, center=xbar_r_chart(TRIAL).location.center, mean_range=xbar_r_chart(TRIAL).spread.center
    )
    assert later.location.nelson()["nelson_1"].tolist() == later.location.beyond_limits().tolist()
    assert later.location.western_electric()["we_1"].tolist() == [11, 12, 13]


# -- capability ----------------------------------------------------------------------------------


def test_capability_by_hand() -> None:
    result = capability([1.0, 2.0, 3.0, 4.0, 5.0], lsl=0.0, usl=8.0)
    within = math.sqrt(math.pi) / 2.0  # MR̄ = 1, d₂ = 2/√π
    overall = math.sqrt(2.5)  # sample standard deviation of 1..5
    assert result.mean == pytest.approx(3.0)
    assert result.sigma_within == pytest.approx(within)
    assert result.sigma_overall == pytest.approx(overall)
    assert result.cp == pytest.approx(8.0 / (6 * within))  # 1.5045
    assert result.cpk == pytest.approx(3.0 / (3 * within))  # 1.1284
    assert result.pp == pytest.approx(8.0 / (6 * overall))  # 0.8433
    assert result.ppk == pytest.approx(3.0 / (3 * overall))  # 0.6325


def test_capability_one_sided() -> None:
    result = capability([1.0, 2.0, 3.0, 4.0, 5.0], usl=8.0)
    assert result.cp is None
    assert result.pp is None
    assert result.cpk == pytest.approx(5.0 / (3 * math.sqrt(math.pi) / 2.0))


def test_piston_ring_capability() -> None:
    # Specification 74.000 ± 0.05 mm; σ̂ = R̄/d₂ = 0.02276/2.326 = 0.009785: Cp = 0.10/(6·0.009785) = 1.703.
    # (Montgomery rounds σ̂ to 0.0099 and prints 1.68.)
    result = capability(TRIAL, lsl=73.95, usl=74.05)
    assert result.sigma_within == pytest.approx(0.02276 / 2.326, rel=2e-4)
    assert result.cp == pytest.approx(0.10 / (6 * 0.02276 / 2.326), rel=2e-4)
    grand = sum(map(sum, PISTON_RINGS[:25])) / 125
    # The mean, 74.00118, is nearer the upper limit.
    assert result.cpk == pytest.approx((74.05 - grand) / (3 * 0.02276 / 2.326), rel=2e-4)
    assert result.points == 125


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: capability([1.0, 2.0, 3.0]), "missing specification limits"),
        (lambda: capability([1.0, 2.0, 3.0], lsl=5.0, usl=1.0), "must be below usl"),
        (lambda: capability([1.0], lsl=0.0, usl=2.0), "too few points"),
        (lambda: capability([2.0, 2.0, 2.0, 2.0], lsl=0.0, usl=4.0), "zero variation"),
        (lambda: capability([[1.0, 1.0], [2.0, 2.0]], lsl=0.0, usl=4.0), "zero variation"),
        (lambda: capability([1.0, float("nan"), 3.0], lsl=0.0, usl=4.0), "positions [1]"),
        (lambda: individuals_chart([1.0]), "too few points"),
        (lambda: individuals_chart([3.0, 3.0, 3.0]), "zero variation"),
        (lambda: xbar_r_chart([[1.0, 2.0], [3.0]]), "subgroups"),
        (lambda: xbar_r_chart([[1.0, 2.0, 3.0]]), "too few points"),
        (lambda: xbar_r_chart([[1.0], [2.0]]), "subgroup size"),
        (lambda: ewma_chart([1.0, 2.0, 3.0], lam=0.0), "lam"),
        (lambda: cusum_chart([1.0, 2.0, 3.0], h=0.0), "h must be"),
        (lambda: nelson_rules([1.0, 2.0], 0.0, 0.0), "sigma must be"),
        (lambda: control_constants(1), "subgroup size"),
    ],
)
def test_bad_input_gets_a_clear_error(call: object, message: str) -> None:
    with pytest.raises(SpcDataError, match=message.replace("[", r"\[").replace("]", r"\]")) as caught:
        call()  # type: ignore[operator]
    assert isinstance(caught.value, Invalid)
    assert caught.value.code == "spc_data_invalid"
