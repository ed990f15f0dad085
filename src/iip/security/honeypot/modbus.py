"""The decoy's Modbus/TCP face: reads, writes (kept and reported), mask write (22) and read/write
multiple registers (23) on the holding registers, 43/14 device identification.

Requests are read by the monitor's own codec (`iip.security.protocols.modbus`), so a sighting
carries exactly the record passive monitoring would have produced. Answers follow the Modbus
Application Protocol v1.1b3: exception 1 for functions a small PLC does not offer, 2 for
addresses outside the tables, 3 for quantities outside the limits of §6.
"""

from __future__ import annotations

import struct

from iip.security.honeypot.connection import Exchange
from iip.security.honeypot.identity import PlcIdentity
from iip.security.honeypot.registers import ProcessImage
from iip.security.protocols.base import Endpoint, IcsMessage
from iip.security.protocols.modbus import MEI_READ_DEVICE_IDENTIFICATION, ModbusStreamDecoder

ILLEGAL_FUNCTION, ILLEGAL_DATA_ADDRESS, ILLEGAL_DATA_VALUE = 1, 2, 3
MAX_READ_BITS, MAX_READ_REGISTERS, MAX_WRITE_BITS, MAX_WRITE_REGISTERS = 2000, 125, 1968, 123
MAX_READ_WRITE_READ, MAX_READ_WRITE_WRITE = 125, 121  # function 23, §6.17
CONFORMITY_REGULAR_AND_INDIVIDUAL = 0x82
READ_CODES_LAST_OBJECT = {1: 0x02, 2: 0x06, 3: 0x06}  # basic, regular, extended stream access


def device_objects(identity: PlcIdentity) -> dict[int, str]:
    """The 43/14 objects: basic (vendor, product code, revision) and regular ones."""
    return {
        0x00: identity.vendor,
        0x01: identity.product_code,
        0x02: identity.firmware_text,
        0x03: identity.vendor_url,
        0x04: f"{identity.family} {identity.model}",
        0x05: identity.model,
        0x06: identity.plc_name,
    }


def _bits_bytes(values: list[bool]) -> bytes:
    packed = bytearray((len(values) + 7) // 8)
    for index, value in enumerate(values):
        if value:
            packed[index // 8] |= 1 << (index % 8)
    return bytes(packed)


class ModbusResponder:
    """One Modbus/TCP connection: frames in, answers out."""

    def __init__(self, peer: Endpoint, local: Endpoint, *, identity: PlcIdentity, image: ProcessImage) -> None:
        self.identity = identity
        self.image = image
        self.decoder = ModbusStreamDecoder(peer, local, to_server=True)

    def receive(self, data: bytes) -> list[Exchange]:
        exchanges = []
        for message in self.decoder.feed(data):
            if message.is_malformed:
                exchanges.append(Exchange(message))  # a real device drops what it cannot frame
                continue
            exchanges.append(Exchange(message, self._frame(message, self._answer(message))))
        return exchanges

    @staticmethod
    def _frame(request: IcsMessage, pdu: bytes) -> bytes:
        return struct.pack(">HHHB", request.transaction or 0, 0, len(pdu) + 1, request.unit or 0) + pdu

    def _answer(self, request: IcsMessage) -> bytes:
        function = request.function or 0
        if function in (1, 2, 3, 4):
            return self._read(function, request.address or 0, request.quantity or 0)
        if function in (5, 15):
            return self._write_coils(function, request)
        if function in (6, 16):
            return self._write_registers(function, request)
        if function in (22, 23):
            return self._mask_write(request) if function == 22 else self._read_write(request)
        if function == 43 and request.fields.get("mei_type") == MEI_READ_DEVICE_IDENTIFICATION:
            return self._identification(request)
        return bytes([function | 0x80, ILLEGAL_FUNCTION])

    def _read(self, function: int, address: int, quantity: int) -> bytes:
        limit = MAX_READ_BITS if function in (1, 2) else MAX_READ_REGISTERS
        if not 1 <= quantity <= limit:
            return bytes([function | 0x80, ILLEGAL_DATA_VALUE])
        if function in (1, 2):
            bits = (self.image.coils if function == 1 else self.image.discrete_inputs)(address, quantity)
            if bits is None:
                return bytes([function | 0x80, ILLEGAL_DATA_ADDRESS])
            packed = _bits_bytes(bits)
            return bytes([function, len(packed)]) + packed
        registers = (self.image.holding_registers if function == 3 else self.image.input_registers)(address, quantity)
        if registers is None:
            return bytes([function | 0x80, ILLEGAL_DATA_ADDRESS])
        return bytes([function, 2 * quantity]) + struct.pack(f">{quantity}H", *registers)

    def _write_coils(self, function: int, request: IcsMessage) -> bytes:
        address, values = request.address or 0, [bool(v) for v in request.values]
        if function == 15 and not 1 <= len(values) <= MAX_WRITE_BITS:
            return bytes([function | 0x80, ILLEGAL_DATA_VALUE])
        if not self.image.write_coils(address, values):
            return bytes([function | 0x80, ILLEGAL_DATA_ADDRESS])
        if function == 5:
            return struct.pack(">BHH", function, address, 0xFF00 if values[0] else 0x0000)
        return struct.pack(">BHH", function, address, len(values))

    def _write_registers(self, function: int, request: IcsMessage) -> bytes:
        address, values = request.address or 0, [int(v) for v in request.values]
        if function == 16 and not 1 <= len(values) <= MAX_WRITE_REGISTERS:
            return bytes([function | 0x80, ILLEGAL_DATA_VALUE])
        if not self.image.write_registers(address, values):
            return bytes([function | 0x80, ILLEGAL_DATA_ADDRESS])
        if function == 6:
            return struct.pack(">BHH", function, address, values[0])
        return struct.pack(">BHH", function, address, len(values))

    def _mask_write(self, request: IcsMessage) -> bytes:
        """22: register = (current AND and_mask) OR (or_mask AND NOT and_mask); the answer echoes the request."""
        address = request.address or 0
        and_mask, or_mask = int(request.fields["and_mask"]), int(request.fields["or_mask"])
        current = self.image.holding_registers(address, 1)
        if current is None:
            return bytes([22 | 0x80, ILLEGAL_DATA_ADDRESS])
        value = (current[0] & and_mask) | (or_mask & ~and_mask & 0xFFFF)
        self.image.write_registers(address, [value])
        return struct.pack(">BHHH", 22, address, and_mask, or_mask)

    def _read_write(self, request: IcsMessage) -> bytes:
        """23: both ranges checked first, then the write, then the read (which sees the write)."""
        fields = request.fields
        read_address, read_quantity = int(fields["read_start_address"]), int(fields["read_quantity"])
        write_address, values = int(fields["write_start_address"]), [int(v) for v in fields["write_registers"]]
        if not (1 <= read_quantity <= MAX_READ_WRITE_READ and 1 <= len(values) <= MAX_READ_WRITE_WRITE):
            return bytes([23 | 0x80, ILLEGAL_DATA_VALUE])
        if (
            self.image.holding_registers(read_address, read_quantity) is None
            or self.image.holding_registers(write_address, len(values)) is None
        ):
            return bytes([23 | 0x80, ILLEGAL_DATA_ADDRESS])
        self.image.write_registers(write_address, values)
        registers = self.image.holding_registers(read_address, read_quantity) or []
        return bytes([23, 2 * read_quantity]) + struct.pack(f">{read_quantity}H", *registers)

    def _identification(self, request: IcsMessage) -> bytes:
        """43/14: stream access (codes 1-3) from `object_id`, or one object (code 4)."""
        objects = device_objects(self.identity)
        code, first = int(request.fields.get("device_id_code", 0)), int(request.fields.get("object_id", 0))
        if code == 4:
            if first not in objects:
                return bytes([0xAB, ILLEGAL_DATA_ADDRESS])
            chosen = [first]
        elif code in READ_CODES_LAST_OBJECT:
            last = READ_CODES_LAST_OBJECT[code]
            start = first if first in objects and first <= last else 0  # an unknown start restarts at 0
            chosen = list(range(start, last + 1))
        else:
            return bytes([0xAB, ILLEGAL_DATA_VALUE])
        body = b"".join(bytes([i, len(objects[i].encode())]) + objects[i].encode() for i in chosen)
        header = bytes([43, MEI_READ_DEVICE_IDENTIFICATION, code, CONFORMITY_REGULAR_AND_INDIVIDUAL, 0, 0])
        return header + bytes([len(chosen)]) + body
