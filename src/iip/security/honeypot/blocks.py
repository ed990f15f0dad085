"""The decoy CPU's program: the blocks it lists and describes, and the block transfers it refuses.

Drawn from the deployment seed and the product line, so the directory is the same on every call
and after a restart: the S7 block functions (list blocks, list blocks of type, get block info)
answer from it, with counts and numbers that agree between the calls. The data blocks are exactly
the process image's (`registers.DB_SIZES`), with the sizes a read finds there. An S7-300 also
lists the system functions and system data blocks it carries in firmware; an S7-1200 or S7-1500
lists only the user program.

Upload, download and delete are refused with what a CPU of the line answers when its program is
protected: an S7-300 at protection level 3 "operation not permitted in current protection level"
(0xD241, what snap7 reports as "need password"); the S7-1200 and S7-1500 do not offer block
transfer over S7comm at all and answer "function not implemented" (0x8104).
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass

from iip.security.honeypot.identity import PlcIdentity, seeded_random
from iip.security.honeypot.registers import DB_SIZES

BLOCK_OB, BLOCK_DB, BLOCK_SDB, BLOCK_FC, BLOCK_SFC, BLOCK_FB, BLOCK_SFB = 0x38, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46
LIST_ORDER = (BLOCK_OB, BLOCK_FB, BLOCK_FC, BLOCK_DB, BLOCK_SDB, BLOCK_SFC, BLOCK_SFB)  # as a CPU lists them
BLOCK_NAMES = {
    BLOCK_OB: "OB",
    BLOCK_DB: "DB",
    BLOCK_SDB: "SDB",
    BLOCK_FC: "FC",
    BLOCK_SFC: "SFC",
    BLOCK_FB: "FB",
    BLOCK_SFB: "SFB",
}
SUB_BLOCK_TYPES = {
    BLOCK_OB: 0x08,
    BLOCK_DB: 0x0A,
    BLOCK_SDB: 0x0B,
    BLOCK_FC: 0x0C,
    BLOCK_SFC: 0x0D,
    BLOCK_FB: 0x0E,
    BLOCK_SFB: 0x0F,
}
LANG_STL, LANG_LAD, LANG_FBD, LANG_SCL, LANG_DB = 0x01, 0x02, 0x03, 0x04, 0x05
BLOCK_HEADER_BYTES = 36  # the MC7 block header every block carries in load memory
S7_EPOCH = dt.date(1984, 1, 1)  # block timestamps count days from here

ERROR_PROTECTION_LEVEL = 0xD241  # operation not permitted in current protection level
ERROR_NOT_IMPLEMENTED = 0x8104
ERROR_BLOCK_NOT_FOUND = 0xD209

# System blocks an S7-300 CPU (315/317 class, firmware 3.x) carries and lists.
_S7_300_SFCS = (
    *range(7),
    *range(9, 15),
    *range(17, 35),
    *range(36, 45),
    46,
    47,
    49,
    50,
    51,
    52,
    55,
    56,
    57,
    58,
    59,
    62,
    64,
    65,
    66,
    67,
    68,
    69,
    70,
    71,
    72,
    73,
    74,
    78,
    79,
    80,
    81,
    82,
    83,
    84,
    85,
    87,
    90,
    101,
    102,
    103,
    105,
    106,
    107,
    108,
    109,
    112,
    113,
    114,
)
_S7_300_SFBS = (0, 1, 2, 3, 4, 5, 12, 13, 14, 15, 16, 19, 20, 22, 23, 52, 53, 54, 75)
_S7_300_SDBS = (0, 1, 2, 7, 999, 1000, 1001, 2000, 2001)
_OBS = {
    "S7-300": ((1, 100), (35, 80, 82, 86, 121, 122)),  # always, sometimes
    "S7-1200": ((1, 100), (30, 80, 82)),
    "S7-1500": ((1, 100), (30, 80, 82, 83, 86)),
}
_FB_NAMES = ("MOTOR", "VALVE", "PID_CTRL", "PUMP", "DOSING", "ALARMS", "SEQUENCE", "CONVEYOR")
_FC_NAMES = ("SCALE", "UNSCALE", "LIMITS", "INTERLOCK", "MODE", "COMMS", "HMI", "DIAG", "TOTALS", "TIMERS")
_DB_NAMES = {1: "PROCESS", 2: "COUNTERS", 3: "RECIPE"}
_AUTHORS = ("ENG", "MAINT", "OT_TEAM", "SI_INTEG", "PLC_DEV")


@dataclass(frozen=True, slots=True)
class BlockInfo:
    """One block as get block info describes it."""

    kind: int  # BLOCK_OB ... (the block type codes of the requests)
    number: int
    language: int
    mc7_size: int
    local_data: int
    interface_size: int  # SBB length
    code_time: dt.datetime
    interface_time: dt.datetime
    author: str
    family: str
    name: str
    version: int  # major << 4 | minor
    checksum: int
    protected: bool  # know-how protection

    @property
    def load_size(self) -> int:
        return BLOCK_HEADER_BYTES + self.mc7_size + self.interface_size


@dataclass(frozen=True, slots=True)
class Program:
    """The decoy CPU's blocks, by type, numbers ascending."""

    blocks: dict[int, tuple[BlockInfo, ...]]
    refusal: int  # the error upload, download and delete get

    def numbers(self, kind: int) -> list[int]:
        return [block.number for block in self.blocks.get(kind, ())]

    def find(self, kind: int, number: int) -> BlockInfo | None:
        return next((b for b in self.blocks.get(kind, ()) if b.number == number), None)


def program_for(identity: PlcIdentity) -> Program:
    """The program of the deployment: the same for the same seed and product line."""
    rng = seeded_random(identity.seed, "blocks")
    line = identity.family if identity.family in _OBS else "S7-300"
    epoch = dt.datetime(2016, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=rng.randrange(0, 6 * 365))
    author = rng.choice(_AUTHORS)

    def block(kind: int, number: int, language: int, size: int, name: str, *, system: bool = False) -> BlockInfo:
        code_time = epoch + dt.timedelta(days=rng.randrange(0, 400), seconds=rng.randrange(0, 86400))
        interface_time = code_time - dt.timedelta(days=rng.randrange(0, 30), seconds=rng.randrange(0, 86400))
        return BlockInfo(
            kind=kind,
            number=number,
            language=language,
            mc7_size=size,
            local_data=0 if kind in (BLOCK_DB, BLOCK_SDB) else rng.choice((0, 2, 8, 20, 24, 38)),
            interface_size=0 if system else rng.randrange(2, 40) * 2,
            code_time=code_time,
            interface_time=interface_time,
            author="SIMATIC" if system else author,
            family="SYSTEM" if system else "",
            name=name,
            version=0x01 if system else rng.choice((0x01, 0x02, 0x10, 0x11, 0x12)),
            checksum=rng.getrandbits(16),
            protected=system,
        )

    always, sometimes = _OBS[line]
    obs = sorted({*always, *rng.sample(sometimes, rng.randint(1, len(sometimes)))})
    fbs = sorted(rng.sample(range(1, 60), rng.randint(3, 7)))
    fcs = sorted(rng.sample(range(1, 120), rng.randint(4, 10)))
    blocks: dict[int, tuple[BlockInfo, ...]] = {
        BLOCK_OB: tuple(
            block(BLOCK_OB, n, rng.choice((LANG_LAD, LANG_STL, LANG_FBD)), rng.randrange(40, 2400, 2), f"OB{n}")
            for n in obs
        ),
        BLOCK_FB: tuple(
            block(BLOCK_FB, n, rng.choice((LANG_LAD, LANG_SCL, LANG_FBD)), rng.randrange(200, 6000, 2), name)
            for n, name in zip(fbs, rng.sample(_FB_NAMES, len(fbs)), strict=True)
        ),
        BLOCK_FC: tuple(
            block(BLOCK_FC, n, rng.choice((LANG_LAD, LANG_STL, LANG_SCL)), rng.randrange(60, 3000, 2), name)
            for n, name in zip(fcs, rng.sample(_FC_NAMES, len(fcs)), strict=True)
        ),
        BLOCK_DB: tuple(
            block(BLOCK_DB, n, LANG_DB, size, _DB_NAMES.get(n, f"DB{n}")) for n, size in sorted(DB_SIZES.items())
        ),
    }
    if line == "S7-300":
        blocks[BLOCK_SDB] = tuple(
            block(BLOCK_SDB, n, LANG_DB, rng.randrange(20, 900, 2), "", system=True) for n in _S7_300_SDBS
        )
        blocks[BLOCK_SFC] = tuple(block(BLOCK_SFC, n, LANG_STL, 0, "", system=True) for n in _S7_300_SFCS)
        blocks[BLOCK_SFB] = tuple(block(BLOCK_SFB, n, LANG_STL, 0, "", system=True) for n in _S7_300_SFBS)
    refusal = ERROR_PROTECTION_LEVEL if line == "S7-300" else ERROR_NOT_IMPLEMENTED
    return Program(blocks, refusal)


# -- payloads of the block function answers ---------------------------------------------------------


def list_blocks_payload(program: Program) -> bytes:
    """List blocks: one (0x30, type, count) entry per block type."""
    return b"".join(struct.pack(">BBH", 0x30, kind, len(program.blocks.get(kind, ()))) for kind in LIST_ORDER)


def blocks_of_type_payload(program: Program, kind: int) -> bytes:
    """List blocks of type: (number, flags, language) per block."""
    return b"".join(struct.pack(">HBB", b.number, 0x22, b.language) for b in program.blocks.get(kind, ()))


def _timestamp(moment: dt.datetime) -> bytes:
    """Milliseconds since midnight and days since 1984-01-01, as in the MC7 block header."""
    midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    millis = int((moment - midnight).total_seconds() * 1000)
    return struct.pack(">IH", millis, (moment.date() - S7_EPOCH).days)


def _text8(text: str) -> bytes:
    return text.encode("latin-1")[:8].ljust(8, b"\x00")


def block_info_payload(block: BlockInfo) -> bytes:
    """Get block info: the 78-byte answer (constant, type, 'pp', flags, language, sub block type,
    number, load size, security, timestamps, lengths, author/family/name, version, checksum)."""
    return (
        struct.pack(">BBHH", 0x01, block.kind, 0x004A, 0x0000)
        + b"pp"
        + struct.pack(">BBBBHI", 0x01, 0x01, block.language, SUB_BLOCK_TYPES[block.kind], block.number, block.load_size)
        + struct.pack(">I", 0x03 if block.protected else 0x00)
        + _timestamp(block.code_time)
        + _timestamp(block.interface_time)
        + struct.pack(">HHHH", block.interface_size, 0, block.local_data, block.mc7_size)
        + _text8(block.author)
        + _text8(block.family)
        + _text8(block.name)
        + struct.pack(">BBH", block.version, 0x00, block.checksum)
        + bytes(8)
    )


def requested_block(payload: bytes) -> tuple[int, int] | None:
    """(type, number) of a get block info request: 0x30, type, five ASCII digits, file system."""
    if len(payload) < 7 or payload[0] != 0x30 or not payload[2:7].isdigit():
        return None
    return payload[1], int(payload[2:7])
