"""GS1's EPCIS 2.0 examples, read from the shared datasets folder."""

from __future__ import annotations

from pathlib import Path

DATASET = Path(__file__).resolve().parents[2] / "../shared/datasets/epcis/gs1"
# Documents that hold EPCIS events (capture jobs and master data documents carry none).
EVENT_DOCUMENTS = sorted(
    p
    for p in [*DATASET.glob("JSON/**/*.jsonld"), *DATASET.glob("XML/**/*.xml"), *DATASET.glob("XML/**/*.json")]
    if "CaptureJob" not in p.parts and "masterdata" not in p.name.lower() and "CBV-11.4" not in p.name
)
# Documents GS1 publishes as schema-valid (one JSON example writes CBV URNs where the JSON Schema wants names).
VALID_DOCUMENTS = [p for p in EVENT_DOCUMENTS if p.name != "event_with_identical_hash_id_7.json"]


def example_id(path: Path) -> str:
    return str(path.relative_to(DATASET))
