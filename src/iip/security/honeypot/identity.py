"""Who the decoy PLC says it is: vendor, model, order number, firmware, serial, names, plant id.

Drawn from a seed, so each deployment answers differently from the others (an attacker who has
seen one decoy does not recognise the next by its serial number) while a deployment keeps the
same identity across restarts. The families are real product lines with their real order-number
patterns and plausible firmware releases; the serial numbers follow each vendor's printed format.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelFamily:
    """One product line a decoy may pose as, with the choices a real installed base shows."""

    vendor: str
    family: str
    models: tuple[tuple[str, str], ...]  # (model name, order number)
    firmware: tuple[tuple[int, int, int], ...]
    serial_format: str  # "{prefix}" and "{digits}" filled from the seed
    serial_prefixes: tuple[str, ...]
    speaks_s7: bool
    pdu_length: int  # S7 PDU size the CPU offers (240 on S7-300, 480 on S7-1200, 960 on S7-1500)
    vendor_url: str


FAMILIES: tuple[ModelFamily, ...] = (
    ModelFamily(
        vendor="Siemens",
        family="S7-300",
        models=(
            ("CPU 315-2 PN/DP", "6ES7 315-2EH14-0AB0"),
            ("CPU 317-2 PN/DP", "6ES7 317-2EK14-0AB0"),
            ("CPU 314C-2 PN/DP", "6ES7 314-6EH04-0AB0"),
            ("CPU 319-3 PN/DP", "6ES7 318-3EL01-0AB0"),
        ),
        firmware=((3, 2, 6), (3, 2, 8), (3, 2, 12), (3, 2, 17), (3, 3, 10)),
        serial_format="S {prefix}-{digits}",
        serial_prefixes=("C-B1U", "C-H4R", "C-F7N", "C-X2Q"),
        speaks_s7=True,
        pdu_length=240,
        vendor_url="https://www.siemens.com",
    ),
    ModelFamily(
        vendor="Siemens",
        family="S7-1200",
        models=(
            ("CPU 1214C DC/DC/DC", "6ES7 214-1AG40-0XB0"),
            ("CPU 1215C DC/DC/DC", "6ES7 215-1AG40-0XB0"),
            ("CPU 1212C AC/DC/Rly", "6ES7 212-1BE40-0XB0"),
        ),
        firmware=((4, 2, 3), (4, 4, 0), (4, 5, 2), (4, 6, 1)),
        serial_format="S {prefix}{digits}",
        serial_prefixes=("C-J9", "C-K3", "V-L2"),
        speaks_s7=True,
        pdu_length=240,
        vendor_url="https://www.siemens.com",
    ),
    ModelFamily(
        vendor="Siemens",
        family="S7-1500",
        models=(
            ("CPU 1511-1 PN", "6ES7 511-1AK02-0AB0"),
            ("CPU 1513-1 PN", "6ES7 513-1AL02-0AB0"),
            ("CPU 1516-3 PN/DP", "6ES7 516-3AN02-0AB0"),
        ),
        firmware=((2, 8, 3), (2, 9, 4), (3, 0, 1), (3, 1, 2)),
        serial_format="S {prefix}{digits}",
        serial_prefixes=("C-M8", "C-P5", "V-R1"),
        speaks_s7=True,
        pdu_length=480,
        vendor_url="https://www.siemens.com",
    ),
    ModelFamily(
        vendor="Schneider Electric",
        family="Modicon M340",
        models=(("BMX P34 2020", "BMXP342020"), ("BMX P34 2030", "BMXP342030"), ("BMX P34 1000", "BMXP341000")),
        firmware=((2, 9, 0), (3, 1, 0), (3, 2, 0), (3, 4, 0)),
        serial_format="{prefix}{digits}",
        serial_prefixes=("2013", "2014", "2016", "2018"),
        speaks_s7=False,
        pdu_length=0,
        vendor_url="https://www.se.com",
    ),
    ModelFamily(
        vendor="Schneider Electric",
        family="Modicon M580",
        models=(("BME P58 1020", "BMEP581020"), ("BME P58 2040", "BMEP582040"), ("BME P58 4040", "BMEP584040")),
        firmware=((2, 8, 0), (3, 10, 0), (3, 20, 0), (4, 1, 0)),
        serial_format="{prefix}{digits}",
        serial_prefixes=("2017", "2019", "2020", "2021"),
        speaks_s7=False,
        pdu_length=0,
        vendor_url="https://www.se.com",
    ),
)

_PLANT_AREAS = ("Boiler", "Filling", "Pump", "Mixing", "Press", "Packaging", "Cooling", "Dosing", "Kiln", "Conveyor")
_PLANT_SITES = ("North", "South", "East", "West", "Line1", "Line2", "Line3", "Hall A", "Hall B", "Plant 2")


@dataclass(frozen=True, slots=True)
class PlcIdentity:
    """What the decoy answers to identification requests (Modbus 43/14, S7 SZL 0x0011 and 0x001C)."""

    seed: str
    vendor: str
    family: str
    model: str
    order_number: str
    firmware: tuple[int, int, int]
    serial_number: str
    plc_name: str  # S7 "name of the automation system" / Modbus user application name
    module_name: str
    plant_id: str
    speaks_s7: bool
    pdu_length: int
    vendor_url: str
    rack: int
    slot: int

    @property
    def firmware_text(self) -> str:
        major, minor, patch = self.firmware
        return f"V{major}.{minor}.{patch}"

    @property
    def product_code(self) -> str:
        """Modbus ProductCode: the order number, as Siemens and Schneider report it."""
        return self.order_number


def seeded_random(seed: str, purpose: str) -> random.Random:
    """A generator that depends only on the deployment seed and what it is drawn for.

    Not for security: the values only have to differ between deployments and stay put within one.
    """
    digest = hashlib.blake2b(f"{purpose}\x00{seed}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))  # noqa: S311


def identity_for(seed: str, *, family: str | None = None, speaks_s7: bool = False) -> PlcIdentity:
    """The identity of the deployment `seed`; `family` (e.g. "S7-300") pins the product line,
    `speaks_s7` keeps to the lines that answer S7comm (a decoy that listens on port 102)."""
    rng = seeded_random(seed, "identity")
    choices = [f for f in FAMILIES if (family is None or f.family == family) and (f.speaks_s7 or not speaks_s7)]
    if not choices:
        raise ValueError(f"unknown PLC family {family!r}; known: {', '.join(f.family for f in FAMILIES)}")
    line = rng.choice(choices)
    model, order_number = rng.choice(line.models)
    area, site = rng.choice(_PLANT_AREAS), rng.choice(_PLANT_SITES)
    number = rng.randint(1, 12)
    serial = line.serial_format.format(prefix=rng.choice(line.serial_prefixes), digits=f"{rng.randrange(10**9):09d}")
    return PlcIdentity(
        seed=seed,
        vendor=line.vendor,
        family=line.family,
        model=model,
        order_number=order_number,
        firmware=rng.choice(line.firmware),
        serial_number=serial,
        plc_name=f"{area}_{site}".replace(" ", "_"),
        module_name=f"PLC_{number}",
        plant_id=f"{site} {area} {rng.randint(100, 999)}",
        speaks_s7=line.speaks_s7,
        pdu_length=line.pdu_length,
        vendor_url=line.vendor_url,
        rack=0,
        slot=2 if line.family in ("S7-300", "S7-400") else 1,
    )
