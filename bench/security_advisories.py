"""Vulnerability matching: CISA's CSAF advisories against a 10,000-asset inventory.

Imports every advisory under `--feed` (CISA's `<year>/*.json` tree: 2,379 documents) and reports
the time, the count imported and refused, and the share of version strings read. Then draws
`--assets` realistic assets from the advisories' own vendors and products (vendor names written
the way inventories write them, model or order numbers on some, versions around the advisories'
bounds, random, or unknown) and matches them all with `AdvisoryIndex` (index build included).

Baselines, in the same run: for import, reading the same files with `json.loads` alone (what the
typed records and the validation cost); for matching, the all-pairs loop (`match_without_index`:
every asset compared with every product entry, with the same comparison), timed on a `--sample`
of the assets and scaled to all of them, its results checked equal to the index's on that sample.

    .venv/bin/python bench/security_advisories.py [--assets 10000] [--sample 200] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, report
from iip.security.advisories.csaf import CsafAdvisory, ProductEntry, advisory_files, import_directory
from iip.security.advisories.matching import AdvisoryIndex, MatchableAsset, MatchStatus

FEED = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "ics" / "csaf"
TARGET_SECONDS = 60.0
VENDOR_SPELLINGS = ("{}", "{} AG", "{} Inc.", "{}, Ltd.", "{} GmbH", "{} Corporation")


def inventory_vendor(vendor: str, rng: random.Random) -> str:
    written = rng.choice(VENDOR_SPELLINGS).format(vendor.split(",", maxsplit=1)[0].strip())
    return written.upper() if rng.random() < 0.1 else written


def inventory_version(product: ProductEntry, rng: random.Random) -> str:
    """A version near one of the entry's bounds (either side), a random one, or unknown (10%)."""
    roll = rng.random()
    if roll < 0.1:
        return ""
    bounds = [b for i in product.constraint.intervals for b in (i.lower, i.upper) if b is not None]
    if bounds and roll < 0.7:
        bound = rng.choice(bounds).text.lstrip("Vv")
        head, _, last = bound.rpartition(".")
        if last.isdigit() and head:
            return f"V{head}.{max(0, int(last) + rng.choice((-1, 0, 1)))}"
        return bound
    return ".".join(str(rng.randint(0, 12)) for _ in range(rng.randint(2, 3)))


def synthetic_assets(advisories: list[CsafAdvisory], count: int, seed: int = 1) -> list[MatchableAsset]:
    rng = random.Random(seed)
    products = [p for a in advisories for p in a.products if p.vendor]
    assets = []
    for number in range(count):
        product = rng.choice(products)
        model = rng.choice(product.model_numbers) if product.model_numbers and rng.random() < 0.5 else ""
        assets.append(
            MatchableAsset(
                id=f"asset-{number}",
                vendor=inventory_vendor(product.vendor, rng),
                product=product.product,
                model=model,
                firmware_version=inventory_version(product, rng),
            )
        )
    return assets


def json_only(feed: Path) -> int:
    return sum(1 for path in advisory_files(feed) if json.loads(path.read_bytes()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feed", type=Path, default=FEED)
    parser.add_argument("--assets", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=200)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    started = time.perf_counter()
    imported = import_directory(args.feed)
    import_seconds = time.perf_counter() - started
    started = time.perf_counter()
    json_only(args.feed)
    json_seconds = time.perf_counter() - started
    advisories = imported.advisories
    print(f"imported {len(advisories):,} advisories in {import_seconds:.2f} s, refused {len(imported.refused)}")
    for refused in imported.refused[:10]:
        print(f"  refused {refused.source}: {refused.error}")

    versioned = [p for a in advisories for p in a.products if p.version_text.strip()]
    understood = sum(p.constraint.understood for p in versioned)
    ranged = sum(p.constraint.understood and not p.constraint.names_no_version for p in versioned)
    print(
        f"version strings: {len(versioned):,}; read {understood / len(versioned):.2%} "
        f"({ranged / len(versioned):.2%} as a range, the rest name a variant in the version slot)"
    )

    assets = synthetic_assets(advisories, args.assets)
    started = time.perf_counter()
    index = AdvisoryIndex(advisories)
    index_seconds = time.perf_counter() - started
    matches = index.match_all(assets)
    ours_seconds = time.perf_counter() - started
    affected = sum(m.status == MatchStatus.AFFECTED for m in matches)
    print(
        f"matched {len(assets):,} assets against {index.entries:,} product entries in {ours_seconds:.2f} s "
        f"(index {index_seconds:.2f} s): {len(matches):,} matches, {affected:,} affected, "
        f"{len({m.asset_id for m in matches}):,} assets concerned; target <= {TARGET_SECONDS:.0f} s"
    )

    sample = assets[: args.sample]
    started = time.perf_counter()
    naive = [m for asset in sample for m in index.match_without_index(asset)]
    naive_seconds = (time.perf_counter() - started) * len(assets) / len(sample)
    indexed = [m for asset in sample for m in index.match(asset)]
    same = [(m.asset_id, m.advisory_id, m.status) for m in naive] == [
        (m.asset_id, m.advisory_id, m.status) for m in indexed
    ]
    print(f"all-pairs loop on {len(sample)} assets, scaled to {len(assets):,}: {naive_seconds:.1f} s; same: {same}")

    report(
        [
            Result(
                "security_advisories",
                f"import {len(advisories):,} CSAF advisories",
                import_seconds,
                "json.loads of the same files",
                json_seconds,
                "s",
                higher_is_better=False,
            ),
            Result(
                "security_advisories",
                f"match {len(assets):,} assets",
                ours_seconds,
                "all-pairs loop (scaled)",
                naive_seconds,
                "s",
                higher_is_better=False,
            ),
        ],
        record=not args.no_record,
    )


if __name__ == "__main__":
    main()
