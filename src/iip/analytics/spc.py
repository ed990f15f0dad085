"""Statistical process control: Shewhart, EWMA and CUSUM charts, run rules, capability indices.

Charts and formulas follow Montgomery, *Introduction to Statistical Quality Control* (7th ed., 2013):
individuals and moving range (§6.4), x̄-R and x̄-s (§6.2, §6.3), EWMA (§9.2), tabular CUSUM (§9.1),
process capability ratios (§8.3). Run rules: Western Electric, *Statistical Quality Control
Handbook* (1956); Nelson, "The Shewhart control chart — tests for special causes", J. Quality
Technology 16(4), 1984.

The control chart constants are not typed in from a table but computed for the normal distribution
with scipy, and the tests hold them to Montgomery's Appendix VI: d₂ = E[W] and d₃ = sd[W] for the
range W of n standard normal values (Tippett 1925), c₄ = E[s]/σ = √(2/(n−1)) Γ(n/2) / Γ((n−1)/2);
A₂ = 3/(d₂√n), D₃ = max(0, 1 − 3d₃/d₂), D₄ = 1 + 3d₃/d₂, A₃ = 3/(c₄√n),
B₃ = max(0, 1 − 3√(1−c₄²)/c₄), B₄ = 1 + 3√(1−c₄²)/c₄.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import ClassVar

import numpy as np
import numpy.typing as npt
from scipy import integrate, special

from iip.kernel.errors import Invalid

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]

MIN_SUBGROUP = 2
MAX_SUBGROUP = 50


class SpcDataError(Invalid, ValueError):
    """Data or settings a chart or capability study cannot use; the message names the problem."""

    code = "spc_data_invalid"
    title = "Data not usable for SPC"


# -- constants ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ControlConstants:
    """Factors for subgroups of size n (Montgomery, Appendix VI)."""

    n: int
    d2: float
    d3: float
    c4: float
    a2: float
    a3: float
    d3_lower: float  # D₃
    d4: float  # D₄
    b3: float
    b4: float


@cache
def control_constants(n: int) -> ControlConstants:
    """The factors for subgroup size `n` (2 to 50), computed for normal data."""
    if not isinstance(n, int) or not MIN_SUBGROUP <= n <= MAX_SUBGROUP:
        raise SpcDataError(f"subgroup size must be an integer from {MIN_SUBGROUP} to {MAX_SUBGROUP}, got {n!r}")
    d2, d3 = _range_moments(n)
    c4 = math.sqrt(2.0 / (n - 1)) * math.exp(special.gammaln(n / 2.0) - special.gammaln((n - 1) / 2.0))
    spread = 3.0 * math.sqrt(1.0 - c4 * c4) / c4
    return ControlConstants(
        n=n,
        d2=d2,
        d3=d3,
        c4=c4,
        a2=3.0 / (d2 * math.sqrt(n)),
        a3=3.0 / (c4 * math.sqrt(n)),
        d3_lower=max(0.0, 1.0 - 3.0 * d3 / d2),
        d4=1.0 + 3.0 * d3 / d2,
        b3=max(0.0, 1.0 - spread),
        b4=1.0 + spread,
    )


def _range_moments(n: int) -> tuple[float, float]:
    """Mean and standard deviation of the range of n independent standard normal values.

    E[W] = ∫ 1 − Φ(x)ⁿ − (1 − Φ(x))ⁿ dx. For the second moment, P(W ≤ w) = n ∫ φ(x) (Φ(x+w) − Φ(x))ⁿ⁻¹ dx
    and E[W²] = ∫₀^∞ 2w P(W > w) dw; both integrands are smooth and decay like the normal density,
    so the trapezoidal rule on a fine grid is accurate to far more digits than the tables print.
    """
    mean, _ = integrate.quad(lambda x: 1.0 - special.ndtr(x) ** n - special.ndtr(-x) ** n, -np.inf, np.inf)
    x = np.linspace(-9.0, 9.0, 1201)
    w = np.linspace(0.0, 16.0, 1201)
    below = special.ndtr(x)
    within = np.clip(special.ndtr(x[None, :] + w[:, None]) - below, 0.0, 1.0)
    cdf = n * np.trapezoid(_density(x) * within ** (n - 1), x, axis=1)
    second = float(np.trapezoid(2.0 * w * (1.0 - cdf), w))
    return float(mean), math.sqrt(second - mean * mean)


def _density(x: FloatArray) -> FloatArray:
    out: FloatArray = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return out


# -- input checks ------------------------------------------------------------------------------


def _series(values: npt.ArrayLike, *, what: str = "values", min_points: int = 2) -> FloatArray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise SpcDataError(f"{what} are not numeric: {err}") from err
    if array.ndim != 1:
        raise SpcDataError(f"{what} must be one series of numbers, got {array.ndim} dimension(s)")
    if array.shape[0] < min_points:
        raise SpcDataError(f"too few points: {array.shape[0]} {what} (at least {min_points} needed)")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise SpcDataError(f"missing or non-finite {what} at positions {bad[:10].tolist()}", positions=bad.tolist())
    return array


def _subgroups(subgroups: npt.ArrayLike, *, min_groups: int = 2) -> FloatArray:
    try:
        array = np.asarray(subgroups, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise SpcDataError(f"subgroups must be a table of numbers, one row per subgroup, of one size: {err}") from err
    if array.ndim != 2:
        raise SpcDataError(f"subgroups must be a table (subgroups x size), got {array.ndim} dimension(s)")
    if array.shape[0] < min_groups:
        raise SpcDataError(f"too few points: {array.shape[0]} subgroups (at least {min_groups} needed)")
    if not MIN_SUBGROUP <= array.shape[1] <= MAX_SUBGROUP:
        raise SpcDataError(f"subgroup size must be from {MIN_SUBGROUP} to {MAX_SUBGROUP}, got {array.shape[1]}")
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad.size:
        raise SpcDataError(f"missing or non-finite values in subgroups {bad[:10].tolist()}", subgroups=bad.tolist())
    return array


def _positive(value: float | None, name: str) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise SpcDataError(f"{name} must be a positive number, got {value!r}")
    return number


def _required_positive(value: float, name: str) -> float:
    number = _positive(value, name)
    if number is None:
        raise SpcDataError(f"{name} is required")
    return number


def _finite(value: float | None, name: str) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        raise SpcDataError(f"{name} must be a finite number, got {value!r}")
    return number


def _nonzero_sigma(sigma: float, what: str) -> float:
    if not sigma > 0:
        raise SpcDataError(f"zero variation: {what} is 0, so no limits can be set")
    return sigma


# -- run rules ---------------------------------------------------------------------------------


def _run_end(flags: BoolArray, length: int) -> BoolArray:
    """True at i when flags[i − length + 1 .. i] are all true."""
    out: BoolArray = _window_count(flags, length) == length
    return out


def _window_count(flags: BoolArray, length: int) -> IntArray:
    """Number of true flags in the window of `length` ending at each index (0 before a full window)."""
    counts = np.zeros(flags.shape[0] + 1, dtype=np.intp)
    np.cumsum(flags, out=counts[1:])
    out = np.zeros(flags.shape[0], dtype=np.intp)
    if flags.shape[0] >= length:
        out[length - 1 :] = counts[length:] - counts[:-length]
    return out


def _beyond(z: FloatArray, sigmas: float, inclusive: bool = False) -> BoolArray:
    distance = np.abs(z)
    out: BoolArray = distance >= sigmas if inclusive else distance > sigmas
    return out


def _k_of_m(z: FloatArray, beyond: float, k: int, m: int) -> BoolArray:
    """k of m consecutive points beyond `beyond` sigmas on one side, the signalling point among them."""
    up = z > beyond
    down = z < -beyond
    return ((_window_count(up, m) >= k) & up) | ((_window_count(down, m) >= k) & down)


def _same_side(z: FloatArray, length: int) -> BoolArray:
    # A point on the centre line belongs to neither side and ends a run.
    return _run_end(z > 0, length) | _run_end(z < 0, length)


def _trend(z: FloatArray, length: int) -> BoolArray:
    """`length` points in a row each strictly above (or below) the one before."""
    out = np.zeros(z.shape[0], dtype=bool)
    steps = np.diff(z)
    out[1:] = _run_end(steps > 0, length - 1) | _run_end(steps < 0, length - 1)
    return out


def _alternating(z: FloatArray, length: int) -> BoolArray:
    """`length` points in a row going up and down in turn."""
    out = np.zeros(z.shape[0], dtype=bool)
    steps = np.sign(np.diff(z))
    turns = steps[1:] * steps[:-1] < 0  # turns[j]: the steps into points j+1 and j+2 differ in sign
    out[2:] = _run_end(turns, length - 2)
    return out


@dataclass(frozen=True, slots=True)
class RunRule:
    key: str
    description: str
    test: Callable[[FloatArray], BoolArray]  # standardised values (value − centre) / sigma -> signals


NELSON_RULES: tuple[RunRule, ...] = (
    RunRule("nelson_1", "one point beyond 3 sigma", lambda z: _beyond(z, 3.0)),
    RunRule("nelson_2", "nine points in a row on the same side of the centre line", lambda z: _same_side(z, 9)),
    RunRule("nelson_3", "six points in a row steadily increasing or decreasing", lambda z: _trend(z, 6)),
    RunRule("nelson_4", "fourteen points in a row alternating up and down", lambda z: _alternating(z, 14)),
    RunRule("nelson_5", "two of three points in a row beyond 2 sigma, same side", lambda z: _k_of_m(z, 2.0, 2, 3)),
    RunRule("nelson_6", "four of five points in a row beyond 1 sigma, same side", lambda z: _k_of_m(z, 1.0, 4, 5)),
    RunRule(
        "nelson_7",
        "fifteen points in a row within 1 sigma, either side",
        lambda z: _run_end(~_beyond(z, 1.0, True), 15),
    ),
    RunRule("nelson_8", "eight points in a row beyond 1 sigma, either side", lambda z: _run_end(_beyond(z, 1.0), 8)),
)
WESTERN_ELECTRIC_RULES: tuple[RunRule, ...] = (
    RunRule("we_1", "one point beyond 3 sigma", lambda z: _beyond(z, 3.0)),
    RunRule("we_2", "two of three points in a row beyond 2 sigma, same side", lambda z: _k_of_m(z, 2.0, 2, 3)),
    RunRule("we_3", "four of five points in a row beyond 1 sigma, same side", lambda z: _k_of_m(z, 1.0, 4, 5)),
    RunRule("we_4", "eight points in a row on the same side of the centre line", lambda z: _same_side(z, 8)),
)


def apply_rules(rules: tuple[RunRule, ...], values: npt.ArrayLike, center: float, sigma: float) -> dict[str, IntArray]:
    """For each rule, the indices of the points that signal it: the last point of each pattern.

    A run that goes on signals again at every further point. "Beyond" is strict: a point exactly on
    a zone boundary is inside it.
    """
    array = _series(values, min_points=1)
    c = _finite(center, "center")
    if c is None:
        raise SpcDataError("center is required")
    z = (array - c) / _required_positive(sigma, "sigma")
    return {rule.key: np.flatnonzero(rule.test(z)) for rule in rules}


def nelson_rules(values: npt.ArrayLike, center: float, sigma: float) -> dict[str, IntArray]:
    """Nelson's eight tests; `sigma` is the standard deviation of the plotted statistic."""
    return apply_rules(NELSON_RULES, values, center, sigma)


def western_electric_rules(values: npt.ArrayLike, center: float, sigma: float) -> dict[str, IntArray]:
    """The four Western Electric rules; `sigma` is the standard deviation of the plotted statistic."""
    return apply_rules(WESTERN_ELECTRIC_RULES, values, center, sigma)


# -- Shewhart charts ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ControlChart:
    """One plotted statistic with its centre line and control limits (per point).

    `sigma` is the standard deviation of the plotted statistic, the width of the rules' zones.
    """

    statistic: str
    values: FloatArray
    center: float
    lower: FloatArray
    upper: FloatArray
    sigma: float

    def beyond_limits(self) -> IntArray:
        """Indices of the points above the upper or below the lower control limit."""
        return np.flatnonzero((self.values > self.upper) | (self.values < self.lower))

    def nelson(self) -> dict[str, IntArray]:
        return nelson_rules(self.values, self.center, self.sigma)

    def western_electric(self) -> dict[str, IntArray]:
        return western_electric_rules(self.values, self.center, self.sigma)


@dataclass(frozen=True, slots=True)
class ChartPair:
    """A location chart and its spread chart, and the process sigma estimated from the spread."""

    location: ControlChart
    spread: ControlChart
    process_sigma: float


def _flat(value: float, n: int) -> FloatArray:
    return np.full(n, float(value))


def individuals_chart(
    values: npt.ArrayLike, *, center: float | None = None, mean_moving_range: float | None = None
) -> ChartPair:
    """Individuals (I) and moving range (MR, span 2) charts; σ̂ = MR̄/d₂.

    `center` and `mean_moving_range` from an earlier (phase I) study chart new data against fixed limits.
    """
    x = _series(values)
    n = x.shape[0]
    moving = np.abs(np.diff(x))
    mr_bar = _positive(mean_moving_range, "mean_moving_range")
    mr_bar = float(moving.mean()) if mr_bar is None else mr_bar
    cc = control_constants(2)
    sigma = _nonzero_sigma(mr_bar / cc.d2, "the mean moving range")
    centre = _finite(center, "center")
    centre = float(x.mean()) if centre is None else centre
    location = ControlChart(
        "individual", x, centre, _flat(centre - 3.0 * sigma, n), _flat(centre + 3.0 * sigma, n), sigma
    )
    spread = ControlChart(
        "moving_range",
        np.concatenate([[np.nan], moving]),  # the first point has no moving range
        mr_bar,
        _flat(cc.d3_lower * mr_bar, n),
        _flat(cc.d4 * mr_bar, n),
        cc.d3 * sigma,
    )
    return ChartPair(location, spread, sigma)


def xbar_r_chart(
    subgroups: npt.ArrayLike, *, center: float | None = None, mean_range: float | None = None
) -> ChartPair:
    """x̄ and R charts of rational subgroups (rows); σ̂ = R̄/d₂, limits x̿ ± A₂R̄, D₃R̄ and D₄R̄."""
    table = _subgroups(subgroups)
    k, n = table.shape
    cc = control_constants(n)
    means = table.mean(axis=1)
    ranges = table.max(axis=1) - table.min(axis=1)
    r_bar = _positive(mean_range, "mean_range")
    r_bar = float(ranges.mean()) if r_bar is None else r_bar
    _nonzero_sigma(r_bar, "the mean range")
    centre = _finite(center, "center")
    centre = float(means.mean()) if centre is None else centre
    location = ControlChart(
        "mean", means, centre, _flat(centre - cc.a2 * r_bar, k), _flat(centre + cc.a2 * r_bar, k),
        cc.a2 * r_bar / 3.0,
    )  # fmt: skip
    spread = ControlChart(
        "range", ranges, r_bar, _flat(cc.d3_lower * r_bar, k), _flat(cc.d4 * r_bar, k), cc.d3 * r_bar / cc.d2
    )
    return ChartPair(location, spread, r_bar / cc.d2)


def xbar_s_chart(subgroups: npt.ArrayLike, *, center: float | None = None, mean_std: float | None = None) -> ChartPair:
    """x̄ and s charts of rational subgroups (rows); σ̂ = s̄/c₄, limits x̿ ± A₃s̄, B₃s̄ and B₄s̄."""
    table = _subgroups(subgroups)
    k, n = table.shape
    cc = control_constants(n)
    means = table.mean(axis=1)
    stds = table.std(axis=1, ddof=1)
    s_bar = _positive(mean_std, "mean_std")
    s_bar = float(stds.mean()) if s_bar is None else s_bar
    _nonzero_sigma(s_bar, "the mean standard deviation")
    centre = _finite(center, "center")
    centre = float(means.mean()) if centre is None else centre
    location = ControlChart(
        "mean", means, centre, _flat(centre - cc.a3 * s_bar, k), _flat(centre + cc.a3 * s_bar, k),
        cc.a3 * s_bar / 3.0,
    )  # fmt: skip
    spread = ControlChart(
        "std", stds, s_bar, _flat(cc.b3 * s_bar, k), _flat(cc.b4 * s_bar, k),
        s_bar * math.sqrt(1.0 - cc.c4 * cc.c4) / cc.c4,
    )  # fmt: skip
    return ChartPair(location, spread, s_bar / cc.c4)


def _process_sigma(x: FloatArray, sigma: float | None) -> float:
    given = _positive(sigma, "sigma")
    if given is not None:
        return given
    return _nonzero_sigma(float(np.abs(np.diff(x)).mean()) / control_constants(2).d2, "the mean moving range")


# -- EWMA and CUSUM ----------------------------------------------------------------------------


def ewma_chart(
    values: npt.ArrayLike,
    *,
    lam: float = 0.2,
    width: float = 3.0,
    target: float | None = None,
    sigma: float | None = None,
) -> ControlChart:
    """EWMA zᵢ = λxᵢ + (1 − λ)zᵢ₋₁, z₀ = target, limits target ± Lσ√(λ/(2−λ)·(1 − (1−λ)²ⁱ)).

    Without `target` the mean of the values is used; without `sigma`, MR̄/d₂ of the values.
    """
    x = _series(values)
    if not 0.0 < float(lam) <= 1.0:
        raise SpcDataError(f"lam (the EWMA weight) must be in (0, 1], got {lam!r}")
    spread = _required_positive(width, "width")
    mu = _finite(target, "target")
    mu = float(x.mean()) if mu is None else mu
    s = _process_sigma(x, sigma)
    z = np.empty_like(x)
    level = mu
    for i, value in enumerate(x.tolist()):
        level = lam * value + (1.0 - lam) * level
        z[i] = level
    period = np.arange(1, x.shape[0] + 1)
    half = spread * s * np.sqrt(lam / (2.0 - lam) * (1.0 - (1.0 - lam) ** (2 * period)))
    return ControlChart("ewma", z, mu, mu - half, mu + half, s * math.sqrt(lam / (2.0 - lam)))


@dataclass(frozen=True, slots=True)
class CusumChart:
    """Tabular CUSUM: C⁺ and C⁻ with reference value K = kσ and decision interval H = hσ.

    `run_upper`/`run_lower` count the consecutive periods each sum has been above zero (N⁺, N⁻):
    at a signal, the shift most likely began after period i − N.
    """

    upper: FloatArray
    lower: FloatArray
    run_upper: IntArray
    run_lower: IntArray
    target: float
    sigma: float
    reference: float  # K
    decision: float  # H

    kind: ClassVar[str] = "cusum"

    def signals(self) -> IntArray:
        return np.flatnonzero((self.upper > self.decision) | (self.lower > self.decision))

    def shifted_mean(self, index: int) -> float:
        """Montgomery's estimate of the new mean at a signal: μ₀ + K + C⁺/N⁺ (or μ₀ − K − C⁻/N⁻)."""
        if self.upper[index] > self.decision:
            return self.target + self.reference + float(self.upper[index]) / int(self.run_upper[index])
        if self.lower[index] > self.decision:
            return self.target - self.reference - float(self.lower[index]) / int(self.run_lower[index])
        raise SpcDataError(f"point {index} does not signal")


def cusum_chart(
    values: npt.ArrayLike, *, target: float | None = None, sigma: float | None = None, k: float = 0.5, h: float = 5.0
) -> CusumChart:
    """C⁺ᵢ = max(0, xᵢ − (μ₀ + K) + C⁺ᵢ₋₁), C⁻ᵢ = max(0, (μ₀ − K) − xᵢ + C⁻ᵢ₋₁), both starting at 0."""
    x = _series(values)
    if not (math.isfinite(float(k)) and float(k) >= 0):
        raise SpcDataError(f"k must be a number of sigmas >= 0, got {k!r}")
    interval = _required_positive(h, "h")
    mu = _finite(target, "target")
    mu = float(x.mean()) if mu is None else mu
    s = _process_sigma(x, sigma)
    reference = float(k) * s
    upper = np.empty_like(x)
    lower = np.empty_like(x)
    run_upper = np.zeros(x.shape[0], dtype=np.intp)
    run_lower = np.zeros(x.shape[0], dtype=np.intp)
    c_up = c_down = 0.0
    n_up = n_down = 0
    for i, value in enumerate(x.tolist()):
        c_up = max(0.0, value - (mu + reference) + c_up)
        c_down = max(0.0, (mu - reference) - value + c_down)
        n_up = n_up + 1 if c_up > 0 else 0
        n_down = n_down + 1 if c_down > 0 else 0
        upper[i], lower[i], run_upper[i], run_lower[i] = c_up, c_down, n_up, n_down
    return CusumChart(upper, lower, run_upper, run_lower, mu, s, reference, interval * s)


# -- capability --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capability:
    """Process capability (within-subgroup sigma) and performance (overall sigma) indices.

    With one specification limit, `cp` and `pp` are None and `cpk`/`ppk` are the one-sided ratios.
    """

    lsl: float | None
    usl: float | None
    mean: float
    sigma_within: float
    sigma_overall: float
    points: int
    cp: float | None
    cpk: float
    pp: float | None
    ppk: float


def capability(
    data: npt.ArrayLike, *, lsl: float | None = None, usl: float | None = None, sigma_within: float | None = None
) -> Capability:
    """Cp, Cpk, Pp, Ppk of individual values (1-D, σ_within = MR̄/d₂) or subgroups (rows, σ_within = R̄/d₂).

    Cp = (USL − LSL)/6σ_within, Cpk = min(USL − μ, μ − LSL)/3σ_within; Pp and Ppk the same with the
    overall sample standard deviation. `sigma_within` overrides the estimate (e.g. from a control chart).
    """
    low = _finite(lsl, "lsl")
    high = _finite(usl, "usl")
    if low is None and high is None:
        raise SpcDataError("missing specification limits: capability needs lsl, usl or both")
    if low is not None and high is not None and low >= high:
        raise SpcDataError(f"lsl ({low}) must be below usl ({high})")
    try:
        dims = np.ndim(data)
    except (TypeError, ValueError) as err:
        raise SpcDataError(f"capability data are not numeric: {err}") from err
    if dims == 2:
        table = _subgroups(data)
        values = table.reshape(-1)
        within = float((table.max(axis=1) - table.min(axis=1)).mean()) / control_constants(table.shape[1]).d2
    else:
        values = _series(data)
        within = float(np.abs(np.diff(values)).mean()) / control_constants(2).d2
    given = _positive(sigma_within, "sigma_within")
    within = given if given is not None else within
    overall = float(values.std(ddof=1))
    if overall == 0.0:
        raise SpcDataError("zero variation: every value is the same, so capability is undefined")
    _nonzero_sigma(within, "the within-subgroup sigma")
    mean = float(values.mean())

    def ratios(sigma: float) -> tuple[float | None, float]:
        sides = []
        if high is not None:
            sides.append((high - mean) / (3.0 * sigma))
        if low is not None:
            sides.append((mean - low) / (3.0 * sigma))
        potential = (high - low) / (6.0 * sigma) if high is not None and low is not None else None
        return potential, min(sides)

    cp, cpk = ratios(within)
    pp, ppk = ratios(overall)
    return Capability(low, high, mean, within, overall, int(values.shape[0]), cp, cpk, pp, ppk)
