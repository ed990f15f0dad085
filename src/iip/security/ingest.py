"""Captures into storage: decode once, summarise, update the inventory, and learn a baseline from the
packets or check them against the active one, in the same pass.

Where the pure parts' records become stored ones: `baseline.Baseline` becomes a `LearnedBaseline`,
`detection.Alert`s become `NewAlert`s (`to_record`). The caller owns the transaction; the alerts' alarm
events wait in `service.events` until it has committed.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iip.kernel.errors import Invalid
from iip.security.advisories.csaf import CsafAdvisory, InvalidAdvisory, advisory_files, parse_advisory
from iip.security.advisories.matching import AdvisoryIndex, AdvisoryMatch, MatchableAsset
from iip.security.baseline import Baseline as LearnedModel
from iip.security.baseline import BaselineLearner
from iip.security.captures import Observer, decode_capture
from iip.security.detection import DetectionSettings, Detector
from iip.security.honeypot.intel import notable_actions
from iip.security.honeypot.sightings import HoneypotSighting, SightingKind
from iip.security.models import Advisory, Alert, Asset, Baseline, Capture
from iip.security.records import AdvisoryRecord, LearnedBaseline, MatchRecord, Sighting
from iip.security.records import MatchStatus as RecordStatus
from iip.security.service import SecurityService

MAX_CAPTURE_BYTES = 64 * 1024 * 1024


@dataclass(slots=True)
class Ingested:
    capture: Capture
    baseline: Baseline | None = None
    alerts: list[Alert] = field(default_factory=list)


def learned(model: LearnedModel) -> LearnedBaseline:
    """The stored shape of a learned baseline."""
    return LearnedBaseline(
        content=model.to_json(),
        summary=model.summary(),
        window_start=model.trained_from,
        window_end=model.trained_until,
    )


def _checked_size(content: bytes) -> None:
    if len(content) > MAX_CAPTURE_BYTES:
        raise Invalid(f"the capture is larger than {MAX_CAPTURE_BYTES // (1024 * 1024)} MiB", code="capture_too_large")


def upload(
    service: SecurityService,
    content: bytes,
    filename: str,
    *,
    site: str = "",
    tenant_id: str | None = None,
    learn: bool = False,
    check: bool = False,
    rate_window_s: float = 10.0,
) -> Ingested:
    """Store a capture's summary and its hosts; with `learn`, a new baseline version for the site from
    it; with `check`, the alerts it raises against the site's active baseline."""
    service.actor.require("security.write")
    if learn and check:
        raise Invalid("learn from a capture or check it, not both at once", code="learn_and_check")
    _checked_size(content)
    tenant = service.tenant_for(tenant_id)
    observers: list[Observer] = []
    learner = BaselineLearner(rate_window_s=rate_window_s) if learn else None
    if learner is not None:
        observers.append(learner.observe)
    detector = None
    if check:
        model = LearnedModel.from_json(service.active_baseline(tenant, site).content)
        detector = Detector(model, detection_settings(service), known_attackers=known_attackers(service, tenant))
    if detector is not None:
        observers.append(detector.check)
    summary = decode_capture(io.BytesIO(content), observers)
    sha256 = hashlib.sha256(content).hexdigest()
    capture = service.record_capture(tenant, site, filename, len(content), sha256, summary)
    result = Ingested(capture)
    if learner is not None:
        if summary.packets == 0:
            raise Invalid(
                "the capture has no IP packets to learn from" + (f": {summary.error}" if summary.error else ""),
                code="capture_empty",
            )
        result.baseline = service.record_baseline(tenant, site, learned(learner.baseline()), capture_id=capture.id)
    if detector is not None:
        found = [finding.to_record() for finding in detector.finish()]
        result.alerts = service.record_alerts(tenant, site, found, capture_id=capture.id)
        capture.checked, capture.alerts = True, len(result.alerts)
    return result


def detection_settings(service: SecurityService) -> DetectionSettings:
    """The detector's settings for a capture check: the platform's bound on alerts per target."""
    if service.settings is None:
        return DetectionSettings()
    return DetectionSettings(max_sources=service.settings.security.detection_max_sources)


# --- honeypot sightings


def known_attackers(service: SecurityService, tenant_id: str) -> dict[str, str]:
    """The tenant's threat intelligence for the monitor and capture checks: each address a decoy saw
    (the platform's decoys when intelligence is shared, else the tenant's own), with what it did."""
    return service.threat_intelligence(tenant_id)


def sighting_record(sighting: HoneypotSighting) -> Sighting:
    """A decoy's sighting in the stored shape: a request is named by what it did that matters
    (`intel.notable_actions`: write, stop_cpu, identification ...) or else by its function."""
    message = sighting.message
    if sighting.kind is not SightingKind.REQUEST or message is None:
        return Sighting(sighting.peer.host, sighting.time, sighting.service.value, sighting.kind.value)
    notable = sorted(notable_actions(message))
    action = "+".join(notable) if notable else (message.function_name or f"function_{message.function}").lower()
    return Sighting(sighting.peer.host, sighting.time, sighting.service.value, action, notable=bool(notable))


def record_sightings(service: SecurityService, tenant_id: str, sightings: Iterable[HoneypotSighting]) -> int:
    """Fold the decoy's sightings into the tenant's indicators; how many indicators they touched."""
    found = [sighting_record(s) for s in sightings if s.peer.host]
    return len(service.record_sightings(tenant_id, found))


# --- advisories


def advisory_record(advisory: CsafAdvisory, document: dict[str, Any]) -> AdvisoryRecord:
    """A parsed CSAF advisory in the stored shape (the document kept for matching again later)."""
    remediations: dict[tuple[str, str], dict[str, str]] = {}
    for vulnerability in advisory.vulnerabilities:
        for remedy in vulnerability.remediations:
            remediations.setdefault(
                (remedy.category, remedy.details),
                {"category": remedy.category, "details": remedy.details, "url": remedy.url},
            )
    return AdvisoryRecord(
        tracking_id=advisory.advisory_id,
        title=advisory.title,
        publisher=advisory.publisher,
        released=advisory.initial_release,
        revised=advisory.current_release,
        cves=list(advisory.cves),
        products=[
            {"product_id": p.product_id, "vendor": p.vendor, "product": p.product, "versions": p.version_text}
            for p in advisory.products
        ],
        vulnerabilities=[
            {
                "cve": v.cve,
                "cvss": v.max_score(),
                "vector": v.scores[0].vector if v.scores else "",
                "title": v.title,
                "cwe": v.cwe_id,
            }
            for v in advisory.vulnerabilities
        ],
        remediations=list(remediations.values()),
        document=document,
    )


def _document(content: bytes, name: str) -> dict[str, Any]:
    try:
        document = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidAdvisory(f"not JSON ({err})", source=name) from None
    if not isinstance(document, dict):
        raise InvalidAdvisory("not a JSON object", source=name)
    return document


def import_advisories(service: SecurityService, documents: Sequence[tuple[str, bytes]]) -> list[Advisory]:
    """Parse CSAF documents and store them; one that cannot be read fails the whole import, named."""
    service.actor.require("security.write")
    records = []
    for name, content in documents:
        document = _document(content, name[:100])
        records.append(advisory_record(parse_advisory(document, source=name[:100]), document))
    return service.record_advisories(records)


def import_advisory_directory(service: SecurityService, root: Path) -> tuple[list[Advisory], list[str]]:
    """Every CSAF file under `root`: those that read are stored, the others named with the reason."""
    service.actor.require("security.write")
    records, refused = [], []
    for path in advisory_files(root):
        try:
            document = _document(path.read_bytes(), str(path))
            records.append(advisory_record(parse_advisory(document, source=str(path)), document))
        except InvalidAdvisory as err:
            refused.append(err.message)
        except OSError as err:
            refused.append(f"{path}: cannot read the file ({err.strerror})")
    return service.record_advisories(records), refused


def matchable(asset: Asset) -> MatchableAsset:
    """What matching needs of an inventory asset: vendor, product (its model), firmware."""
    return MatchableAsset(id=asset.id, vendor=asset.vendor, product=asset.model, model=asset.model,
                          firmware_version=asset.firmware)  # fmt: skip


def match_record(match: AdvisoryMatch) -> MatchRecord:
    remediation = "; ".join(f"{r.category}: {r.details}" for r in match.remediations[:5])
    evidence = match.evidence
    return MatchRecord(
        asset_id=match.asset_id,
        tracking_id=match.advisory_id,
        status=RecordStatus(match.status.value),
        cves=list(match.cves),
        max_cvss=match.max_cvss,
        remediation=remediation,
        reason=f"{evidence.vendor}; {evidence.product}; {evidence.version}",
    )


def match_tenant(service: SecurityService, *, tenant_id: str | None = None) -> int:
    """Match the tenant's assets against every stored advisory; how many matches there are now."""
    service.actor.require("security.write")
    tenant = service.tenant_for(tenant_id)
    assets = [matchable(a) for a in service.list_assets(tenant_id=tenant) if a.vendor and a.model]
    advisories = [
        parse_advisory(row.document, source=row.tracking_id) for row in service.list_advisories() if row.document
    ]
    found = [match_record(m) for m in AdvisoryIndex(advisories).match_all(assets)]
    return len(service.record_matches(tenant, found))
