"""CSAF 2.0 security advisories (CISA's ICS advisories among them) read into typed records.

A document becomes one `CsafAdvisory`: its id, title, dates and TLP, the product tree flattened to
`ProductEntry` rows (vendor, product, version range, product id, model numbers), the
vulnerabilities with their CVSS scores, product statuses and remediations. A document that is not
a usable CSAF advisory (truncated JSON, no product tree, a field of the wrong type, a status naming
a product the tree does not define) raises `InvalidAdvisory` with the reason; there is never a
half-read advisory. `import_directory` reads a whole feed tree (CISA's `<year>/*.json`, or a
ROLIE-style tree with its feed files beside the advisories) and says for each file whether it was
imported or refused, and why.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from iip.kernel.errors import Invalid
from iip.security.advisories.vendors import order_numbers, repair_mojibake
from iip.security.advisories.versions import VersionConstraint, parse_constraint

# Statuses that say a product has the vulnerability, and those that say it does not (CSAF 3.2.3.9).
AFFECTED_STATUSES = frozenset({"known_affected", "first_affected", "last_affected", "under_investigation"})
UNAFFECTED_STATUSES = frozenset({"fixed", "first_fixed", "known_not_affected", "recommended"})
PRODUCT_STATUSES = AFFECTED_STATUSES | UNAFFECTED_STATUSES
_VERSION_BRANCHES = frozenset({"product_version_range", "product_version"})
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
_TRAILING_RELEASE = re.compile(r"\s((?:19|20)\d\d(?:\s*R\d+)?|V\d+(?:\.\d+)+)\s*$", re.IGNORECASE)


class InvalidAdvisory(Invalid):
    """A document that cannot be read as a CSAF advisory; `reason` says why."""

    code = "invalid_advisory"

    def __init__(self, reason: str, *, source: str = "") -> None:
        super().__init__(f"{source}: {reason}" if source else reason, source=source)
        self.reason = reason
        self.source = source


@dataclass(frozen=True, slots=True)
class ProductEntry:
    """One product of the tree: a leaf branch (or a relationship) with its product id."""

    product_id: str
    vendor: str
    product: str  # the product name branches, outermost first, joined ("Mobotix P3 D24M")
    full_name: str  # the product's own full name in the advisory
    version_text: str = ""  # the version or version range branch, "" when the tree gives none
    constraint: VersionConstraint = field(default_factory=lambda: parse_constraint(""))
    model_numbers: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()  # variant names CISA wrote in the version slot (`EH2 | EH3`)


@dataclass(frozen=True, slots=True)
class CvssScore:
    version: str  # "3.0", "3.1", "4.0"
    base_score: float
    vector: str
    severity: str
    product_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Remediation:
    category: str  # vendor_fix, mitigation, workaround, none_available, no_fix_planned
    details: str
    url: str
    product_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Vulnerability:
    cve: str  # "" when the advisory names none
    cwe_id: str
    cwe_name: str
    title: str
    scores: tuple[CvssScore, ...]
    product_status: Mapping[str, tuple[str, ...]]  # status -> product ids
    remediations: tuple[Remediation, ...]

    def max_score(self, product_id: str | None = None) -> float | None:
        """The highest base score, over all scores or those naming `product_id`."""
        scores = [s.base_score for s in self.scores if product_id is None or product_id in s.product_ids]
        return max(scores) if scores else None

    def affects(self, product_id: str) -> bool:
        return any(product_id in self.product_status.get(status, ()) for status in AFFECTED_STATUSES)


@dataclass(frozen=True, slots=True)
class CsafAdvisory:
    advisory_id: str  # tracking.id, e.g. ICSA-23-012-01
    title: str
    tlp: str  # WHITE, GREEN, AMBER, RED, CLEAR; "" when not given
    initial_release: dt.datetime
    current_release: dt.datetime
    revision: str  # tracking.version
    status: str  # tracking.status: draft, interim, final
    publisher: str
    products: tuple[ProductEntry, ...]
    vulnerabilities: tuple[Vulnerability, ...]
    source: str = ""  # where it was read from

    @property
    def cves(self) -> tuple[str, ...]:
        return tuple(v.cve for v in self.vulnerabilities if v.cve)


@dataclass(frozen=True, slots=True)
class ImportResult:
    source: str
    advisory: CsafAdvisory | None = None
    error: str = ""  # why the file was refused; "" when imported

    @property
    def imported(self) -> bool:
        return self.advisory is not None


@dataclass(slots=True)
class ImportReport:
    results: list[ImportResult] = field(default_factory=list)

    @property
    def advisories(self) -> list[CsafAdvisory]:
        return [r.advisory for r in self.results if r.advisory is not None]

    @property
    def refused(self) -> list[ImportResult]:
        return [r for r in self.results if r.advisory is None]


# --- reading -------------------------------------------------------------------------------------


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidAdvisory(f"{where} must be an object, not {type(value).__name__}")
    return value


def _list(value: Any, where: str) -> Sequence[Any]:
    if not isinstance(value, list):
        raise InvalidAdvisory(f"{where} must be an array, not {type(value).__name__}")
    return value


def _text(container: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> str:
    value = container.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        shown = "missing" if value is None else f"a {type(value).__name__}"
        raise InvalidAdvisory(f"{where}.{key} must be a non-empty string, is {shown}")
    return value


def _time(container: Mapping[str, Any], key: str, where: str) -> dt.datetime:
    text = _text(container, key, where)
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as err:
        raise InvalidAdvisory(f"{where}.{key} is not a date-time: {text!r}") from err
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _ids(value: Any, where: str) -> tuple[str, ...]:
    items = _list(value, where)
    if not all(isinstance(item, str) for item in items):
        raise InvalidAdvisory(f"{where} must list product ids as strings")
    return tuple(items)


def _load(document: Mapping[str, Any] | bytes | str) -> Mapping[str, Any]:
    if isinstance(document, Mapping):
        return document
    try:
        loaded = orjson.loads(document)
    except orjson.JSONDecodeError as err:
        raise InvalidAdvisory(f"not valid JSON ({err})") from err
    return _object(loaded, "the document")


def parse_advisory(document: Mapping[str, Any] | bytes | str, *, source: str = "") -> CsafAdvisory:
    """The `CsafAdvisory` a CSAF 2.0 document states; `InvalidAdvisory` when it cannot be read."""
    try:
        return _parse(_load(document), source)
    except InvalidAdvisory as err:
        if source and not err.source:
            raise InvalidAdvisory(err.reason, source=source) from err
        raise
    except RecursionError as err:  # a product tree nested beyond reason
        raise InvalidAdvisory("product tree nested too deeply", source=source) from err


def _parse(root: Mapping[str, Any], source: str) -> CsafAdvisory:
    document = _object(root.get("document"), "document")
    csaf_version = document.get("csaf_version")
    if csaf_version != "2.0":
        raise InvalidAdvisory(f"document.csaf_version must be '2.0', is {csaf_version!r}")
    tracking = _object(document.get("tracking"), "document.tracking")
    if "product_tree" not in root:
        raise InvalidAdvisory("no product_tree: the advisory names no products")
    products = _products(_object(root["product_tree"], "product_tree"))
    known = {p.product_id for p in products}
    vulnerabilities = tuple(
        _vulnerability(_object(v, f"vulnerabilities[{i}]"), f"vulnerabilities[{i}]", known)
        for i, v in enumerate(_list(root.get("vulnerabilities", []), "vulnerabilities"))
    )
    distribution = document.get("distribution") or {}
    tlp = _object(distribution, "document.distribution").get("tlp") or {}
    publisher = _object(document.get("publisher") or {}, "document.publisher")
    return CsafAdvisory(
        advisory_id=_text(tracking, "id", "document.tracking"),
        title=_text(document, "title", "document"),
        tlp=str(_object(tlp, "document.distribution.tlp").get("label") or ""),
        initial_release=_time(tracking, "initial_release_date", "document.tracking"),
        current_release=_time(tracking, "current_release_date", "document.tracking"),
        revision=str(tracking.get("version") or ""),
        status=str(tracking.get("status") or ""),
        publisher=str(publisher.get("name") or ""),
        products=products,
        vulnerabilities=vulnerabilities,
        source=source,
    )


def _products(tree: Mapping[str, Any]) -> tuple[ProductEntry, ...]:
    entries: list[ProductEntry] = []
    for index, branch in enumerate(_list(tree.get("branches", []), "product_tree.branches")):
        entries.extend(_walk(_object(branch, f"product_tree.branches[{index}]"), [], "product_tree.branches"))
    for index, full in enumerate(_list(tree.get("full_product_names", []), "product_tree.full_product_names")):
        entries.append(_entry(_object(full, f"product_tree.full_product_names[{index}]"), [], "full_product_names"))
    by_id = {e.product_id: e for e in entries}
    for index, relation in enumerate(_list(tree.get("relationships", []), "product_tree.relationships")):
        entries.append(_relationship(_object(relation, f"product_tree.relationships[{index}]"), by_id))
    if not entries:
        raise InvalidAdvisory("product_tree defines no products")
    return tuple(entries)


def _walk(branch: Mapping[str, Any], path: list[tuple[str, str]], where: str) -> Iterator[ProductEntry]:
    category = _text(branch, "category", where)
    name = _text(branch, "name", where)
    here = [*path, (category, name)]
    if "product" in branch:
        yield _entry(_object(branch["product"], f"{where}.product"), here, where)
    for index, child in enumerate(_list(branch.get("branches", []), f"{where}.branches")):
        yield from _walk(_object(child, f"{where}.branches[{index}]"), here, f"{where}.branches[{index}]")


def _entry(product: Mapping[str, Any], path: list[tuple[str, str]], where: str) -> ProductEntry:
    product_id = _text(product, "product_id", f"{where}.product")
    full_name = repair_mojibake(_text(product, "name", f"{where}.product"))
    vendor = next((repair_mojibake(n).strip() for c, n in path if c == "vendor"), "")
    names = [repair_mojibake(n).strip() for c, n in path if c in {"product_family", "product_name"}]
    version_text = next((n for c, n in reversed(path) if c in _VERSION_BRANCHES), "")
    constraint = parse_constraint(version_text, release=_trailing_release(names[-1] if names else ""))
    variants: tuple[str, ...] = ()
    if constraint.names_no_version:  # CISA put variant names in the version slot
        variants = tuple(v.strip(" ,") for v in re.split(r"[|,]|\band\b", version_text) if v.strip(" ,"))
    identification = product.get("product_identification_helper") or {}
    models = [
        str(m) for m in _object(identification, f"{where}.product_identification_helper").get("model_numbers", [])
    ]
    models += [n for n in order_numbers(full_name) if n not in models]
    return ProductEntry(
        product_id=product_id,
        vendor=vendor,
        product=" ".join(names) or full_name,
        full_name=full_name,
        version_text=version_text,
        constraint=constraint,
        model_numbers=tuple(models),
        variants=variants,
    )


def _trailing_release(name: str) -> str:
    """The release a product name ends in (`Wonderware Historian 2014 R2` -> `2014 R2`), or ""."""
    match = _TRAILING_RELEASE.search(name)
    return match.group(1) if match else ""


def _relationship(relation: Mapping[str, Any], by_id: Mapping[str, ProductEntry]) -> ProductEntry:
    """`X installed on Y`: the platform `Y`'s product, with the component `X`'s versions."""
    full = _object(relation.get("full_product_name"), "relationship.full_product_name")
    component = by_id.get(_text(relation, "product_reference", "relationship"))
    platform = by_id.get(_text(relation, "relates_to_product_reference", "relationship"))
    if component is None or platform is None:
        raise InvalidAdvisory("a relationship refers to a product the tree does not define")
    return ProductEntry(
        product_id=_text(full, "product_id", "relationship.full_product_name"),
        vendor=platform.vendor or component.vendor,
        product=platform.product,
        full_name=repair_mojibake(_text(full, "name", "relationship.full_product_name")),
        version_text=component.version_text,
        constraint=component.constraint,
        model_numbers=platform.model_numbers,
    )


def _vulnerability(vulnerability: Mapping[str, Any], where: str, known: set[str]) -> Vulnerability:
    statuses: dict[str, tuple[str, ...]] = {}
    for status, ids in _object(vulnerability.get("product_status", {}), f"{where}.product_status").items():
        if status not in PRODUCT_STATUSES:
            raise InvalidAdvisory(f"{where}.product_status has an unknown status {status!r}")
        statuses[status] = _ids(ids, f"{where}.product_status.{status}")
        unknown = sorted(set(statuses[status]) - known)
        if unknown:
            raise InvalidAdvisory(f"{where}.product_status.{status} names undefined products {unknown[:3]}")
    cwe = _object(vulnerability.get("cwe") or {}, f"{where}.cwe")
    return Vulnerability(
        cve=_text(vulnerability, "cve", where, required=False),
        cwe_id=str(cwe.get("id") or ""),
        cwe_name=str(cwe.get("name") or ""),
        title=_text(vulnerability, "title", where, required=False),
        scores=tuple(_scores(_list(vulnerability.get("scores", []), f"{where}.scores"), where)),
        product_status=statuses,
        remediations=tuple(
            _remediation(_object(r, f"{where}.remediations[{i}]"), f"{where}.remediations[{i}]")
            for i, r in enumerate(_list(vulnerability.get("remediations", []), f"{where}.remediations"))
        ),
    )


def _scores(scores: Sequence[Any], where: str) -> Iterator[CvssScore]:
    for index, item in enumerate(scores):
        score = _object(item, f"{where}.scores[{index}]")
        products = _ids(score.get("products", []), f"{where}.scores[{index}].products")
        for key in ("cvss_v4", "cvss_v3", "cvss_v2"):
            if key not in score:
                continue
            cvss = _object(score[key], f"{where}.scores[{index}].{key}")
            base = cvss.get("baseScore")
            if isinstance(base, bool) or not isinstance(base, int | float) or not 0 <= base <= 10:
                raise InvalidAdvisory(f"{where}.scores[{index}].{key}.baseScore must be a number 0-10, is {base!r}")
            yield CvssScore(
                version=str(cvss.get("version") or key[-1]),
                base_score=float(base),
                vector=str(cvss.get("vectorString") or ""),
                severity=str(cvss.get("baseSeverity") or ""),
                product_ids=products,
            )


def _remediation(remediation: Mapping[str, Any], where: str) -> Remediation:
    return Remediation(
        category=_text(remediation, "category", where),
        details=_text(remediation, "details", where),
        url=_text(remediation, "url", where, required=False),
        product_ids=_ids(remediation.get("product_ids", []), f"{where}.product_ids"),
    )


# --- files and feeds -----------------------------------------------------------------------------


def read_advisory(path: Path) -> CsafAdvisory:
    """The advisory in the file at `path`; `InvalidAdvisory` when it cannot be read."""
    source = str(path)
    try:
        if path.stat().st_size > MAX_DOCUMENT_BYTES:
            raise InvalidAdvisory(f"larger than {MAX_DOCUMENT_BYTES} bytes", source=source)
        data = path.read_bytes()
    except OSError as err:
        raise InvalidAdvisory(f"cannot read the file ({err.strerror})", source=source) from err
    return parse_advisory(data, source=source)


def _is_feed_file(path: Path) -> bool:
    """ROLIE feeds, provider metadata and service documents sit beside advisories in a CSAF tree."""
    name = path.name.lower()
    return name in {"provider-metadata.json", "service.json", "category.json"} or "feed" in name


def advisory_files(root: Path) -> list[Path]:
    """Every advisory file under `root` (a plain `<year>/*.json` tree or a ROLIE-style one), in order."""
    return sorted(p for p in root.rglob("*.json") if p.is_file() and not _is_feed_file(p))


def import_directory(root: Path) -> ImportReport:
    """Reads every advisory under `root`; each file is imported or refused with the reason."""
    report = ImportReport()
    for path in advisory_files(root):
        try:
            report.results.append(ImportResult(str(path), read_advisory(path)))
        except InvalidAdvisory as err:
            report.results.append(ImportResult(str(path), error=err.reason))
    return report
