"""Vendor version strings and the version constraints advisories state about them.

ICS vendors number releases in their own ways (`V2.1 SP3 HF1`, `1.2.3a`, `2021.06`, `2014 R2`,
`V16 Update 4`, `R3.05.00`), and CISA's advisories state the affected range either as a `vers:` URI
(`vers:all/<V4.3.8`, `vers:all/>=V7.80<V9.40`) or as free text (`<= V2.1`, `All versions`,
`versions prior to 4.3.1`, `V3.0 and prior`, `1.0 to 1.6`, `firmware 4.x`, `>= 1.0 | <= 1.32`).

`parse_version` turns a version string into a `Version` whose `key` orders the way these schemes
mean: numbers numerically, trailing zeros ignored (`2.1` == `2.1.0`), pre-releases (`beta`, `rc`)
before the release, and service packs, updates, hotfixes, patches, builds and letter suffixes after
the release but before the next numbered release (`V2.1` < `V2.1 HF1` < `V2.1 SP1` < `V2.1.1`).

`parse_constraint` turns a range text into a `VersionConstraint`: a union of intervals, plus any
condition the text adds (`with option G28`) that no version can decide. A text that names no
version at all (CISA sometimes puts a product variant in the version slot) is `names_no_version`;
a text that has version words but no readable range is `understood = False`, never a guess.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import total_ordering

# Ranks of the elements of a version key: pre-release < end of version < post-release < number.
_PRE = 0
_END = 1
_POST = 2
_NUMBER = 3

# Post-release words, in the order vendors stack them (a hotfix is below an update, which is
# below a service pack on the same release).
_POST_WORDS: dict[str, int] = {
    "build": 1,
    "bn": 1,
    "b": 1,
    "patch": 2,
    "p": 2,
    "hf": 2,
    "hotfix": 2,
    "hotfixrev": 2,
    "fix": 2,
    "cu": 3,
    "u": 3,
    "upd": 3,
    "update": 3,
    "qu": 3,
    "mp": 3,
    "r": 4,
    "rev": 4,
    "release": 4,
    "sp": 5,
    "servicepack": 5,
}
_PRE_WORDS: dict[str, int] = {"dev": 0, "alpha": 1, "a": 1, "beta": 2, "pre": 3, "preview": 3, "rc": 4}
_UNKNOWN_WORD = 0  # unknown words sort with the letter suffixes (`1.2.3a`), below builds
_PREFIXES = ("version", "ver", "rev", "fw", "sv", "vs", "v", "r")  # SV/VS: Schneider's software versions
_ELEMENT = re.compile(r"\d+|[a-z]+")
_SERVICE_PACK = re.compile(r"service\s+pack", re.IGNORECASE)

Element = tuple[int, int, str]


@total_ordering
@dataclass(frozen=True, slots=True)
class Version:
    """A vendor version, ordered by `key`; `text` is what the vendor wrote."""

    text: str
    key: tuple[Element, ...]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and compare_keys(self.key, other.key) == 0

    def __lt__(self, other: Version) -> bool:
        return compare_keys(self.key, other.key) < 0

    def __hash__(self) -> int:
        return hash(_trimmed(self.key))

    def __str__(self) -> str:
        return self.text


def _trimmed(key: tuple[Element, ...]) -> tuple[Element, ...]:
    end = len(key)
    while end and key[end - 1][0] == _END:
        end -= 1
    return key[:end]


def compare_keys(left: tuple[Element, ...], right: tuple[Element, ...]) -> int:
    """-1, 0 or 1; the shorter key reads as followed by end-of-version elements."""
    pad: Element = (_END, 0, "")
    for index in range(max(len(left), len(right))):
        a = left[index] if index < len(left) else pad
        b = right[index] if index < len(right) else pad
        if a != b:
            return -1 if a < b else 1
    return 0


def _strip_prefix(text: str) -> str:
    lowered = text.strip().lower()
    for prefix in _PREFIXES:
        if lowered.startswith(prefix):
            rest = lowered[len(prefix) :].lstrip(" .")
            if rest[:1].isdigit():
                return rest
    return lowered


def parse_version(text: str) -> Version | None:
    """The `Version` a vendor string names, or None when it holds no number (nor a revision letter)."""
    body = _SERVICE_PACK.sub("sp", _strip_prefix(text))
    elements = _ELEMENT.findall(body)
    if not any(element.isdigit() for element in elements):
        return _revision_letters(text)
    key: list[Element] = []
    release = True  # still inside the leading run of numbers, where trailing zeros do not count
    for element in elements:
        if element.isdigit():
            key.append((_NUMBER, int(element), ""))
            continue
        if release:
            _drop_trailing_zeros(key)
            release = False
        key.append(_word_element(element, follows_number=bool(key) and key[-1][0] == _NUMBER))
    if release:
        _drop_trailing_zeros(key)
    return Version(text.strip(), tuple(key))


def _drop_trailing_zeros(key: list[Element]) -> None:
    while len(key) > 1 and key[-1] == (_NUMBER, 0, "") and key[-2][0] == _NUMBER:
        key.pop()


def _word_element(word: str, *, follows_number: bool) -> Element:
    if word in _POST_WORDS and not (follows_number and len(word) == 1 and word not in {"u", "p", "r"}):
        return (_POST, _POST_WORDS[word], "")
    if word in _PRE_WORDS and len(word) > 1:
        return (_PRE, _PRE_WORDS[word], "")
    return (_POST, _UNKNOWN_WORD, word)


# --- constraints ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Interval:
    """Versions between `lower` and `upper` (None: unbounded on that side)."""

    lower: Version | None = None
    lower_inclusive: bool = True
    upper: Version | None = None
    upper_inclusive: bool = False

    def contains(self, version: Version) -> bool:
        if self.lower is not None:
            order = compare_keys(version.key, self.lower.key)
            if order < 0 or (order == 0 and not self.lower_inclusive):
                return False
        if self.upper is not None:
            order = compare_keys(version.key, self.upper.key)
            if order > 0 or (order == 0 and not self.upper_inclusive):
                return False
        return True

    def __str__(self) -> str:
        if self.lower is None and self.upper is None:
            return "*"
        if self.lower is not None and self.upper is not None and self.lower == self.upper:
            return f"={self.lower}"
        parts = []
        if self.lower is not None:
            parts.append((">=" if self.lower_inclusive else ">") + str(self.lower))
        if self.upper is not None:
            parts.append(("<=" if self.upper_inclusive else "<") + str(self.upper))
        return " ".join(parts)


ALL_VERSIONS = (Interval(),)


@dataclass(frozen=True, slots=True)
class VersionConstraint:
    """What an advisory says about versions: a union of `intervals`, read from `text`.

    `condition` is what the text adds that a version cannot decide (`with option G28`, `BIOS`);
    `names_no_version` marks a text with no version in it at all (then every version is meant);
    `understood` is False when the text has versions but no range could be read from it.
    """

    text: str
    intervals: tuple[Interval, ...] = ALL_VERSIONS
    condition: str = ""
    names_no_version: bool = False
    understood: bool = True

    @property
    def all_versions(self) -> bool:
        return self.understood and any(i.lower is None and i.upper is None for i in self.intervals)

    def contains(self, version: Version) -> bool:
        return self.understood and any(interval.contains(version) for interval in self.intervals)

    def __str__(self) -> str:
        return " | ".join(str(i) for i in self.intervals) if self.understood else f"? {self.text}"


MAX_RANGE_TEXT = 300
_MONTHS = {name.lower(): number for number, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): number for number, name in enumerate(calendar.month_abbr) if name})
_DATE_WORDS = re.compile(
    r"(?P<month>[a-z]+)[\s/.-]+(?P<day>\d{1,2})(?:st|nd|rd|th)?[\s,/.-]+(?P<year>\d{4})"
    r"|(?P<day2>\d{1,2})[\s/.-]+(?P<month2>[a-z]+)[\s/.-]+(?P<year2>\d{4})"
    r"|(?P<month3>[a-z]+)[\s,]+(?P<year3>\d{4})",
    re.IGNORECASE,
)
_ALL_WORDS = re.compile(
    r"^(?:all|any)(?:\s+(?:bios|firmware|software|hardware|fw|sw|released|supported|current))?"
    r"\s+(?:versions?|releases?|revisions?|models?)\b|^\*|^all$|^versions?\b|^(?:bios|firmware|fw)\b",
    re.IGNORECASE,
)
_OPERATOR = re.compile(r"(<=|>=|=<|=>|<|>|==|=)")
_PARENTHESES = re.compile(r"\s*\(([^()]*)\)")
_VERSIONISH = re.compile(r"(?<![a-z])(?:v|r|rev\.?\s*)?\d[\w.\-()/]*", re.IGNORECASE)
_VERSION_WORDS = {
    *_POST_WORDS,
    *_PRE_WORDS,
    *("service", "pack", "version", "ver", "edition", "firmware", "bios", "and", "only", "including", "excluding"),
}
_VERSION_LIST = re.compile(r"^v?\.?\d+(?:\.\d+)+(?:\s+v?\.?\d+(?:\.\d+)+)+$", re.IGNORECASE)
_REVISION_LETTERS = re.compile(r"^(?:rev\.?\s*)?(?P<letters>[A-Za-z]{1,2})$", re.IGNORECASE)
_WILDCARD = re.compile(r"^(?P<base>(?:v|r)?\d+(?:\.\d+)*)\.[x*]$", re.IGNORECASE)
_TEXT_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), replacement)
    for pattern, replacement in (
        (r"\bbetween\s+(.+?)\s*\(including\)\s+and\s+(.+?)\s*\(excluding\)", r">= \1 | < \2"),
        (r"^(.+?)\s*\(including\)\s+and\s+(.+?)\s*\(excluding\)", r">= \1 | < \2"),
        (r"\bbetween\s+(.+?)\s+and\s+(.+)", r">= \1 | <= \2"),
        (r"\b(?:prior to|before|earlier than|older than|lower than|less than|below|up to but not including)\s+", "< "),
        (r"\b(?:up to(?: and including)?|through|until)\s+", "<= "),
        (r"\b(?:later than|newer than|after|above|greater than|higher than)\s+", "> "),
        (r"\b(?:from|since|starting(?: with| from)?)\s+", ">= "),
        (r"^(.+?)\s+(?:and|or)\s+(?:prior|earlier|before|older|below|lower)(?:\s+versions?)?\b", r"<= \1"),
        (r"^(.+?)\s+(?:and|or)\s+(?:later|newer|after|above|higher)(?:\s+versions?)?\b", r">= \1"),
        (r"^(\S+)\s+(?:to|-|through)\s+(\S+)$", r">= \1 | <= \2"),
        (r"^(\S+)\s*-\s+(\d\S*)$|^(\S+)\s+-\s*(\d\S*)$", r">= \1\3 | <= \2\4"),
        (r"\s+and\s+(?=[<>=])", " | "),
    )
)


def _strip_vers(text: str) -> str:
    """The constraint part of a `vers:` URI (`vers:all/<V4.3.8` -> `<V4.3.8`)."""
    scheme_and_rest = text[len("vers:") :]
    _, _, constraints = scheme_and_rest.partition("/")
    return constraints


def _month_date(match: re.Match[str]) -> str | None:
    month = match["month"] or match["month2"] or match["month3"]
    year = match["year"] or match["year2"] or match["year3"]
    day = match["day"] or match["day2"] or "1"
    number = _MONTHS.get(month.lower().rstrip("."))
    return f"{year}.{number:02d}.{int(day):02d}" if number else None


def _dates_as_versions(text: str) -> str:
    """`April/20/2023` and `january 20 2017` become `2023.04.20`: a date orders like a version."""

    def replace(match: re.Match[str]) -> str:
        return _month_date(match) or match.group(0)

    text = _DATE_WORDS.sub(replace, text)
    return re.sub(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b", lambda m: f"{m[3]}.{int(m[1]):02d}.{int(m[2]):02d}", text)


@dataclass(slots=True)
class _Bound:
    operator: str
    version: Version


@dataclass(slots=True)
class _Reading:
    bounds: list[_Bound] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)


def parse_constraint(text: str, *, release: str = "") -> VersionConstraint:
    """The `VersionConstraint` a `vers:` URI or CISA free-text range states.

    `release` is the release the product's name ends in (`Historian 2014 R2`): bounds that start
    with a service pack or patch (`< SP1 P01`) are read as that release's (`< 2014 R2 SP1 P01`).
    """
    raw = text
    if len(text) > MAX_RANGE_TEXT:  # no range is written that long; prose is not read as one
        return VersionConstraint(raw, intervals=(), condition=text[:MAX_RANGE_TEXT], understood=False)
    body = text.strip().strip(".,;").strip()
    if body.lower().startswith("vers:"):
        body = _strip_vers(body)
    body = body.replace("_", " ").replace("\u2026", "...")
    body = _ALL_WORDS.sub("", body).strip(" :,")
    body, conditions = _take_conditions(body)
    body = body.strip(" :,")
    if not body or body in {"*", "all"}:
        return VersionConstraint(raw, condition="; ".join(conditions))
    body = _dates_as_versions(body)
    for pattern, replacement in _TEXT_RULES:
        body = pattern.sub(replacement, body)
    if _names_no_version(body):
        return VersionConstraint(raw, condition="; ".join(conditions), names_no_version=True)
    reading = _Reading(conditions=conditions)
    for clause in re.split(r"\s*(?:\||,|;|\band\b|\bor\b)\s*", body):
        if clause.strip():
            _read_clause(clause.strip(), reading)
    if release:
        reading.bounds = [_on_release(bound, release) for bound in reading.bounds]
    intervals = _intervals(reading.bounds)
    if release:
        intervals = _within_release(intervals, release)
    condition = "; ".join(c for c in reading.conditions if c)
    if not intervals:
        return VersionConstraint(raw, intervals=(), condition=condition, understood=False)
    return VersionConstraint(raw, intervals=tuple(intervals), condition=condition)


def _on_release(bound: _Bound, release: str) -> _Bound:
    if not bound.version.key or bound.version.key[0][0] != _POST:
        return bound
    version = parse_version(f"{release} {bound.version.text}")
    return _Bound(bound.operator, version) if version is not None else bound


def _within_release(intervals: list[Interval], release: str) -> list[Interval]:
    """`SIMATIC WinCC V7.4` with `< V7.4 SP1 Update 19`: the range starts at the release the name states."""
    line = parse_version(release)
    if line is None:
        return intervals
    size = len(line.key)
    return [
        Interval(line, True, i.upper, i.upper_inclusive)
        if i.lower is None and i.upper is not None and i.upper.key[:size] == line.key
        else i
        for i in intervals
    ]


def _take_conditions(body: str) -> tuple[str, list[str]]:
    """Parenthesised remarks and `with ...`/`on ...` tails are conditions, not versions.

    A parenthesis glued to a version (`02.07.07(10)`, `15.2(5)EA`) is part of it and stays.
    """
    conditions: list[str] = []

    def take(match: re.Match[str]) -> str:
        inner = match.group(1).strip()
        if match.group(0)[:1] != " " and re.fullmatch(r"[\w.]+", inner):
            return match.group(0)
        lowered = inner.lower()
        if lowered in {"including", "excluding"}:
            return match.group(0)
        conditions.append(inner)
        return " "

    body = _PARENTHESES.sub(take, body).strip()
    tail = re.search(
        r"(?:^|\s+)(?:with|when|using|on|in|installed|where|only|that|for|if|except|excluding|distributed|shipped)\b.*$",
        body,
        re.IGNORECASE,
    )
    if tail is not None and (tail.start() == 0 or re.search(r"\d", body[: tail.start()]) or body[0] == "*"):
        conditions.append(tail.group(0).strip())
        body = body[: tail.start()]
    return body.strip(), conditions


def _names_no_version(body: str) -> bool:
    """True for a text with no operator that names a product variant (`Intel XMM71xx`, `MMT-508 MiniMed pump`)."""
    if _OPERATOR.search(body):
        return False
    if not _VERSIONISH.search(body):
        return True
    words = {word.lower() for word in re.findall(r"[A-Za-z]{3,}", body)}
    return bool(words - _VERSION_WORDS)


def _read_clause(clause: str, reading: _Reading) -> None:
    match = re.match(r"^(.*?)(<=|>=|=<|=>|==|<|>|=)\s*(.+)$", clause)
    operator, rest = ("=", clause) if match is None else (match[2], match[3])
    if match is not None and match[1].strip():
        reading.conditions.append(match[1].strip())  # `NMC2 <= 6.9.6`: the part before the operator
    operator = {"=<": "<=", "=>": ">=", "==": "="}.get(operator, operator)
    if _VERSION_LIST.match(rest):  # `<V33.017_V34.014_V35.013`: one bound per release line
        for item in rest.split():
            _read_bound(operator, item, reading)
        return
    for inner in _OPERATOR.split(rest):  # `>=V7.80<V9.40`: two bounds with no separator
        if inner in {"<=", ">=", "<", ">", "=", "=<", "=>", "=="}:
            operator = {"=<": "<=", "=>": ">=", "==": "="}.get(inner, inner)
            continue
        _read_bound(operator, inner.strip(), reading)


def _read_bound(operator: str, text: str, reading: _Reading) -> None:
    if not text:
        return
    if text in {"*", "x"}:
        reading.bounds.append(_Bound(">=", Version("0", ((_NUMBER, 0, ""),))))
        return
    words, version_text = _split_leading_words(text)
    if words:
        reading.conditions.append(words)
    wildcard = _WILDCARD.match(version_text)
    if wildcard:
        _read_wildcard(operator, wildcard["base"], reading)
        return
    version = parse_version(version_text)
    if version is None:
        reading.conditions.append(text)
        return
    reading.bounds.append(_Bound(operator, version))


def _revision_letters(text: str) -> Version | None:
    """Hardware revisions named by letters (`<= W`, `<= BF`) order A < ... < Z < AA."""
    match = _REVISION_LETTERS.match(text.strip())
    if match is None:
        return None
    value = 0
    for letter in match["letters"].upper():
        value = value * 26 + ord(letter) - ord("A") + 1
    return Version(text.strip(), ((_NUMBER, value, ""),))


def _split_leading_words(text: str) -> tuple[str, str]:
    """`CPCI85 V05.11` -> (`CPCI85`, `V05.11`); `ROS V5.0.1` -> (`ROS`, `V5.0.1`); `V2.1 SP3` unchanged."""
    tokens = text.split()
    index = 0
    while index < len(tokens) - 1 and not _starts_version(tokens[index]):
        index += 1
    return " ".join(tokens[:index]), " ".join(tokens[index:])


def _starts_version(token: str) -> bool:
    """`V05.11`, `R3.05`, `2010`, `SP1`, `HF2` start a version; `CPCI85`, `ROS`, `WinCC` do not."""
    if re.match(r"^(?:v|r|rev|ver|version)?\.?\d", token, re.IGNORECASE):
        return True
    letters = re.match(r"^([a-z]+)\d", token.lower())
    return letters is not None and letters.group(1) in _POST_WORDS


def _read_wildcard(operator: str, base: str, reading: _Reading) -> None:
    """`4.x`: [4, 5); `<= 7.x`: < 8; `< 7.x`: < 7; `>= 7.x`: >= 7."""
    low = parse_version(base)
    numbers = [int(n) for n in re.findall(r"\d+", base)]
    numbers[-1] += 1
    high = parse_version(".".join(str(n) for n in numbers))
    if low is None or high is None:
        return
    if operator in {"=", ">="}:
        reading.bounds.append(_Bound(">=", low))
    if operator in {"=", "<="}:
        reading.bounds.append(_Bound("<", high))
    if operator == "<":
        reading.bounds.append(_Bound("<", low))
    if operator == ">":
        reading.bounds.append(_Bound(">=", high))


def _intervals(bounds: list[_Bound]) -> list[Interval]:
    """Pairs a lower bound with the upper bound after it; lone bounds and exact versions stand alone.

    Several lone upper bounds (`<= 4.2.21 | <= 5.0.27 | <= 5.1.19`) name release lines: each but the
    lowest starts at its own line (`5.0.27` -> from `5.0`), so later lines do not swallow earlier ones.
    """
    intervals: list[Interval] = []
    pending: _Bound | None = None
    for bound in bounds:
        if bound.operator in {">", ">="}:
            if pending is not None:
                intervals.append(Interval(pending.version, pending.operator == ">="))
            pending = bound
        elif bound.operator in {"<", "<="}:
            lower = pending.version if pending else None
            inclusive = pending.operator == ">=" if pending else True
            intervals.append(Interval(lower, inclusive, bound.version, bound.operator == "<="))
            pending = None
        else:
            intervals.append(Interval(bound.version, True, bound.version, True))
    if pending is not None:
        intervals.append(Interval(pending.version, pending.operator == ">="))
    return release_lines(intervals)


def release_lines(intervals: Sequence[Interval]) -> list[Interval]:
    """Open-below intervals that name release lines (`<= 4.2.21`, `<= 5.0.27`) start at their own line.

    The lowest keeps no lower bound; each other one starts where its release line does (`5.0.27`
    -> from `5.0`, `V4.8 SP3` -> from `V4.8`), so a later line does not swallow the fixed versions
    of an earlier one.
    """
    open_below = [i for i in intervals if i.lower is None and i.upper is not None]
    if len(open_below) < 2:
        return list(intervals)
    lowest = min(open_below, key=lambda i: i.upper or Version("", ()))
    result = []
    for interval in intervals:
        line = _release_line(interval.upper) if interval.upper is not None else None
        if interval in open_below and interval is not lowest and line is not None:
            result.append(Interval(line, True, interval.upper, interval.upper_inclusive))
        else:
            result.append(interval)
    return result


def _release_line(version: Version) -> Version | None:
    """`5.0.27` -> `5.0`; `4.5.4SP` -> `4.5`; `V4.7 SP6 HF5` -> `4.7`; `2017 Update 2` -> `2017`;
    `U61` -> `U`; `10` -> None."""
    key = version.key
    start = 0
    while start < len(key) and key[start][0] != _NUMBER:
        start += 1
    end = start
    while end < len(key) and key[end][0] == _NUMBER:
        end += 1
    if end == len(key) or end - start > 2:  # `5.0.27`, `4.5.4SP`: the line is all but the last number
        end -= 1
    if end <= 0:
        return None
    line = key[:end]
    return Version(f"line of {version.text}", line)
