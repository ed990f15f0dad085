"""GS1's EPCIS 2.0 examples, read from the shared datasets folder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from iip.kernel.db import Database
from iip.kernel.sealing import Sealer
from iip.kernel.settings import Settings
from iip.traceability.subscription_delivery import SubscriptionDelivery
from iip.traceability.subscriptions import subscription_sealer
from tests.conftest import TenantFixture
from tests.services import in_ci
from tests.traceability.subscription_support import Clock, Receiver, Subscriber, running_receiver

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


def gs1_example(relative: str) -> Path:
    """One of GS1's example files: skipped locally when the data set is missing, a failure under CI=true."""
    path = DATASET / relative
    if path.exists():
        return path
    message = f"GS1 EPCIS examples not found at {path}"
    if in_ci():
        pytest.fail(message + " (CI=true: the data sets are required)")
    pytest.skip(message)


# --- subscription deliveries: a real receiver, a clock the test moves, the delivery loop, a subscriber


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sealer(settings: Settings) -> Sealer:
    return subscription_sealer(settings)


@pytest.fixture
async def delivery(migrated_db: Database, sealer: Sealer, clock: Clock) -> AsyncIterator[SubscriptionDelivery]:
    running = SubscriptionDelivery(migrated_db, sealer, clock=clock, retry_base_s=1.0, retry_max_s=8.0)
    yield running
    await running.close()


@pytest.fixture
def subscriber(migrated_db: Database, tenant_a: TenantFixture, receiver: Receiver, sealer: Sealer) -> Subscriber:
    """Tenant A, subscribing to the test's receiver."""
    return Subscriber(migrated_db, tenant_a.id, receiver.url, sealer)
