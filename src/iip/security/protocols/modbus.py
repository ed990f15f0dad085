"""Modbus/TCP: MBAP header and PDU of every public function code, as `IcsMessage` records.

Fields follow CISA ICSNPP's Modbus logs: unit id, function, transaction, start address, quantity,
values and exception code; read/write-multiple, mask-write, diagnostics, file records, FIFO and
device identification (43/14, with its objects by name in `fields["device_identification"]`) add
their own `fields`. A response does not repeat what was asked: a `ModbusSession` shared by both
directions of a connection lends the request's address and quantity to its response.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from iip.security.protocols.base import NOWHERE, Direction, Endpoint, IcsMessage, IcsProtocol
from iip.security.protocols.framing import FrameSplitter

MBAP_LENGTH = 7
MAX_LENGTH_FIELD = 254  # unit id + PDU of at most 253 bytes
_HEADER = struct.Struct(">HHHB")

FUNCTION_NAMES: dict[int, str] = {
    1: "READ_COILS",
    2: "READ_DISCRETE_INPUTS",
    3: "READ_HOLDING_REGISTERS",
    4: "READ_INPUT_REGISTERS",
    5: "WRITE_SINGLE_COIL",
    6: "WRITE_SINGLE_REGISTER",
    7: "READ_EXCEPTION_STATUS",
    8: "DIAGNOSTICS",
    11: "GET_COMM_EVENT_COUNTER",
    12: "GET_COMM_EVENT_LOG",
    15: "WRITE_MULTIPLE_COILS",
    16: "WRITE_MULTIPLE_REGISTERS",
    17: "REPORT_SERVER_ID",
    20: "READ_FILE_RECORD",
    21: "WRITE_FILE_RECORD",
    22: "MASK_WRITE_REGISTER",
    23: "READ_WRITE_MULTIPLE_REGISTERS",
    24: "READ_FIFO_QUEUE",
    43: "ENCAP_INTERFACE_TRANSPORT",
}

EXCEPTION_NAMES: dict[int, str] = {
    1: "ILLEGAL_FUNCTION",
    2: "ILLEGAL_DATA_ADDRESS",
    3: "ILLEGAL_DATA_VALUE",
    4: "SERVER_DEVICE_FAILURE",
    5: "ACKNOWLEDGE",
    6: "SERVER_DEVICE_BUSY",
    7: "NEGATIVE_ACKNOWLEDGE",
    8: "MEMORY_PARITY_ERROR",
    10: "GATEWAY_PATH_UNAVAILABLE",
    11: "GATEWAY_TARGET_DEVICE_FAILED_TO_RESPOND",
}

DIAGNOSTIC_NAMES: dict[int, str] = {
    0: "RETURN_QUERY_DATA",
    1: "RESTART_COMMUNICATIONS_OPTION",
    2: "RETURN_DIAGNOSTIC_REGISTER",
    3: "CHANGE_ASCII_INPUT_DELIMITER",
    4: "FORCE_LISTEN_ONLY_MODE",
    10: "CLEAR_COUNTERS_AND_DIAGNOSTIC_REGISTER",
    11: "RETURN_BUS_MESSAGE_COUNT",
    12: "RETURN_BUS_COMMUNICATION_ERROR_COUNT",
    13: "RETURN_BUS_EXCEPTION_ERROR_COUNT",
    14: "RETURN_SERVER_MESSAGE_COUNT",
    15: "RETURN_SERVER_NO_RESPONSE_COUNT",
    16: "RETURN_SERVER_NAK_COUNT",
    17: "RETURN_SERVER_BUSY_COUNT",
    18: "RETURN_BUS_CHARACTER_OVERRUN_COUNT",
    20: "CLEAR_OVERRUN_COUNTER_AND_FLAG",
}

DEVICE_OBJECT_NAMES: dict[int, str] = {
    0: "VendorName",
    1: "ProductCode",
    2: "MajorMinorRevision",
    3: "VendorUrl",
    4: "ProductName",
    5: "ModelName",
    6: "UserApplicationName",
}

CONFORMITY_LEVELS: dict[int, str] = {
    0x01: "BASIC_STREAM_ONLY",
    0x02: "REGULAR_STREAM_ONLY",
    0x03: "EXTENDED_STREAM_ONLY",
    0x81: "BASIC_STREAM_AND_INDIVIDUAL",
    0x82: "REGULAR_STREAM_AND_INDIVIDUAL",
    0x83: "EXTENDED_STREAM_AND_INDIVIDUAL",
}

MEI_READ_DEVICE_IDENTIFICATION = 0x0E
MEI_CANOPEN = 0x0D


class Malformed(ValueError):
    """A frame that breaks the protocol; its text is the record's `malformed` reason."""


def measure_frame(buffer: bytes, position: int) -> int | None:
    """Length of the Modbus/TCP frame starting at `position` (0 when no frame can start there)."""
    if len(buffer) - position < 6:
        return None
    if buffer[position + 2] or buffer[position + 3]:  # protocol id is always 0
        return 0
    length = (buffer[position + 4] << 8) | buffer[position + 5]
    if length < 2 or length > MAX_LENGTH_FIELD:
        return 0
    return 6 + length


# --- PDU readers: each fills the record from the bytes after the function code ---------------


def _u16s(data: bytes) -> list[int]:
    if len(data) % 2:
        raise Malformed("odd register byte count")
    return list(struct.unpack(f">{len(data) // 2}H", data))


def _bits(data: bytes, count: int | None = None) -> list[bool]:
    bits = [bool(byte >> bit & 1) for byte in data for bit in range(8)]
    return bits if count is None else bits[:count]


def _counted(body: bytes, *, offset: int = 0) -> bytes:
    """The `byte count`-prefixed data at `offset`, checked against what is there."""
    if len(body) <= offset:
        raise Malformed("missing byte count")
    count = body[offset]
    data = body[offset + 1 :]
    if len(data) != count:
        raise Malformed("byte count does not match data")
    return data


def _exact(body: bytes, size: int) -> None:
    if len(body) != size:
        raise Malformed("wrong PDU length for function")


def _address_quantity(body: bytes, msg: IcsMessage) -> None:
    _exact(body, 4)
    msg.address, msg.quantity = struct.unpack(">HH", body)


def _read_bits_response(body: bytes, msg: IcsMessage) -> None:
    data = _counted(body)
    msg.values = _bits(data)
    msg.fields["byte_count"] = len(data)


def _read_registers_response(body: bytes, msg: IcsMessage) -> None:
    data = _counted(body)
    msg.values = _u16s(data)
    msg.quantity = len(msg.values)
    msg.fields["byte_count"] = len(data)


def _write_single_coil(body: bytes, msg: IcsMessage) -> None:
    _exact(body, 4)
    msg.address, raw = struct.unpack(">HH", body)
    if raw not in (0x0000, 0xFF00):
        raise Malformed("coil value is neither 0x0000 nor 0xFF00")
    msg.quantity, msg.values = 1, [raw == 0xFF00]


def _write_single_register(body: bytes, msg: IcsMessage) -> None:
    _exact(body, 4)
    msg.address, value = struct.unpack(">HH", body)
    msg.quantity, msg.values = 1, [value]


def _write_multiple_coils_request(body: bytes, msg: IcsMessage) -> None:
    if len(body) < 5:
        raise Malformed("wrong PDU length for function")
    msg.address, msg.quantity = struct.unpack(">HH", body[:4])
    data = _counted(body, offset=4)
    if len(data) != (msg.quantity + 7) // 8:
        raise Malformed("byte count does not match quantity")
    msg.values = _bits(data, msg.quantity)


def _write_multiple_registers_request(body: bytes, msg: IcsMessage) -> None:
    if len(body) < 5:
        raise Malformed("wrong PDU length for function")
    msg.address, msg.quantity = struct.unpack(">HH", body[:4])
    msg.values = _u16s(_counted(body, offset=4))
    if len(msg.values) != msg.quantity:
        raise Malformed("byte count does not match quantity")


def _mask_write(body: bytes, msg: IcsMessage) -> None:
    _exact(body, 6)
    msg.address, and_mask, or_mask = struct.unpack(">HHH", body)
    msg.quantity = 1
    msg.fields.update(and_mask=and_mask, or_mask=or_mask)


def _read_write_request(body: bytes, msg: IcsMessage) -> None:
    if len(body) < 9:
        raise Malformed("wrong PDU length for function")
    read_address, read_quantity, write_address, write_quantity = struct.unpack(">HHHH", body[:8])
    written = _u16s(_counted(body, offset=8))
    if len(written) != write_quantity:
        raise Malformed("byte count does not match quantity")
    msg.address, msg.quantity, msg.values = read_address, read_quantity, written
    msg.fields.update(
        read_start_address=read_address,
        read_quantity=read_quantity,
        write_start_address=write_address,
        write_quantity=write_quantity,
        write_registers=written,
    )


def _read_write_response(body: bytes, msg: IcsMessage) -> None:
    _read_registers_response(body, msg)
    msg.fields["read_registers"] = msg.values


def _empty(body: bytes, msg: IcsMessage) -> None:
    _exact(body, 0)


def _exception_status_response(body: bytes, msg: IcsMessage) -> None:
    _exact(body, 1)
    msg.values = [body[0]]
    msg.fields["output_data"] = body[0]


def _diagnostics(body: bytes, msg: IcsMessage) -> None:
    if len(body) < 2:
        raise Malformed("wrong PDU length for function")
    sub = int.from_bytes(body[:2], "big")
    msg.fields.update(sub_function=sub, sub_function_name=DIAGNOSTIC_NAMES.get(sub, f"UNKNOWN_{sub}"))
    msg.values = _u16s(body[2:])


def _comm_event_counter_response(body: bytes, msg: IcsMessage) -> None:
    _exact(body, 4)
    status, count = struct.unpack(">HH", body)
    msg.values = [count]
    msg.fields.update(status=status, event_count=count)


def _comm_event_log_response(body: bytes, msg: IcsMessage) -> None:
    data = _counted(body)
    if len(data) < 6:
        raise Malformed("byte count does not match data")
    status, events, messages = struct.unpack(">HHH", data[:6])
    msg.values = list(data[6:])
    msg.fields.update(status=status, event_count=events, message_count=messages, events=list(data[6:]))


def _report_server_id_response(body: bytes, msg: IcsMessage) -> None:
    data = _counted(body)
    if not data:
        raise Malformed("byte count does not match data")
    # The server id is device specific; the run indicator is its last byte (0x00 off, 0xFF on).
    msg.fields.update(server_id=data[:-1].hex(), run_indicator=data[-1] == 0xFF)
    msg.values = [data[:-1].hex()]


def _file_sub_requests(data: bytes, *, with_data: bool) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 7:
            raise Malformed("truncated file sub-request")
        reference, file_number, record_number, length = struct.unpack(">BHHH", data[offset : offset + 7])
        offset += 7
        record: dict[str, Any] = {"file_number": file_number, "record_number": record_number, "record_length": length}
        if reference != 6:
            raise Malformed("file reference type is not 6")
        if with_data:
            chunk = data[offset : offset + 2 * length]
            if len(chunk) != 2 * length:
                raise Malformed("truncated file record data")
            record["record_data"] = _u16s(chunk)
            offset += 2 * length
        records.append(record)
    return records


def _read_file_request(body: bytes, msg: IcsMessage) -> None:
    records = _file_sub_requests(_counted(body), with_data=False)
    msg.fields["file_records"] = records
    msg.quantity = len(records)


def _read_file_response(body: bytes, msg: IcsMessage) -> None:
    data = _counted(body)
    records: list[dict[str, Any]] = []
    offset = 0
    while offset < len(data):
        length = data[offset]
        if length < 1 or offset + 1 + length > len(data) or data[offset + 1] != 6:
            raise Malformed("bad file sub-response")
        records.append({"record_data": _u16s(data[offset + 2 : offset + 1 + length])})
        offset += 1 + length
    msg.fields["file_records"] = records
    msg.quantity = len(records)
    msg.values = [value for record in records for value in record["record_data"]]


def _write_file(body: bytes, msg: IcsMessage) -> None:
    records = _file_sub_requests(_counted(body), with_data=True)
    msg.fields["file_records"] = records
    msg.quantity = len(records)
    msg.values = [value for record in records for value in record["record_data"]]


def _fifo_request(body: bytes, msg: IcsMessage) -> None:
    _exact(body, 2)
    msg.address = int.from_bytes(body, "big")


def _fifo_response(body: bytes, msg: IcsMessage) -> None:
    if len(body) < 4:
        raise Malformed("wrong PDU length for function")
    byte_count, fifo_count = struct.unpack(">HH", body[:4])
    if byte_count != len(body) - 2 or byte_count != 2 + 2 * fifo_count:
        raise Malformed("byte count does not match data")
    msg.values = _u16s(body[4:])
    msg.quantity = fifo_count


def _encapsulated_request(body: bytes, msg: IcsMessage) -> None:
    if not body:
        raise Malformed("missing MEI type")
    msg.fields["mei_type"] = body[0]
    if body[0] == MEI_READ_DEVICE_IDENTIFICATION:
        if len(body) < 3:
            raise Malformed("truncated device identification request")
        if len(body) > 3:
            msg.fields["trailing_bytes"] = body[3:].hex()
        msg.fields.update(device_id_code=body[1], object_id=body[2])
        msg.address = body[2]
    else:
        msg.fields["mei_data"] = body[1:].hex()


def _encapsulated_response(body: bytes, msg: IcsMessage) -> None:
    if not body:
        raise Malformed("missing MEI type")
    msg.fields["mei_type"] = body[0]
    if body[0] != MEI_READ_DEVICE_IDENTIFICATION:
        msg.fields["mei_data"] = body[1:].hex()
        return
    if len(body) < 6:
        raise Malformed("truncated device identification")
    device_id_code, conformity, more, next_object, count = body[1:6]
    msg.fields.update(
        device_id_code=device_id_code,
        conformity_level_code=conformity,
        conformity_level=CONFORMITY_LEVELS.get(conformity, f"UNKNOWN_{conformity}"),
        more_follows=more == 0xFF,
        next_object_id=next_object,
    )
    identification: dict[str, str] = {}
    offset = 6
    for _ in range(count):
        if offset + 2 > len(body) or offset + 2 + body[offset + 1] > len(body):
            raise Malformed("truncated device identification object")
        object_id, length = body[offset], body[offset + 1]
        name = DEVICE_OBJECT_NAMES.get(object_id, f"Object0x{object_id:02X}")
        identification[name] = body[offset + 2 : offset + 2 + length].decode("latin-1")
        offset += 2 + length
    if offset != len(body):
        raise Malformed("bytes after device identification objects")
    msg.fields["device_identification"] = identification
    msg.quantity = count
    msg.values = list(identification.values())


Reader = Callable[[bytes, IcsMessage], None]

# function code -> (request reader, response reader)
READERS: dict[int, tuple[Reader, Reader]] = {
    1: (_address_quantity, _read_bits_response),
    2: (_address_quantity, _read_bits_response),
    3: (_address_quantity, _read_registers_response),
    4: (_address_quantity, _read_registers_response),
    5: (_write_single_coil, _write_single_coil),
    6: (_write_single_register, _write_single_register),
    7: (_empty, _exception_status_response),
    8: (_diagnostics, _diagnostics),
    11: (_empty, _comm_event_counter_response),
    12: (_empty, _comm_event_log_response),
    15: (_write_multiple_coils_request, _address_quantity),
    16: (_write_multiple_registers_request, _address_quantity),
    17: (_empty, _report_server_id_response),
    20: (_read_file_request, _read_file_response),
    21: (_write_file, _write_file),
    22: (_mask_write, _mask_write),
    23: (_read_write_request, _read_write_response),
    24: (_fifo_request, _fifo_response),
    43: (_encapsulated_request, _encapsulated_response),
}


def decode_frame(
    frame: bytes,
    *,
    to_server: bool,
    source: Endpoint = NOWHERE,
    destination: Endpoint = NOWHERE,
    time: dt.datetime | None = None,
    frame_number: int | None = None,
) -> IcsMessage:
    """One complete Modbus/TCP frame (MBAP header + PDU) as a record; never raises."""
    msg = IcsMessage.of_frame(
        IcsProtocol.MODBUS,
        frame,
        to_server=to_server,
        source=source,
        destination=destination,
        time=time,
        frame_number=frame_number,
    )
    if len(frame) < MBAP_LENGTH + 1:
        msg.malformed = "frame shorter than MBAP header and function code"
        return msg
    transaction, protocol_id, length, unit = _HEADER.unpack_from(frame)
    msg.transaction, msg.unit = transaction, unit
    if protocol_id != 0:
        msg.malformed = "protocol id is not 0"
        return msg
    if length != len(frame) - 6:
        msg.malformed = "MBAP length does not match frame"
        return msg
    code = frame[MBAP_LENGTH]
    function = code & 0x7F
    msg.function = function
    msg.function_name = FUNCTION_NAMES.get(function, f"UNKNOWN_{function}")
    msg.fields["pdu_type"] = "req" if to_server else "resp"
    body = frame[MBAP_LENGTH + 1 :]
    try:
        _read_pdu(code, function, body, msg, to_server=to_server)
    except (Malformed, struct.error, IndexError, ValueError) as err:
        msg.malformed = str(err) if isinstance(err, Malformed) else "truncated PDU"
    return msg


def _read_pdu(code: int, function: int, body: bytes, msg: IcsMessage, *, to_server: bool) -> None:
    if code & 0x80:
        if to_server:
            raise Malformed("exception function code in a request")
        if not body:
            raise Malformed("exception response without exception code")
        if len(body) > 1:
            msg.fields["trailing_bytes"] = body[1:].hex()  # some devices pad exception responses
        msg.exception = body[0]
        msg.exception_name = EXCEPTION_NAMES.get(body[0], f"UNKNOWN_{body[0]}")
        return
    readers = READERS.get(function)
    if readers is None:
        msg.fields["data"] = body.hex()  # user-defined or reserved function: kept as evidence
        return
    readers[0 if to_server else 1](body, msg)


class ModbusSession:
    """What both directions of one connection share: requests waiting for their responses."""

    __slots__ = ("_requests",)

    MAX_OUTSTANDING = 256

    def __init__(self) -> None:
        self._requests: OrderedDict[tuple[int | None, int | None], IcsMessage] = OrderedDict()

    def request(self, msg: IcsMessage) -> None:
        if msg.malformed:
            return
        self._requests[(msg.transaction, msg.unit)] = msg
        if len(self._requests) > self.MAX_OUTSTANDING:
            self._requests.popitem(last=False)

    def response(self, msg: IcsMessage) -> None:
        """Lends the request's start address and quantity to its response (as ICSNPP logs them)."""
        request = self._requests.pop((msg.transaction, msg.unit), None)
        if request is None or request.function != msg.function or msg.malformed:
            return
        msg.fields["request_frame"] = request.frame
        if msg.exception is not None:
            msg.address, msg.quantity = request.address, request.quantity
            return
        if msg.function in (1, 2) and request.quantity is not None:
            msg.values = msg.values[: request.quantity]
            msg.address, msg.quantity = request.address, request.quantity
        elif msg.function in (3, 4, 23):
            msg.address = request.address
        elif msg.function == 43 and request.fields.get("mei_type") == MEI_READ_DEVICE_IDENTIFICATION:
            msg.fields.setdefault("object_id", request.fields.get("object_id"))


class ModbusStreamDecoder:
    """One direction of a Modbus/TCP connection: bytes in, one record per frame (or garbage run)."""

    def __init__(
        self,
        source: Endpoint,
        destination: Endpoint,
        *,
        to_server: bool,
        session: ModbusSession | None = None,
    ) -> None:
        self.source, self.destination, self.to_server = source, destination, to_server
        self.session = session
        self._splitter = FrameSplitter(measure_frame)

    def feed(self, data: bytes, *, time: dt.datetime | None = None, frame: int | None = None) -> list[IcsMessage]:
        messages: list[IcsMessage] = []
        for is_frame, chunk in self._splitter.push(data):
            if is_frame:
                msg = decode_frame(
                    chunk,
                    to_server=self.to_server,
                    source=self.source,
                    destination=self.destination,
                    time=time,
                    frame_number=frame,
                )
                self._pair(msg)
            else:
                msg = self._garbage(chunk, "bytes that are not a Modbus/TCP frame", time, frame)
            messages.append(msg)
        return messages

    def finish(self, *, time: dt.datetime | None = None, frame: int | None = None) -> list[IcsMessage]:
        """The end of the stream: an unfinished frame left over becomes a malformed record."""
        rest = self._splitter.take_rest()
        if not rest:
            return []
        ended_inside = measure_frame(rest, 0) != 0
        reason = "stream ended inside a frame" if ended_inside else "bytes that are not a Modbus/TCP frame"
        return [self._garbage(rest, reason, time, frame)]

    def _pair(self, msg: IcsMessage) -> None:
        if self.session is None:
            return
        if self.to_server:
            self.session.request(msg)
        else:
            self.session.response(msg)

    def _garbage(self, chunk: bytes, reason: str, time: dt.datetime | None, frame: int | None) -> IcsMessage:
        return IcsMessage(
            protocol=IcsProtocol.MODBUS,
            direction=Direction.REQUEST if self.to_server else Direction.RESPONSE,
            source=self.source,
            destination=self.destination,
            time=time,
            malformed=reason,
            frame=frame,
            raw=chunk,
        )
