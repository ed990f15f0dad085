"""Which assets of an inventory the advisories concern, and why.

An asset is its vendor, product, model and firmware version (`MatchableAsset`). `AdvisoryIndex`
indexes every product entry of every advisory by normalised vendor, then by product token and by
order number, so a whole inventory is matched by looking up each asset's few candidates instead of
comparing it with every product of every advisory.

An asset matches a product entry when the vendors agree, the products agree (`product_agreement`)
and the asset's version lies in the entry's range. The match is `AFFECTED`; it is only
`POSSIBLY_AFFECTED` when the asset's version is unknown or not comparable, when the advisory's range
could not be read, or when the advisory lists the product as under investigation. An asset at a
version the advisory itself lists as fixed or not affected is not matched. Each match carries the
advisory, the product entry, the CVEs, the highest CVSS base score, the remediations and the
evidence for vendor, product and version.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from iip.security.advisories.csaf import CsafAdvisory, ProductEntry, Remediation
from iip.security.advisories.vendors import (
    model_number_key,
    product_alternatives,
    product_tokens,
    vendor_key,
    vendor_keys,
    word_set,
)
from iip.security.advisories.versions import Version, VersionConstraint, parse_version, release_lines

# Words that only say what kind of thing a product is: an inventory may write them where an
# advisory does not (`S7-1500 PLC` vs `S7-1500 CPU family`). Any other word names a variant
# (`MFP`, `RNA`, `OA`, `Software Controller`) and must agree.
LOOSE_WORDS = word_set(
    "cpu cpus plc plcs controller controllers switch switches router routers module modules unit "
    "units station stations panel panels terminal terminals card cards adapter adapters interface "
    "interfaces processor processors drive drives inverter inverters camera cameras industrial "
    "ethernet managed communication communications network networking automation control hmi touch "
    "display monitor recorder recorders meter meters relay relays protection system systems equipment "
    "hardware thermostat thermostats radio radios"
)
MAX_LOOSE_WORDS = 3  # descriptive words an advisory may add to what the inventory says
# Words that make another product or edition of the same line; an inventory's extra brand word
# (`Rosemount GC370XA` for the advisory's `GC370XA`) may be missing from an advisory, these may not.
DISTINGUISHING_WORDS = word_set(
    "siplus software sdk simulator simulation toolkit runtime server client cloud mobile virtual "
    "emulator gateway safety redundant edge app unified professional advanced basic lite express plus "
    "pro enterprise standard premium compact mini micro small large web"
)


class MatchStatus(StrEnum):
    AFFECTED = "affected"
    POSSIBLY_AFFECTED = "possibly_affected"  # the evidence cannot decide: the version is unknown, say


@dataclass(frozen=True, slots=True)
class MatchableAsset:
    """What an inventory knows of an asset; "" for what it does not know."""

    id: str
    vendor: str
    product: str
    model: str = ""
    firmware_version: str = ""


@dataclass(frozen=True, slots=True)
class MatchEvidence:
    vendor: str  # e.g. "'Siemens AG' is 'Siemens' (siemens)"
    product: str  # e.g. "tokens s7 1500 cpu 1518 4 pn dp name 'SIMATIC S7-1500 CPU 1518-4 PN/DP'"
    version: str  # e.g. "V2.8.3 in <V2.9.2"


@dataclass(frozen=True, slots=True)
class AdvisoryMatch:
    asset_id: str
    advisory_id: str
    advisory_title: str
    product: ProductEntry  # the most specific entry of the advisory the asset matched
    status: MatchStatus
    cves: tuple[str, ...]
    max_cvss: float | None
    remediations: tuple[Remediation, ...]
    evidence: MatchEvidence


@dataclass(frozen=True, slots=True)
class _Entry:
    advisory: CsafAdvisory
    product: ProductEntry
    vendors: frozenset[str]
    token_sets: tuple[frozenset[str], ...]  # the product's name, and each product or variant it lists
    constraint: VersionConstraint  # the entry's range, read together with its siblings' release lines
    affected: bool  # some vulnerability lists it as affected (or under investigation)
    unaffected: bool  # some vulnerability lists it as fixed or not affected
    investigating: bool  # listed only as under investigation
    model_keys: frozenset[str]  # its order numbers, as `model_number_key` writes them
    cves: tuple[str, ...]  # of the vulnerabilities that affect it
    max_cvss: float | None
    remediations: tuple[Remediation, ...]  # those naming it


@dataclass(frozen=True, slots=True)
class _Candidate:
    entry: _Entry
    specificity: int
    by_model: bool  # the asset's model is one of the entry's order numbers
    status: MatchStatus | None  # None: the asset's version is outside the entry's range


def product_agreement(asset_product: frozenset[str], asset_model: frozenset[str], entry: frozenset[str]) -> int | None:
    """How many tokens an asset and a product entry share, or None when they name different products.

    Every token of the entry must be in the asset's product or model, and every token of the
    asset's product in the entry. Two exceptions, both only when the two already share a model
    number (a number of two or more digits) or at least two tokens: up to `MAX_LOOSE_WORDS`
    descriptive `LOOSE_WORDS` on either side, and one brand word of four or more letters the
    inventory adds (`Rosemount`, `Illustra`). Every other token (numbers, variant letters such as
    the `F` of `CPU 1518F`, `DISTINGUISHING_WORDS`) must agree.
    """
    if not asset_product or not entry:
        return None
    asset = asset_product | asset_model
    extra_in_entry = entry - asset
    if len(extra_in_entry) > MAX_LOOSE_WORDS or not extra_in_entry <= LOOSE_WORDS:
        return None
    missing_in_entry = asset_product - entry
    brand_words = missing_in_entry - LOOSE_WORDS
    if len(brand_words) > 1 or not all(_brand_word(t) for t in brand_words):
        return None
    shared = asset & entry
    if (extra_in_entry or missing_in_entry) and not (
        len(shared) >= 2 or any(len(t) >= 2 and t.isdigit() for t in shared)
    ):
        return None
    return len(shared) - len(extra_in_entry) - len(missing_in_entry)


def _word_prefix(words: list[str], of: list[str]) -> bool:
    return bool(words) and of[: len(words)] == words


def _brand_word(token: str) -> bool:
    return token.isalpha() and len(token) >= 4 and token not in DISTINGUISHING_WORDS


def _must_be_shared(token: str) -> bool:
    """A token of the asset's product that any accepted entry holds too."""
    return token not in LOOSE_WORDS and not _brand_word(token)


class AdvisoryIndex:
    """Product entries of many advisories, indexed for matching assets."""

    def __init__(self, advisories: Iterable[CsafAdvisory]) -> None:
        self._by_token: dict[tuple[str, str], list[_Entry]] = defaultdict(list)
        self._by_model: dict[tuple[str, str], list[_Entry]] = defaultdict(list)
        self._all: list[_Entry] = []
        self._vendor_keys: set[str] = set()
        self._similar_vendors: dict[str, tuple[str, ...]] = {}
        self.entries = 0
        for advisory in advisories:
            self._add(advisory)

    def _add(self, advisory: CsafAdvisory) -> None:
        entries = [e for product in advisory.products if (e := _entry(advisory, product)) is not None]
        for entry in _with_release_lines(entries):
            self.entries += 1
            self._all.append(entry)
            self._vendor_keys |= entry.vendors
            for vendor in entry.vendors:
                for token in {t for tokens in entry.token_sets for t in tokens}:
                    self._by_token[(vendor, token)].append(entry)
                for model in entry.product.model_numbers:
                    self._by_model[(vendor, model_number_key(model))].append(entry)

    def match(self, asset: MatchableAsset) -> list[AdvisoryMatch]:
        """Every advisory that concerns `asset`, one match per advisory, most severe first."""
        vendor = vendor_key(asset.vendor)
        return self._matches(
            asset, vendor, self._candidates(vendor, product_tokens(asset.product, asset.vendor), asset)
        )

    def match_without_index(self, asset: MatchableAsset) -> list[AdvisoryMatch]:
        """What `match` finds, by comparing `asset` with every product entry (the all-pairs baseline)."""
        vendor = vendor_key(asset.vendor)
        vendors = set(self._vendors_like(vendor))
        return self._matches(asset, vendor, [e for e in self._all if e.vendors & vendors])

    def _matches(self, asset: MatchableAsset, vendor: str, entries: Iterable[_Entry]) -> list[AdvisoryMatch]:
        asset_product = product_tokens(asset.product, asset.vendor)
        asset_model = product_tokens(asset.model, asset.vendor)
        version = parse_version(asset.firmware_version) if asset.firmware_version.strip() else None
        model_key = model_number_key(asset.model) if asset.model.strip() else ""
        by_advisory: dict[str, list[_Candidate]] = defaultdict(list)
        for entry in entries:
            candidate = _judge(entry, asset_product, asset_model, model_key, version)
            if candidate is not None:
                by_advisory[entry.advisory.advisory_id].append(candidate)
        matches = [m for cs in by_advisory.values() if (m := self._decide(asset, vendor, cs)) is not None]
        return sorted(matches, key=lambda m: (-(m.max_cvss or 0.0), m.advisory_id))

    def match_all(self, assets: Iterable[MatchableAsset]) -> list[AdvisoryMatch]:
        return [match for asset in assets for match in self.match(asset)]

    def _candidates(self, vendor: str, asset_product: frozenset[str], asset: MatchableAsset) -> list[_Entry]:
        """A superset of the entries `product_agreement` can accept, from the token and order number indexes."""
        found: dict[int, _Entry] = {}
        required = [t for t in asset_product if _must_be_shared(t)]
        for key in self._vendors_like(vendor):
            if required:  # an accepted entry holds every one of them: the rarest one's list suffices
                pool = min((self._by_token.get((key, t), []) for t in required), key=len)
            else:  # only descriptive and brand words: an accepted entry holds at least one of them
                pool = [e for t in asset_product for e in self._by_token.get((key, t), [])]
            found.update((id(e), e) for e in pool)
            if asset.model.strip():
                found.update((id(e), e) for e in self._by_model.get((key, model_number_key(asset.model)), []))
        return list(found.values())

    def _vendors_like(self, vendor: str) -> tuple[str, ...]:
        """The advisories' vendor keys that name `vendor` or a part of it, by whole words.

        `b braun` is `b braun medical` and `b braun melsungen`; `siemens` takes in `siemens healthineers`;
        `delta electronics` is not `delta controls`.
        """
        known = self._similar_vendors.get(vendor)
        if known is None:
            words = vendor.split()
            known = tuple(
                key for key in self._vendor_keys if _word_prefix(words, key.split()) or _word_prefix(key.split(), words)
            )
            self._similar_vendors[vendor] = known
        return known

    def _decide(self, asset: MatchableAsset, vendor: str, candidates: Sequence[_Candidate]) -> AdvisoryMatch | None:
        if any(c.entry.unaffected and not c.entry.affected and c.status is not None for c in candidates):
            return None  # the advisory lists the asset's version as fixed or not affected
        concerned = [c for c in candidates if c.entry.affected and c.status is not None]
        if not concerned:
            return None
        best = max(
            concerned, key=lambda c: (c.status == MatchStatus.AFFECTED, c.specificity, c.entry.product.product_id)
        )
        entry = best.entry
        scores = [c.entry.max_cvss for c in concerned if c.entry.max_cvss is not None]
        return AdvisoryMatch(
            asset_id=asset.id,
            advisory_id=entry.advisory.advisory_id,
            advisory_title=entry.advisory.title,
            product=entry.product,
            status=best.status or MatchStatus.POSSIBLY_AFFECTED,
            cves=tuple(dict.fromkeys(cve for c in concerned for cve in c.entry.cves)),
            max_cvss=max(scores) if scores else None,
            remediations=tuple(dict.fromkeys(r for c in concerned for r in c.entry.remediations)),
            evidence=_evidence(asset, vendor, best),
        )


def _judge(
    entry: _Entry,
    asset_product: frozenset[str],
    asset_model: frozenset[str],
    model_key: str,
    version: Version | None,
) -> _Candidate | None:
    by_model = bool(model_key) and model_key in entry.model_keys
    agreements = [product_agreement(asset_product, asset_model, tokens) for tokens in entry.token_sets]
    agreement = max((a for a in agreements if a is not None), default=None)
    if agreement is None and not by_model:
        return None
    specificity = 1000 if by_model else agreement or 0
    return _Candidate(entry, specificity, by_model, _version_status(entry, version))


def _version_status(entry: _Entry, version: Version | None) -> MatchStatus | None:
    if version is None or not entry.constraint.understood:
        return MatchStatus.POSSIBLY_AFFECTED
    if not entry.constraint.contains(version):
        return None
    return MatchStatus.POSSIBLY_AFFECTED if entry.investigating else MatchStatus.AFFECTED


def _evidence(asset: MatchableAsset, vendor: str, candidate: _Candidate) -> MatchEvidence:
    product = candidate.entry.product
    constraint = candidate.entry.constraint
    if candidate.by_model:
        product_evidence = f"order number {asset.model!r} of {product.full_name!r}"
    else:
        product_evidence = f"{asset.product!r} {asset.model!r} names {product.product!r}".replace(" ''", "")
    condition = f"; the advisory adds: {constraint.condition}" if constraint.condition else ""
    if not asset.firmware_version.strip():
        version_evidence = f"asset version unknown; affected: {constraint}{condition}"
    elif parse_version(asset.firmware_version) is None:
        version_evidence = f"asset version {asset.firmware_version!r} is not comparable"
    elif not constraint.understood:
        version_evidence = f"advisory range {constraint.text!r} not understood"
    else:
        version_evidence = f"{asset.firmware_version} in {constraint}{condition}"
    if candidate.entry.investigating:
        version_evidence += "; the advisory lists it as under investigation"
    return MatchEvidence(
        vendor=f"{asset.vendor!r} is {product.vendor!r} ({vendor})",
        product=product_evidence,
        version=version_evidence,
    )


def _entry(advisory: CsafAdvisory, product: ProductEntry) -> _Entry | None:
    pid = product.product_id
    statuses = {s for v in advisory.vulnerabilities for s, ids in v.product_status.items() if pid in ids}
    affected = bool(statuses & {"known_affected", "first_affected", "last_affected"})
    unaffected = bool(statuses & {"fixed", "first_fixed", "known_not_affected", "recommended"})
    if not (affected or unaffected or "under_investigation" in statuses):
        return None  # in the tree but named by no vulnerability: the advisory says nothing about it
    base = product_tokens(product.product, product.vendor)
    token_sets = [base]
    token_sets += [product_tokens(name, product.vendor) for name in product_alternatives(product.product)]
    token_sets += [base | product_tokens(variant, product.vendor) for variant in product.variants]
    vulnerabilities = [v for v in advisory.vulnerabilities if v.affects(pid)]
    scores = [score for v in vulnerabilities if (score := v.max_score(pid)) is not None]
    return _Entry(
        advisory=advisory,
        product=product,
        vendors=vendor_keys(product.vendor),
        token_sets=tuple(t for t in dict.fromkeys(token_sets) if t),
        constraint=product.constraint,
        affected=affected or "under_investigation" in statuses,
        unaffected=unaffected,
        investigating=not affected and "under_investigation" in statuses,
        model_keys=frozenset(model_number_key(m) for m in product.model_numbers),
        cves=tuple(dict.fromkeys(v.cve for v in vulnerabilities if v.cve)),
        max_cvss=max(scores) if scores else None,
        remediations=tuple(r for v in vulnerabilities for r in v.remediations if pid in r.product_ids),
    )


def _with_release_lines(entries: list[_Entry]) -> list[_Entry]:
    """Entries of one product that each say `< X` name release lines together (`< 7.3 Update 11`,
    `< 7.4 SP1`): each range but the lowest starts at its own line."""
    groups: dict[frozenset[str], list[int]] = defaultdict(list)
    for index, entry in enumerate(entries):
        if entry.affected and entry.constraint.understood and entry.token_sets:
            groups[entry.token_sets[0]].append(index)
    result = list(entries)
    for members in groups.values():
        if len(members) < 2:
            continue
        owners = [i for i in members for _ in entries[i].constraint.intervals]
        lined = release_lines([iv for i in members for iv in entries[i].constraint.intervals])
        for i in members:
            intervals = tuple(iv for owner, iv in zip(owners, lined, strict=True) if owner == i)
            result[i] = replace(entries[i], constraint=replace(entries[i].constraint, intervals=intervals))
    return result


def match_assets(assets: Iterable[MatchableAsset], advisories: Iterable[CsafAdvisory]) -> list[AdvisoryMatch]:
    """Every (asset, advisory) match of an inventory against a set of advisories."""
    return AdvisoryIndex(advisories).match_all(assets)
