"""Entries for `OBJECT_KINDS` in tests/api/test_tenant_isolation.py: the security context's routes,
API and console. `PUBLIC_ROUTES`: advisories are the platform's, the same for every tenant.

Shaped as keyword arguments of that module's `ObjectKind`. Tenant B's objects carry the marker in
a field their re-read shows: an asset's name, an alert's message, a capture's file name, a
baseline's summary, a match's remediation, an incident's title, a bulletin's title. Alerts,
baselines and matches are stored through the service (a capture check would take a second each);
the rest through tenant B's API. A bulletin is published by tenant B's platform operator to tenant
B alone and re-read in B's inbox.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

from iip.kernel.auth import Principal, Role
from iip.security.records import LearnedBaseline, MatchRecord, MatchStatus, NewAlert, Severity
from iip.security.service import AssetFields, SecurityService
from tests.security.support import advisory

if TYPE_CHECKING:
    from tests.api.test_tenant_isolation import Created, World

API = "/api/security"
NOW = dt.datetime(2030, 6, 1, 8, 0, tzinfo=dt.UTC)
PUBLIC_ROUTES: frozenset[str] = frozenset({API + "/advisories/{advisory}"})


def _service(world: World, role: Role = Role.ENGINEER) -> tuple[Any, Principal]:
    actor = Principal("user", "b", "tenant-b-engineer", world.tenant_b.id, role)
    return world.runtime.db, actor


def b_asset(world: World) -> Created:
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    asset = world.as_b("POST", f"{API}/assets", {"address": "10.66.0.1", "site": uuid.uuid4().hex[:8], "name": mark})
    return Created({"asset_id": asset["id"]}, mark)


def b_alert(world: World) -> Created:
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    db, actor = _service(world)
    found = NewAlert("new_talker", Severity.HIGH, NOW, NOW, ["T0869"], "modbus", "10.66.0.9", "10.66.0.1", mark)
    with db.session() as session:
        (alert,) = SecurityService(session, actor).record_alerts(world.tenant_b.id, uuid.uuid4().hex[:8], [found])
        return Created({"alert_id": alert.id}, mark)


def b_capture(world: World) -> Created:
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    response = world.client.post(
        f"{API}/captures",
        files={"file": (f"{mark}.pcap", b"not a capture", "application/octet-stream")},
        headers=world.tenant_b.headers(),
    )
    assert response.status_code == 201, response.text
    return Created({"capture_id": response.json()["capture"]["id"]}, mark)


def b_baseline(world: World) -> Created:
    """An inactive version 1 (version 2 is active), so that activating it changes something."""
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    db, actor = _service(world)
    site = uuid.uuid4().hex[:8]
    with db.session() as session:
        service = SecurityService(session, actor)
        first = service.record_baseline(world.tenant_b.id, site, LearnedBaseline({}, {"note": mark}))
        service.record_baseline(world.tenant_b.id, site, LearnedBaseline({}, {"note": "newer"}))
        return Created({"baseline_id": first.id}, mark)


def b_match(world: World) -> Created:
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    db, actor = _service(world)
    tracking = f"ICSA-99-{uuid.uuid4().hex[:6]}"
    operator = Principal("user", "op", "operator", world.tenant_b.id, Role.PLATFORM_OPERATOR)
    with db.session() as session:
        SecurityService(session, operator).record_advisories([advisory(tracking, "CVE-2030-9999", 8.0)])
        service = SecurityService(session, actor)
        asset = service.create_asset("10.66.0.2", AssetFields(vendor="Acme"), site=uuid.uuid4().hex[:8])
        record = MatchRecord(asset.id, tracking, MatchStatus.AFFECTED, ["CVE-2030-9999"], 8.0, mark)
        (match,) = service.record_matches(world.tenant_b.id, [record])
        return Created({"match_id": match.id, "asset_id": asset.id}, mark)


def b_incident(world: World) -> Created:
    from tests.api.test_tenant_isolation import Created, marker

    alert = b_alert(world)
    mark = marker()
    incident = world.as_b("POST", f"{API}/incidents", {"title": mark, "alert_ids": [alert.params["alert_id"]]})
    return Created({"incident_id": incident["id"]}, mark)


def b_bulletin(world: World) -> Created:
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    body = {"kind": "warning", "title": mark, "severity": "high", "body_en": "b", "tenant_ids": [world.tenant_b.id]}
    response = world.client.post(f"{API}/bulletins", json=body, headers=world.tenant_b.headers(Role.PLATFORM_OPERATOR))
    assert response.status_code == 201, response.text
    return Created({"bulletin_id": response.json()["id"]}, mark)


def _kind(create: Any, read: str, bodies: dict[str, Any] | None = None, *, changes: bool = True) -> dict[str, Any]:
    return {"create": create, "read": read, "bodies": bodies or {}, "control_changes": changes}


ASSET, ALERT = API + "/assets/{asset_id}", API + "/alerts/{alert_id}"
BASELINE, INCIDENT = API + "/baselines/{baseline_id}", API + "/incidents/{incident_id}"
INBOX = API + "/inbox/{bulletin_id}"
MATCHES = API + "/matches?asset_id={asset_id}"

SECURITY_KINDS: dict[str, dict[str, Any]] = {
    ASSET: _kind(b_asset, ASSET, {"PATCH": {"owner": "someone"}}),
    ALERT: _kind(b_alert, ALERT),
    ALERT + "/acknowledge": _kind(b_alert, ALERT, {"POST": {"note": "seen"}}),
    ALERT + "/close": _kind(b_alert, ALERT, {"POST": {"note": "done"}}),
    API + "/captures/{capture_id}": _kind(b_capture, API + "/captures/{capture_id}"),
    BASELINE: _kind(b_baseline, BASELINE),
    BASELINE + "/activate": _kind(b_baseline, BASELINE),
    API + "/matches/{match_id}/resolve": _kind(b_match, MATCHES, {"POST": {"resolution": "patched"}}),
    INCIDENT: _kind(b_incident, INCIDENT),
    INCIDENT + "/entries": _kind(b_incident, INCIDENT, {"POST": {"kind": "note", "text": "noted"}}),
    INCIDENT + "/state": _kind(b_incident, INCIDENT, {"POST": {"state": "contained"}}),
    API + "/bulletins/{bulletin_id}": _kind(b_bulletin, INBOX),
    API + "/bulletins/{bulletin_id}/redeliver": _kind(b_bulletin, INBOX, changes=False),
    INBOX: _kind(b_bulletin, INBOX),
    INBOX + "/acknowledge": _kind(b_bulletin, INBOX),
    INBOX + "/remediation": _kind(b_bulletin, INBOX, {"POST": {"status": "in_progress"}}),
    # Console pages (forms); re-read through the API.
    "/security/alerts/{alert_id}/acknowledge": _kind(b_alert, ALERT),
    "/security/alerts/{alert_id}/close": _kind(b_alert, ALERT),
    "/security/alerts/{alert_id}/incident": _kind(b_alert, ALERT, changes=False),
    "/security/baselines/{baseline_id}/activate": _kind(b_baseline, BASELINE),
    "/security/advisories/matches/{match_id}/resolve": _kind(b_match, MATCHES, {"POST": {"resolution": "accepted"}}),
    "/security/inbox/{bulletin_id}": _kind(b_bulletin, INBOX),
    "/security/inbox/{bulletin_id}/acknowledge": _kind(b_bulletin, INBOX),
    "/security/inbox/{bulletin_id}/remediation": _kind(b_bulletin, INBOX, {"POST": {"status": "done"}}),
    "/security/bulletins/{bulletin_id}": _kind(b_bulletin, INBOX),
    "/security/incidents/{incident_id}": _kind(b_incident, INCIDENT),
    "/security/incidents/{incident_id}/entries": _kind(b_incident, INCIDENT, {"POST": {"kind": "action", "text": "x"}}),
    "/security/incidents/{incident_id}/state": _kind(b_incident, INCIDENT, {"POST": {"state": "resolved"}}),
}
