"""A bakery supply chain as EPCIS 2.0 documents, captured through the capture service.

Ingredient lots (flour F1, sugar S1, egg E1) are baked into a product lot P1 (from F1 and S1) and
into serialised cakes U1-U3 (from F1 and E1). Cases C1, C2, C4 hold P1 by quantity, C3 holds the
serialised cakes. Pallet PAL1 holds C1 and C2, PAL2 holds C3 and C4. Both pallets go from the plant
to the distributor; there C1 comes off PAL1 (DELETE) and goes on to retailer A, while PAL2 goes on
whole to retailer B. PAL1, with C2 still on it, stays at the distributor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from biip.checksums import gs1_standard_check_digit
from sqlalchemy.orm import Session

from iip.kernel.auth import Principal, Role
from iip.traceability.capture import CaptureService
from iip.traceability.epcis.writer import EPCIS_CONTEXT_URL

COMPANY = "9521234"


def with_check(digits: str) -> str:
    return digits + str(gs1_standard_check_digit(digits))


def gtin(item: int) -> str:
    return with_check(f"0{COMPANY}{item:05d}")


def lot(item: int, code: str) -> str:
    return f"https://id.gs1.org/01/{gtin(item)}/10/{code}"


def lot_urn(item: int, code: str) -> str:
    return f"urn:epc:class:lgtin:{COMPANY}.0{item:05d}.{code}"


def serial(item: int, number: str) -> str:
    return f"https://id.gs1.org/01/{gtin(item)}/21/{number}"


def sscc(number: int) -> str:
    return f"https://id.gs1.org/00/{with_check(f'0{COMPANY}{number:09d}')}"


def sscc_urn(number: int) -> str:
    return f"urn:epc:id:sscc:{COMPANY}.0{number:09d}"


def gln(location: int) -> str:
    return with_check(f"{COMPANY}{location:05d}")


def place(location: int) -> str:
    return f"https://id.gs1.org/414/{gln(location)}"


def party(location: int) -> str:
    return f"https://id.gs1.org/417/{gln(location)}"


FLOUR, SUGAR, EGG, CAKE, CAKE_SERIAL = 101, 102, 103, 201, 202
F1, S1, E1 = lot(FLOUR, "F1"), lot(SUGAR, "S1"), lot(EGG, "E1")
P1 = lot(CAKE, "P1")
U1, U2, U3 = (serial(CAKE_SERIAL, str(n)) for n in (1, 2, 3))
C1, C2, C3, C4 = (sscc(n) for n in (1, 2, 3, 4))
PAL1, PAL2 = sscc(101), sscc(102)
PLANT, DISTRIBUTOR, RETAIL_A, RETAIL_B = 1, 2, 3, 4
INGREDIENTS = {F1, S1, E1}


def event(kind: str, time: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "eventTime": f"2024-03-{time}:00.000+01:00",
        "eventTimeZoneOffset": "+01:00",
        **fields,
    }


def quantity(epc_class: str, amount: float, uom: str | None = None) -> dict[str, Any]:
    element: dict[str, Any] = {"epcClass": epc_class, "quantity": amount}
    if uom:
        element["uom"] = uom
    return element


def at(location: int) -> dict[str, Any]:
    return {"readPoint": {"id": place(location)}, "bizLocation": {"id": place(location)}}


def shipping(time: str, epcs: list[str], source: int, destination: int, order: str) -> dict[str, Any]:
    return event(
        "ObjectEvent",
        time,
        epcList=epcs,
        action="OBSERVE",
        bizStep="shipping",
        disposition="in_transit",
        **at(source),
        bizTransactionList=[{"type": "desadv", "bizTransaction": f"urn:epcglobal:cbv:bt:{gln(source)}:{order}"}],
        sourceList=[
            {"type": "owning_party", "source": party(source)},
            {"type": "location", "source": place(source)},
        ],
        destinationList=[
            {"type": "owning_party", "destination": party(destination)},
            {"type": "location", "destination": place(destination)},
        ],
    )


def receiving(time: str, epcs: list[str], location: int, disposition: str = "in_progress") -> dict[str, Any]:
    return event(
        "ObjectEvent",
        time,
        epcList=epcs,
        action="OBSERVE",
        bizStep="receiving",
        disposition=disposition,
        **at(location),
    )


def pack(time: str, parent: str, location: int, *, children: list[str] | None = None, **more: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"parentID": parent, "action": "ADD", "bizStep": "packing", **at(location), **more}
    if children is not None:
        fields["childEPCs"] = children
    return event("AggregationEvent", time, **fields)


def unpack(time: str, parent: str, location: int, children: list[str] | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {"parentID": parent, "action": "DELETE", "bizStep": "unpacking", **at(location)}
    if children is not None:
        fields["childEPCs"] = children
    return event("AggregationEvent", time, **fields)


def bakery_events() -> list[dict[str, Any]]:
    return [
        receiving("01T08:00", [], PLANT) | {"quantityList": [quantity(F1, 500, "KGM"), quantity(S1, 80, "KGM")]},
        event(
            "TransformationEvent",
            "02T09:00",
            inputQuantityList=[quantity(F1, 100, "KGM"), quantity(S1, 20, "KGM")],
            outputQuantityList=[quantity(P1, 72)],
            bizStep="commissioning",
            **at(PLANT),
        ),
        event(
            "TransformationEvent",
            "02T10:00",
            inputQuantityList=[quantity(lot_urn(FLOUR, "F1"), 5, "KGM"), quantity(E1, 30)],
            outputEPCList=[U1, U2, U3],
            bizStep="commissioning",
            **at(PLANT),
        ),
        pack("02T11:00", C1, PLANT, childQuantityList=[quantity(P1, 24)]),
        pack("02T11:05", C2, PLANT, childQuantityList=[quantity(P1, 24)]),
        pack("02T11:10", C3, PLANT, children=[U1, U2, U3]),
        pack("02T11:15", C4, PLANT, childQuantityList=[quantity(P1, 24)]),
        pack("02T12:00", PAL1, PLANT, children=[C1, C2]),
        pack("02T12:05", sscc_urn(102), PLANT, children=[C3, C4]),
        shipping("03T07:00", [PAL1, PAL2], PLANT, DISTRIBUTOR, "4711"),
        receiving("03T15:00", [PAL1, PAL2], DISTRIBUTOR),
        unpack("04T08:00", PAL1, DISTRIBUTOR, [C1]),
        shipping("04T09:00", [C1], DISTRIBUTOR, RETAIL_A, "815"),
        receiving("04T14:00", [C1], RETAIL_A, "sellable_accessible"),
        shipping("05T09:00", [PAL2], DISTRIBUTOR, RETAIL_B, "816"),
        receiving("05T16:00", [PAL2], RETAIL_B, "sellable_accessible"),
    ]


def document(events: list[dict[str, Any]]) -> bytes:
    return json.dumps(
        {
            "@context": [EPCIS_CONTEXT_URL],
            "type": "EPCISDocument",
            "schemaVersion": "2.0",
            "creationDate": "2024-03-06T00:00:00Z",
            "epcisBody": {"eventList": events},
        }
    ).encode()


def admin(tenant_id: str, role: Role = Role.ADMIN) -> Principal:
    return Principal("user", f"u-{tenant_id}", "tester", tenant_id, role)


@dataclass(frozen=True)
class Captured:
    stored: int


def capture(session: Session, tenant_id: str, events: list[dict[str, Any]]) -> Captured:
    """Capture the events as one document; every one must be stored."""
    job = CaptureService(session).capture(admin(tenant_id), document(events))
    assert job.success, job.errors
    assert job.captured_count == len(events), (job.captured_count, job.errors)
    return Captured(job.captured_count)
