"""Entries for `OBJECT_KINDS` in tests/api/test_tenant_isolation.py: the capture job routes (API and console).

Shaped as keyword arguments of that module's `ObjectKind`. Tenant B captures, in `proceed` mode, a
document with one event whose business step is a CBV URN naming the marker: no such step exists,
so the job's errors quote the marker to whoever may read the job.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from tests.traceability.test_capture import document, object_event

if TYPE_CHECKING:
    from tests.api.test_tenant_isolation import Created, World

CAPTURE_JOB = "/epcis/capture/{capture_id}"
CAPTURE_JOB_PAGE = "/traceability/capture/{job_id}"


def tenant_b_capture_job(world: World) -> Created:
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    response = world.client.post(
        "/epcis/capture",
        content=document(object_event(1), object_event(2, bizStep=f"urn:epcglobal:cbv:bizstep:{mark}")).encode(),
        headers={
            **world.tenant_b.headers(),
            "Content-Type": "application/ld+json",
            "GS1-Capture-Error-Behaviour": "proceed",
        },
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert mark in json.dumps(job["errors"])
    return Created({"capture_id": job["captureID"]}, mark)


def tenant_b_capture_job_page(world: World) -> Created:
    from tests.api.test_tenant_isolation import Created

    created = tenant_b_capture_job(world)
    job_id = created.params["capture_id"]
    return Created({"job_id": job_id, "capture_id": job_id}, created.marker)


CAPTURE_KINDS: dict[str, dict[str, Any]] = {
    CAPTURE_JOB: {"create": tenant_b_capture_job, "read": CAPTURE_JOB},
    CAPTURE_JOB_PAGE: {"create": tenant_b_capture_job_page, "read": CAPTURE_JOB},
}
