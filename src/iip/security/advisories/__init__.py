"""Security advisories (CSAF 2.0, e.g. CISA's ICS advisories) and matching them against an asset inventory.

`csaf` reads advisories into typed records, `versions` reads vendor versions and the ranges
advisories state, `vendors` normalises vendor and product names, and `matching` finds which assets
an advisory concerns and why. Pure domain code: no database, no I/O beyond reading advisory files.
"""

from iip.security.advisories.csaf import (
    CsafAdvisory,
    ImportReport,
    ImportResult,
    InvalidAdvisory,
    ProductEntry,
    import_directory,
    parse_advisory,
    read_advisory,
)
from iip.security.advisories.matching import (
    AdvisoryIndex,
    AdvisoryMatch,
    MatchableAsset,
    MatchEvidence,
    MatchStatus,
    match_assets,
)
from iip.security.advisories.versions import Version, VersionConstraint, parse_constraint, parse_version

__all__ = [
    "AdvisoryIndex",
    "AdvisoryMatch",
    "CsafAdvisory",
    "ImportReport",
    "ImportResult",
    "InvalidAdvisory",
    "MatchEvidence",
    "MatchStatus",
    "MatchableAsset",
    "ProductEntry",
    "Version",
    "VersionConstraint",
    "import_directory",
    "match_assets",
    "parse_advisory",
    "parse_constraint",
    "parse_version",
    "read_advisory",
]
