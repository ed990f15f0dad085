"""S7comm over ISO-on-TCP: TPKT (RFC 1006) carrying COTP (ISO 8073 class 0) carrying S7 PDUs.

One `IcsMessage` per COTP connection request/confirm and per S7 PDU, shaped like ICSNPP's
s7comm logs (cotp.log, s7comm.log, s7comm_read_szl.log, s7comm_upload_download.log,
s7comm_plus.log): ROSCTR, PDU reference, function (job/ack-data) or function group (userdata) with
subfunction, error class/code, and per function what the wire says - read/write var items and data
items, setup communication, PI services (start/stop), block transfer (download/upload filenames),
SZL reads with the records of module identification (0x0011) and component identification
(0x001C), CPU status (0x0424) and clock. S7comm-plus (protocol id 0x72, S7-1200/1500 with TIA)
is recognised and recorded as such, not decoded.

Layouts follow Wireshark's packet-s7comm dissector and Siemens' "System Software for S7-300/400,
System and Standard Functions" (SZL chapter). The encoders at the end build the replies a CPU
sends; the decoy PLC answers with them.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass, field
from typing import Any

from iip.security.protocols.base import Direction, Endpoint, IcsMessage, IcsProtocol

S7_PORT = 102  # ISO-TSAP (RFC 1006)
TPKT_VERSION = 3
TPKT_HEADER = 4
MIN_TPKT_LENGTH = 7  # TPKT header + the smallest COTP DT header
S7_PROTOCOL_ID = 0x32
S7_PLUS_PROTOCOL_ID = 0x72
MAX_REASSEMBLY = 65536  # a COTP DT sequence longer than any S7 PDU is not a PDU
MAX_GARBAGE_RUN = 65536  # unreadable bytes reported in pieces of at most this size

# -- tables ------------------------------------------------------------------------------------

COTP_PDU_NAMES = {
    0xE0: "CR",
    0xD0: "CC",
    0x80: "DR",
    0xC0: "DC",
    0xF0: "DT",
    0x10: "ED",
    0x60: "AK",
    0x20: "EA",
    0x50: "RJ",
    0x70: "ER",
}
COTP_CR, COTP_CC, COTP_DR, COTP_DT = 0xE0, 0xD0, 0x80, 0xF0

ROSCTR_JOB, ROSCTR_ACK, ROSCTR_ACK_DATA, ROSCTR_USERDATA = 1, 2, 3, 7
ROSCTR_NAMES = {ROSCTR_JOB: "JOB", ROSCTR_ACK: "ACK", ROSCTR_ACK_DATA: "ACK_DATA", ROSCTR_USERDATA: "USERDATA"}

FUNC_CPU_SERVICES = 0x00
FUNC_SETUP_COMMUNICATION = 0xF0
FUNC_READ_VAR = 0x04
FUNC_WRITE_VAR = 0x05
FUNC_REQUEST_DOWNLOAD = 0x1A
FUNC_DOWNLOAD_BLOCK = 0x1B
FUNC_DOWNLOAD_ENDED = 0x1C
FUNC_START_UPLOAD = 0x1D
FUNC_UPLOAD = 0x1E
FUNC_END_UPLOAD = 0x1F
FUNC_PI_SERVICE = 0x28
FUNC_PLC_STOP = 0x29
FUNCTION_NAMES = {
    FUNC_CPU_SERVICES: "CPU_SERVICES",
    FUNC_SETUP_COMMUNICATION: "SETUP_COMMUNICATION",
    FUNC_READ_VAR: "READ_VAR",
    FUNC_WRITE_VAR: "WRITE_VAR",
    FUNC_REQUEST_DOWNLOAD: "REQUEST_DOWNLOAD",
    FUNC_DOWNLOAD_BLOCK: "DOWNLOAD_BLOCK",
    FUNC_DOWNLOAD_ENDED: "DOWNLOAD_ENDED",
    FUNC_START_UPLOAD: "START_UPLOAD",
    FUNC_UPLOAD: "UPLOAD",
    FUNC_END_UPLOAD: "END_UPLOAD",
    FUNC_PI_SERVICE: "PI_SERVICE",
    FUNC_PLC_STOP: "PLC_STOP",
}
BLOCK_TRANSFER_FUNCTIONS = frozenset(range(FUNC_REQUEST_DOWNLOAD, FUNC_END_UPLOAD + 1))

GROUP_MODE_TRANSITION, GROUP_PROGRAMMER, GROUP_CYCLIC, GROUP_BLOCK = 0x0, 0x1, 0x2, 0x3
GROUP_CPU, GROUP_SECURITY, GROUP_PBC, GROUP_TIME, GROUP_NC = 0x4, 0x5, 0x6, 0x7, 0xF
GROUP_NAMES = {
    GROUP_MODE_TRANSITION: "MODE_TRANSITION",
    GROUP_PROGRAMMER: "PROGRAMMER_COMMANDS",
    GROUP_CYCLIC: "CYCLIC_DATA",
    GROUP_BLOCK: "BLOCK_FUNCTIONS",
    GROUP_CPU: "CPU_FUNCTIONS",
    GROUP_SECURITY: "SECURITY",
    GROUP_PBC: "PBC_BSEND_BRECV",
    GROUP_TIME: "TIME_FUNCTIONS",
    GROUP_NC: "NC_PROGRAMMING",
}
SUBFUNCTION_READ_SZL = 0x01
SUBFUNCTION_NAMES: dict[int, dict[int, str]] = {
    GROUP_MODE_TRANSITION: {
        0x00: "STOP",
        0x01: "WARM_RESTART",
        0x02: "RUN",
        0x03: "HOT_RESTART",
        0x04: "HOLD",
        0x06: "COLD_RESTART",
        0x09: "RUN_R",
        0x0B: "LINK_UP",
        0x0C: "UPDATE",
    },
    GROUP_PROGRAMMER: {
        0x01: "REQUEST_DIAG_DATA_TYPE1",
        0x02: "VARTAB",
        0x0C: "ERASE",
        0x0E: "READ_DIAG_DATA",
        0x0F: "REMOVE_DIAG_DATA",
        0x10: "FORCES",
        0x13: "REQUEST_DIAG_DATA_TYPE2",
    },
    GROUP_CYCLIC: {0x01: "MEMORY", 0x04: "UNSUBSCRIBE", 0x05: "MEMORY2", 0x07: "RDREC"},
    GROUP_BLOCK: {0x01: "LIST_BLOCKS", 0x02: "LIST_BLOCKS_OF_TYPE", 0x03: "GET_BLOCK_INFO"},
    GROUP_CPU: {
        0x01: "READ_SZL",
        0x02: "MESSAGE_SERVICE",
        0x03: "DIAGNOSTIC_MESSAGE",
        0x05: "ALARM8_INDICATION",
        0x06: "NOTIFY_INDICATION",
        0x07: "ALARM8_LOCK",
        0x08: "ALARM8_UNLOCK",
        0x09: "SCAN_INDICATION",
        0x0B: "ALARM_ACK",
        0x0C: "ALARM_ACK_INDICATION",
        0x0D: "ALARM8_LOCK_INDICATION",
        0x0E: "ALARM8_UNLOCK_INDICATION",
        0x11: "ALARMSQ_INDICATION",
        0x12: "ALARMS_INDICATION",
        0x13: "ALARM_QUERY",
        0x16: "NOTIFY8_INDICATION",
    },
    GROUP_SECURITY: {0x01: "PLC_PASSWORD", 0x02: "CLEAN_SESSION_PASSWORD"},
    GROUP_PBC: {0x01: "BSEND_BRECV"},
    GROUP_TIME: {0x01: "READ_CLOCK", 0x02: "SET_CLOCK", 0x03: "READ_CLOCK_FOLLOWING", 0x04: "SET_CLOCK_2"},
}
USERDATA_TYPE_PUSH, USERDATA_TYPE_REQUEST, USERDATA_TYPE_RESPONSE = 0x0, 0x4, 0x8

AREA_NAMES = {
    0x03: "SYSTEM_INFO_200",
    0x05: "SYSTEM_FLAGS_200",
    0x06: "ANALOG_INPUTS_200",
    0x07: "ANALOG_OUTPUTS_200",
    0x1C: "COUNTER",
    0x1D: "TIMER",
    0x1E: "IEC_COUNTER_200",
    0x1F: "IEC_TIMER_200",
    0x80: "PERIPHERAL",
    0x81: "INPUTS",
    0x82: "OUTPUTS",
    0x83: "FLAGS",
    0x84: "DATA_BLOCK",
    0x85: "INSTANCE_DATA_BLOCK",
    0x86: "LOCAL",
    0x87: "PREVIOUS_LOCAL",
}
AREA_INPUTS, AREA_OUTPUTS, AREA_FLAGS, AREA_DB = 0x81, 0x82, 0x83, 0x84

TRANSPORT_SIZE_NAMES = {
    0x01: "BIT",
    0x02: "BYTE",
    0x03: "CHAR",
    0x04: "WORD",
    0x05: "INT",
    0x06: "DWORD",
    0x07: "DINT",
    0x08: "REAL",
    0x09: "DATE",
    0x0A: "TOD",
    0x0B: "TIME",
    0x0C: "S5TIME",
    0x0F: "DATE_AND_TIME",
    0x1C: "COUNTER",
    0x1D: "TIMER",
    0x1E: "IEC_TIMER",
    0x1F: "IEC_COUNTER",
    0x20: "HS_COUNTER",
}
ITEM_SIZE_BYTES = {0x01: 1, 0x02: 1, 0x03: 1, 0x04: 2, 0x05: 2, 0x06: 4, 0x07: 4, 0x08: 4, 0x1C: 2, 0x1D: 2}

# Data item transport sizes (the data part, not the address part).
DATA_NULL, DATA_BIT, DATA_BYTE, DATA_INT, DATA_DINT, DATA_REAL, DATA_OCTET = 0x00, 0x03, 0x04, 0x05, 0x06, 0x07, 0x09
_LENGTH_IN_BITS = frozenset({DATA_BYTE, DATA_INT, DATA_DINT})

RETURN_SUCCESS = 0xFF
RETURN_CODE_NAMES = {
    0x00: "RESERVED",
    0x01: "HARDWARE_FAULT",
    0x03: "ACCESS_DENIED",
    0x05: "ADDRESS_OUT_OF_RANGE",
    0x06: "DATA_TYPE_NOT_SUPPORTED",
    0x07: "DATA_TYPE_INCONSISTENT",
    0x0A: "OBJECT_DOES_NOT_EXIST",
    0xFF: "SUCCESS",
}
ERROR_CLASS_NAMES = {
    0x00: "NO_ERROR",
    0x81: "APPLICATION_RELATIONSHIP",
    0x82: "OBJECT_DEFINITION",
    0x83: "NO_RESOURCES_AVAILABLE",
    0x84: "ERROR_ON_SERVICE_PROCESSING",
    0x85: "ERROR_ON_SUPPLIES",
    0x87: "ACCESS_ERROR",
}
ERROR_CONTEXT_NOT_SUPPORTED = 0x8104  # "function not implemented or error in telegram"
ERROR_SZL_INVALID_ID = 0xD401
ERROR_NAMES = {
    0x0000: "NO_ERROR",
    0x0110: "INVALID_BLOCK_NUMBER",
    0x0112: "INVALID_PARAMETER",
    0x011A: "PROTECTION_ERROR",
    0x8104: "CONTEXT_NOT_SUPPORTED",
    0x8500: "WRONG_PDU_SIZE",
    0xD209: "BLOCK_NOT_FOUND",
    0xD401: "SZL_INVALID_ID",
    0xD402: "SZL_INVALID_INDEX",
    0xD404: "SZL_NOT_AVAILABLE",
    0xD602: "PASSWORD_WRONG",
    0xD604: "ACCESS_DENIED",
}

BLOCK_TYPE_NAMES = {"08": "OB", "0A": "DB", "0B": "SDB", "0C": "FC", "0D": "SFC", "0E": "FB", "0F": "SFB"}
FILESYSTEM_NAMES = {"P": "PASSIVE", "A": "ACTIVE", "B": "ACTIVE_AND_PASSIVE"}

SZL_MODULE_IDENTIFICATION = 0x0011
SZL_COMPONENT_IDENTIFICATION = 0x001C
SZL_CPU_STATUS = 0x0424
SZL_ID_NAMES = {
    0x0000: "SZL_LIST",
    0x0011: "MODULE_IDENTIFICATION",
    0x0111: "MODULE_IDENTIFICATION_RECORD",
    0x0012: "CPU_CHARACTERISTICS",
    0x0013: "USER_MEMORY_AREAS",
    0x0014: "SYSTEM_AREAS",
    0x0015: "BLOCK_TYPES",
    0x0019: "MODULE_LEDS",
    0x001C: "COMPONENT_IDENTIFICATION",
    0x011C: "COMPONENT_IDENTIFICATION_RECORD",
    0x0022: "INTERRUPT_STATUS",
    0x0025: "PROCESS_IMAGE_PARTITIONS",
    0x0031: "COMMUNICATION_CAPABILITIES",
    0x0131: "COMMUNICATION_CAPABILITIES_RECORD",
    0x0132: "COMMUNICATION_STATUS",
    0x0232: "PROTECTION_LEVEL",
    0x0037: "ETHERNET_DETAILS",
    0x0074: "MODULE_LED_STATUS",
    0x0091: "MODULE_STATUS",
    0x00A0: "DIAGNOSTIC_BUFFER",
    0x0124: "LAST_MODE_TRANSITION",
    0x0424: "CPU_STATUS",
    0x0D91: "MODULE_STATUS_RACK",
}
# SZL 0x001C record index -> what the text field holds.
COMPONENT_FIELDS = {
    0x0001: "plc_name",
    0x0002: "module_name",
    0x0003: "plant_id",
    0x0004: "copyright",
    0x0005: "serial_number",
    0x0007: "module_type",
    0x0008: "memory_card_serial",
    0x0009: "manufacturer_profile",
    0x000A: "oem_id",
    0x000B: "location",
}
CPU_MODE_NAMES = {
    0x00: "UNKNOWN",
    0x01: "STOP_UPDATE",
    0x02: "STOP_RESET",
    0x03: "STOP_INIT",
    0x04: "STOP",
    0x05: "STARTUP_COMPLETE_RESTART",
    0x06: "STARTUP_COLD_RESTART",
    0x07: "STARTUP_RESTART",
    0x08: "RUN",
    0x09: "RUN_REDUNDANT",
    0x0A: "HOLD",
    0x0D: "DEFECTIVE",
}

S7PLUS_OPCODE_NAMES = {0x31: "REQUEST", 0x32: "RESPONSE", 0x33: "NOTIFICATION", 0x02: "RESPONSE2"}
S7PLUS_FUNCTION_NAMES = {
    0x04BB: "EXPLORE",
    0x04CA: "CREATE_OBJECT",
    0x04D4: "DELETE_OBJECT",
    0x04F2: "SET_VARIABLE",
    0x0524: "GET_LINK",
    0x0542: "SET_MULTI_VARIABLES",
    0x054C: "GET_MULTI_VARIABLES",
    0x0556: "BEGIN_SEQUENCE",
    0x0560: "END_SEQUENCE",
    0x056B: "INVOKE",
    0x0586: "GET_VAR_SUBSTREAMED",
}


class S7FrameError(ValueError):
    """A TPKT frame or S7 PDU that does not follow the layout; the message says where."""


def _name(table: dict[int, str], code: int) -> str:
    return table.get(code, f"UNKNOWN_0x{code:02X}")


def _text(raw: bytes) -> str:
    """An S7 fixed-width text field: ASCII padded with NULs or blanks."""
    return raw.split(b"\x00", 1)[0].decode("latin-1").strip()


def _bcd(byte: int) -> int:
    return (byte >> 4) * 10 + (byte & 0x0F)


def _to_bcd(value: int) -> int:
    return ((value // 10) << 4) | (value % 10)


# -- COTP ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class CotpPdu:
    """The COTP header of one TPKT frame, and for DT the user data it carries."""

    code: int
    eot: bool = True
    data: bytes = b""
    fields: dict[str, Any] = field(default_factory=dict)


def tsap_rack_slot(tsap: bytes) -> tuple[int, int, int] | None:
    """(connection type, rack, slot) of a two-byte S7 TSAP; None for text TSAPs (S7-1200/1500 names)."""
    if len(tsap) != 2:
        return None
    return tsap[0], tsap[1] >> 5, tsap[1] & 0x1F


def _cotp_parameters(raw: bytes) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    offset = 0
    while offset + 2 <= len(raw):
        code, length = raw[offset], raw[offset + 1]
        value = raw[offset + 2 : offset + 2 + length]
        if len(value) < length:
            raise S7FrameError(f"COTP parameter 0x{code:02X} truncated")
        if code == 0xC0 and length == 1:
            fields["tpdu_size"] = 1 << value[0] if 7 <= value[0] <= 13 else value[0]
        elif code == 0xC1:
            fields["tsap_calling"] = value.hex()
        elif code == 0xC2:
            fields["tsap_called"] = value.hex()
            rack_slot = tsap_rack_slot(value)
            if rack_slot is not None:
                fields["connection_type"], fields["rack"], fields["slot"] = rack_slot
            else:
                fields["tsap_called_text"] = value.decode("latin-1")
        offset += 2 + length
    return fields


def decode_cotp(payload: bytes) -> CotpPdu:
    """The COTP PDU in a TPKT payload; raises S7FrameError when it cannot be read."""
    if len(payload) < 2:
        raise S7FrameError("COTP header truncated")
    length_indicator = payload[0]
    if length_indicator + 1 > len(payload) or length_indicator < 1:
        raise S7FrameError(f"COTP length indicator {length_indicator} exceeds the TPKT payload")
    code = payload[1] & 0xF0  # the low nibble is the credit (CR, CC, AK) or zero
    header = payload[: length_indicator + 1]
    if code == COTP_DT:
        if length_indicator < 2:
            raise S7FrameError("COTP DT header truncated")
        return CotpPdu(code, eot=bool(header[2] & 0x80), data=payload[length_indicator + 1 :])
    if code in (COTP_CR, COTP_CC, COTP_DR):
        if length_indicator < 6:
            raise S7FrameError(f"COTP {COTP_PDU_NAMES[code]} header truncated")
        dst_ref, src_ref = struct.unpack_from(">HH", header, 2)
        fields: dict[str, Any] = {"dst_ref": dst_ref, "src_ref": src_ref}
        if code == COTP_DR:
            fields["reason"] = header[6]
        else:
            fields["class"] = header[6] >> 4
            fields.update(_cotp_parameters(header[7:]))
        return CotpPdu(code, fields=fields)
    if code in COTP_PDU_NAMES:
        return CotpPdu(code)
    raise S7FrameError(f"unknown COTP PDU type 0x{payload[1]:02X}")


# -- S7 header and parameters ------------------------------------------------------------------


@dataclass(slots=True)
class _Decoded:
    """What the parameter/data decoders fill in; becomes the columns and `fields` of the record."""

    function: int | None = None
    function_name: str = ""
    address: int | None = None
    quantity: int | None = None
    values: list[Any] = field(default_factory=list)
    exception: int | None = None
    exception_name: str = ""
    direction: Direction | None = None
    fields: dict[str, Any] = field(default_factory=dict)


def _item_spec(param: bytes, offset: int) -> tuple[dict[str, Any], int]:
    """One request item (variable specification) at `offset`; returns it and the next offset."""
    if offset + 2 > len(param) or param[offset] != 0x12:
        raise S7FrameError(f"item specification expected at parameter byte {offset}")
    length = param[offset + 1]
    spec = param[offset + 2 : offset + 2 + length]
    if len(spec) < length or length < 1:
        raise S7FrameError(f"item specification at parameter byte {offset} truncated")
    syntax_id = spec[0]
    item: dict[str, Any] = {"syntax_id": syntax_id}
    if syntax_id == 0x10 and length >= 10:  # S7ANY
        transport, count, db, area = struct.unpack_from(">BHHB", spec, 1)
        address = int.from_bytes(spec[7:10], "big")
        item.update(
            transport_size=transport,
            transport_size_name=_name(TRANSPORT_SIZE_NAMES, transport),
            count=count,
            db=db,
            area=area,
            area_name=_name(AREA_NAMES, area),
            byte=address >> 3,
            bit=address & 0x07,
        )
    elif syntax_id == 0xB0 and length >= 6:  # DBREAD (S7-400): number of areas, length, DB, start
        item.update(area=AREA_DB, area_name="DATA_BLOCK", count=spec[2], db=struct.unpack_from(">H", spec, 3)[0])
        item.update(byte=struct.unpack_from(">H", spec, 5)[0] if length >= 7 else 0, bit=0)
    else:
        item["spec"] = spec[1:].hex()
    return item, offset + 2 + length


def _data_items(data: bytes, count: int, *, request: bool) -> list[dict[str, Any]]:
    """`count` data items (read response or write request): return code, transport size, bytes."""
    items: list[dict[str, Any]] = []
    offset = 0
    for index in range(count):
        if offset + 4 > len(data):
            raise S7FrameError(f"data item {index + 1} of {count} truncated")
        return_code, transport, length = struct.unpack_from(">BBH", data, offset)
        size = (length + 7) // 8 if transport in _LENGTH_IN_BITS else length
        value = data[offset + 4 : offset + 4 + size]
        if len(value) < size:
            raise S7FrameError(f"data item {index + 1} declares {size} bytes, {len(value)} present")
        item: dict[str, Any] = {"return_code": return_code, "transport_size": transport, "length": size}
        if not request:
            item["return_code_name"] = _name(RETURN_CODE_NAMES, return_code)
        item["data"] = value
        items.append(item)
        offset += 4 + size + (size % 2 if index + 1 < count else 0)  # items are padded to even length
    return items


def _read_write(function: int, rosctr: int, param: bytes, data: bytes, out: _Decoded) -> None:
    if len(param) < 2:
        raise S7FrameError("read/write parameter truncated")
    count = param[1]
    out.quantity = count
    out.fields["item_count"] = count
    if rosctr == ROSCTR_JOB:
        items, offset = [], 2
        for _ in range(count):
            item, offset = _item_spec(param, offset)
            items.append(item)
        out.fields["items"] = items
        if items and "byte" in items[0]:
            out.address = items[0]["byte"]
        if function == FUNC_WRITE_VAR:
            data_items = _data_items(data, count, request=True)
            out.fields["data_items"] = data_items
            out.values = [item["data"] for item in data_items]
        return
    if function == FUNC_READ_VAR:
        data_items = _data_items(data, count, request=False)
        out.fields["data_items"] = data_items
        out.values = [item["data"] for item in data_items]
        _first_failed_item(data_items, out)
        return
    codes = list(data[:count])
    if len(codes) < count:
        raise S7FrameError(f"write response carries {len(codes)} return codes for {count} items")
    out.fields["return_codes"] = codes
    _first_failed_item([{"return_code": code} for code in codes], out)


def _first_failed_item(items: list[dict[str, Any]], out: _Decoded) -> None:
    for item in items:
        if item["return_code"] != RETURN_SUCCESS:
            out.exception = item["return_code"]
            out.exception_name = _name(RETURN_CODE_NAMES, item["return_code"])
            return


def _setup_communication(param: bytes, out: _Decoded) -> None:
    if len(param) < 8:
        raise S7FrameError("setup communication parameter truncated")
    calling, called, pdu_length = struct.unpack_from(">HHH", param, 2)
    out.fields.update(max_amq_calling=calling, max_amq_called=called, pdu_length=pdu_length)


def _pi_service(function: int, param: bytes, out: _Decoded) -> None:
    """PLC stop (0x29) and PI services (0x28: start, compress, copy RAM to ROM, insert/delete block)."""
    if function == FUNC_PLC_STOP:
        name_at = 6
        params = b""
    else:
        if len(param) < 10:
            raise S7FrameError("PI service parameter truncated")
        block_length = struct.unpack_from(">H", param, 8)[0]
        params = param[10 : 10 + block_length]
        name_at = 10 + block_length
    if name_at >= len(param):
        raise S7FrameError("PI service name missing")
    name_length = param[name_at]
    name = param[name_at + 1 : name_at + 1 + name_length]
    if len(name) < name_length:
        raise S7FrameError("PI service name truncated")
    out.fields["pi_service"] = name.decode("latin-1")
    if params:
        out.fields["pi_parameters"] = params.decode("latin-1")


def _block_filename(raw: bytes, out: _Decoded) -> None:
    """`_0A00001P`: block type (hex text), number, destination file system."""
    filename = raw.decode("latin-1")
    out.fields["filename"] = filename
    if len(filename) >= 9 and filename[0] == "_":
        block_type = filename[1:3].upper()
        out.fields["block_type"] = BLOCK_TYPE_NAMES.get(block_type, block_type)
        if filename[3:8].isdigit():
            out.fields["block_number"] = int(filename[3:8])
            out.address = out.fields["block_number"]
        out.fields["destination_filesystem"] = FILESYSTEM_NAMES.get(filename[8], filename[8])


def _block_transfer(function: int, rosctr: int, param: bytes, data: bytes, out: _Decoded) -> None:
    """Download/upload: session id, block filename and length as ICSNPP's upload_download log."""
    if len(param) >= 2:  # acknowledgements of end upload/download carry the function code only
        out.fields["function_status"] = param[1]
    if len(param) >= 8:
        out.fields["session_id"] = struct.unpack_from(">I", param, 4)[0]
    request_with_name = rosctr == ROSCTR_JOB and function in (
        FUNC_REQUEST_DOWNLOAD,
        FUNC_DOWNLOAD_BLOCK,
        FUNC_DOWNLOAD_ENDED,
        FUNC_START_UPLOAD,
    )
    if request_with_name and len(param) > 8:
        name_length = param[8]
        _block_filename(param[9 : 9 + name_length], out)
        rest = param[9 + name_length :]
        if function == FUNC_REQUEST_DOWNLOAD and len(rest) > 1:
            text = rest[1 : 1 + rest[0]].decode("latin-1")
            out.fields["blocklength"] = text[1:7].strip() or text
    elif rosctr != ROSCTR_JOB and function == FUNC_START_UPLOAD and len(param) > 8:
        out.fields["blocklength"] = param[9 : 9 + param[8]].decode("latin-1")
    if rosctr != ROSCTR_JOB and function in (FUNC_UPLOAD, FUNC_DOWNLOAD_BLOCK) and len(data) >= 4:
        length = struct.unpack_from(">H", data, 0)[0]
        out.fields["data_length"] = length
        out.values = [data[4 : 4 + length]]


def _job_or_ack(rosctr: int, param: bytes, data: bytes, out: _Decoded) -> None:
    if not param:
        if rosctr == ROSCTR_ACK:
            out.function_name = "ACK"  # a bare acknowledgement (a refusal, with its error code)
            return
        raise S7FrameError("S7 parameter missing")
    function = param[0]
    out.function = function
    out.function_name = _name(FUNCTION_NAMES, function)
    if function in (FUNC_READ_VAR, FUNC_WRITE_VAR):
        _read_write(function, rosctr, param, data, out)
    elif function == FUNC_SETUP_COMMUNICATION:
        _setup_communication(param, out)
    elif function in (FUNC_PI_SERVICE, FUNC_PLC_STOP) and rosctr == ROSCTR_JOB:
        _pi_service(function, param, out)
    elif function in BLOCK_TRANSFER_FUNCTIONS:
        _block_transfer(function, rosctr, param, data, out)


# -- userdata ------------------------------------------------------------------------------------


def _szl_records(szl_id: int, record_length: int, records: list[bytes], out: _Decoded) -> None:
    """Known SZL lists read into named fields; the others kept as hex records."""
    kind = szl_id & 0x00FF
    decoded: list[dict[str, Any]] = []
    for record in records:
        index = struct.unpack_from(">H", record, 0)[0] if len(record) >= 2 else None
        if kind == 0x11 and len(record) >= 28:
            version = _module_version(record[24:28])
            entry = {"index": index, "order_number": _text(record[2:22]), "version": version}
            if index == 0x0001:
                out.fields["order_number"] = entry["order_number"]
            elif index == 0x0007:
                out.fields["firmware_version"] = version
            decoded.append(entry)
        elif kind == 0x1C and len(record) >= 4:
            text = _text(record[2:])
            decoded.append({"index": index, "text": text})
            key = COMPONENT_FIELDS.get(index or 0)
            if key and text and text.isprintable():
                out.fields[key] = text
        elif szl_id == SZL_CPU_STATUS and len(record) >= 4:
            mode = record[3] & 0x0F
            out.fields["cpu_mode"] = CPU_MODE_NAMES.get(mode, f"UNKNOWN_0x{mode:02X}")
            decoded.append({"event": struct.unpack_from(">H", record, 0)[0], "mode": out.fields["cpu_mode"]})
        else:
            decoded.append({"raw": record.hex()})
    out.fields["szl_records"] = decoded
    out.fields["szl_record_length"] = record_length


def _module_version(raw: bytes) -> str:
    """Ausbg/Ausbe of a 0x0011 record: 'V' x y z for firmware, else a hardware product version."""
    if raw[0:1] == b"V":
        return f"V{raw[1]}.{raw[2]}.{raw[3]}"
    return f"{struct.unpack_from('>H', raw, 0)[0]}.{struct.unpack_from('>H', raw, 2)[0]}"


def _read_szl(out: _Decoded, request: bool, payload: bytes, first_fragment: bool) -> None:
    if request:
        if len(payload) >= 4:
            szl_id, index = struct.unpack_from(">HH", payload, 0)
            out.fields.update(szl_id=szl_id, szl_id_name=_name(SZL_ID_NAMES, szl_id), szl_index=index)
            out.address = szl_id
        return
    if not first_fragment or len(payload) < 8:
        out.fields["szl_fragment"] = payload.hex()
        return
    szl_id, index, record_length, record_count = struct.unpack_from(">HHHH", payload, 0)
    out.fields.update(szl_id=szl_id, szl_id_name=_name(SZL_ID_NAMES, szl_id), szl_index=index)
    out.address = szl_id
    out.quantity = record_count
    body = payload[8:]
    records = [body[i : i + record_length] for i in range(0, len(body), record_length)] if record_length else []
    _szl_records(szl_id, record_length, records[:record_count], out)


def _clock(payload: bytes) -> str | None:
    """The 10-byte S7 timestamp (BCD) of the time functions, as ISO text."""
    if len(payload) < 10:
        return None
    try:
        year = _bcd(payload[2])
        moment = dt.datetime(
            2000 + year if year < 90 else 1900 + year,
            _bcd(payload[3]),
            _bcd(payload[4]),
            _bcd(payload[5]),
            _bcd(payload[6]),
            _bcd(payload[7]),
            (_bcd(payload[8]) * 10 + (payload[9] >> 4)) * 1000,
        )
    except ValueError:
        return None
    return moment.isoformat()


def _userdata(param: bytes, data: bytes, out: _Decoded, *, continuation: bool) -> None:
    if len(param) < 8:
        raise S7FrameError("userdata parameter truncated")
    if param[2] != 0x12:  # a head other than the request/response one (seen in mode-transition pushes)
        out.direction = Direction.UNSOLICITED
        out.function_name = "USERDATA"
        out.fields["userdata_parameter"] = param.hex()
        return
    method, type_group, subfunction, sequence = param[4], param[5], param[6], param[7]
    kind, group = type_group >> 4, type_group & 0x0F
    out.function, out.function_name = group, _name(GROUP_NAMES, group)
    out.fields.update(
        method=method,
        userdata_type=kind,
        subfunction_code=subfunction,
        subfunction_name=_name(SUBFUNCTION_NAMES.get(group, {}), subfunction),
        sequence_number=sequence,
    )
    out.direction = {USERDATA_TYPE_REQUEST: Direction.REQUEST, USERDATA_TYPE_RESPONSE: Direction.RESPONSE}.get(
        kind, Direction.UNSOLICITED
    )
    if len(param) >= 12:
        out.fields.update(data_unit_reference=param[8], last_data_unit=param[9])
        error = struct.unpack_from(">H", param, 10)[0]
        if error:
            out.exception, out.exception_name = error, _name(ERROR_NAMES, error)
    if len(data) < 4:
        return
    return_code, length = data[0], struct.unpack_from(">H", data, 2)[0]
    payload = data[4 : 4 + length]
    request = kind == USERDATA_TYPE_REQUEST
    out.fields["return_code"] = return_code
    if not request:
        out.fields["return_code_name"] = _name(RETURN_CODE_NAMES, return_code)
    if group == GROUP_CPU and subfunction == SUBFUNCTION_READ_SZL:
        _read_szl(out, request, payload, not continuation and return_code == RETURN_SUCCESS)
    elif group == GROUP_TIME and payload:
        clock = _clock(payload)
        if clock:
            out.fields["clock"] = clock
    elif payload:
        out.values = [payload]


# -- whole PDUs ------------------------------------------------------------------------------------


def _s7_plus(pdu: bytes, out: _Decoded) -> None:
    out.function_name = "S7COMM_PLUS"
    out.fields["s7comm_plus"] = True
    if len(pdu) >= 2:
        out.fields["version"] = pdu[1]
    if len(pdu) >= 5:
        opcode = pdu[4]
        out.fields.update(opcode=opcode, opcode_name=_name(S7PLUS_OPCODE_NAMES, opcode))
    if len(pdu) >= 9 and pdu[4] in (0x31, 0x32):
        function = struct.unpack_from(">H", pdu, 7)[0]
        out.function = function
        out.fields["s7plus_function_name"] = _name(S7PLUS_FUNCTION_NAMES, function)


def _decode_s7(pdu: bytes, out: _Decoded, *, continuation: bool) -> int | None:
    """Fills `out` from an S7 PDU; returns the PDU reference."""
    if len(pdu) < 10:
        raise S7FrameError(f"S7 header truncated ({len(pdu)} bytes)")
    rosctr = pdu[1]
    reference, param_length, data_length = struct.unpack_from(">HHH", pdu, 4)
    header = 12 if rosctr in (ROSCTR_ACK, ROSCTR_ACK_DATA) else 10
    if rosctr not in ROSCTR_NAMES:
        raise S7FrameError(f"unknown ROSCTR 0x{rosctr:02X}")
    if len(pdu) < header:
        raise S7FrameError("S7 acknowledgement header truncated")
    out.fields.update(rosctr_code=rosctr, rosctr_name=ROSCTR_NAMES[rosctr])
    if header == 12:
        error_class, error_code = pdu[10], pdu[11]
        out.fields.update(error_class=error_class, error_code=error_code)
        if error_class or error_code:
            out.exception = error_class << 8 | error_code
            out.exception_name = ERROR_NAMES.get(out.exception, _name(ERROR_CLASS_NAMES, error_class))
    if header + param_length + data_length > len(pdu):
        raise S7FrameError(
            f"S7 parameter ({param_length}) and data ({data_length}) lengths exceed the PDU ({len(pdu)} bytes)"
        )
    param = pdu[header : header + param_length]
    data = pdu[header + param_length : header + param_length + data_length]
    if rosctr == ROSCTR_USERDATA:
        _userdata(param, data, out, continuation=continuation)
    else:
        out.direction = Direction.REQUEST if rosctr == ROSCTR_JOB else Direction.RESPONSE
        _job_or_ack(rosctr, param, data, out)
    return int(reference)


def decode_s7_pdu(
    pdu: bytes,
    source: Endpoint,
    destination: Endpoint,
    *,
    to_server: bool,
    time: dt.datetime | None = None,
    frame: int | None = None,
    raw: bytes | None = None,
    continuation: bool = False,
) -> IcsMessage:
    """One S7 (or S7comm-plus) PDU as a record; never raises - unreadable PDUs come back malformed.

    `continuation`: a userdata response follows one that said more data units come (a long SZL
    answered in pieces); its data part goes on from the previous one instead of opening a list.
    """
    out = _Decoded()
    reference: int | None = None
    malformed = ""
    try:
        if pdu[:1] == bytes([S7_PLUS_PROTOCOL_ID]):
            _s7_plus(pdu, out)
        elif pdu[:1] == bytes([S7_PROTOCOL_ID]):
            reference = _decode_s7(pdu, out, continuation=continuation)
        else:
            raise S7FrameError(f"unknown protocol id 0x{pdu[0]:02X}" if pdu else "empty COTP DT")
    except (S7FrameError, struct.error, IndexError, UnicodeDecodeError) as error:
        malformed = str(error) or type(error).__name__
    default = Direction.REQUEST if to_server else Direction.RESPONSE
    return IcsMessage(
        protocol=IcsProtocol.S7COMM,
        direction=out.direction or default,
        source=source,
        destination=destination,
        time=time,
        function=out.function,
        function_name=out.function_name,
        transaction=reference,
        address=out.address,
        quantity=out.quantity,
        values=out.values,
        exception=out.exception,
        exception_name=out.exception_name,
        malformed=malformed,
        fields=out.fields,
        frame=frame,
        raw=pdu if raw is None else raw,
    )


def _cotp_record(
    cotp: CotpPdu,
    source: Endpoint,
    destination: Endpoint,
    *,
    to_server: bool,
    time: dt.datetime | None,
    frame: int | None,
    raw: bytes,
) -> IcsMessage:
    name = _name(COTP_PDU_NAMES, cotp.code)
    direction = {COTP_CR: Direction.REQUEST, COTP_CC: Direction.RESPONSE}.get(
        cotp.code, Direction.REQUEST if to_server else Direction.RESPONSE
    )
    fields = {"cotp_pdu_code": cotp.code, "cotp_pdu_name": name, **cotp.fields}
    unit = fields["rack"] << 5 | fields["slot"] if "rack" in fields else None
    return IcsMessage(
        protocol=IcsProtocol.S7COMM,
        direction=direction,
        source=source,
        destination=destination,
        time=time,
        unit=unit,
        function_name=f"COTP_{name}",
        fields=fields,
        frame=frame,
        raw=raw,
    )


# -- the stream decoder ----------------------------------------------------------------------------


def _plausible_tpkt(buffer: bytes | bytearray, at: int) -> bool | None:
    """Whether a TPKT header starts at `at` (None: not enough bytes yet to tell)."""
    if len(buffer) - at < 5:
        head = bytes(buffer[at:])
        return None if bytes([TPKT_VERSION, 0])[: len(head)] == head[:2] else False
    if buffer[at] != TPKT_VERSION or buffer[at + 1] != 0:
        return False
    length = buffer[at + 2] << 8 | buffer[at + 3]
    return length >= MIN_TPKT_LENGTH and buffer[at + 4] + 1 <= length - TPKT_HEADER


class S7commStreamDecoder:
    """Decodes one direction of one ISO-on-TCP stream (TCP port 102) into S7comm records.

    TPKT frames may arrive split or joined across TCP payloads; COTP DT fragments (no EOT) are
    reassembled into one S7 PDU. Bytes that cannot start a TPKT frame are skipped up to the next
    plausible header and reported as one malformed record per run, so the records do not depend on
    how the stream was cut into segments.
    """

    def __init__(self, source: Endpoint, destination: Endpoint, *, to_server: bool) -> None:
        self.source = source
        self.destination = destination
        self.to_server = to_server
        self._buffer = bytearray()
        self._garbage = bytearray()
        self._fragments = bytearray()
        self._fragment_frames = bytearray()
        self._unit: int | None = None
        self._szl_continues = False

    def feed(self, data: bytes, *, time: dt.datetime | None = None, frame: int | None = None) -> list[IcsMessage]:
        self._buffer += data
        records: list[IcsMessage] = []
        while self._buffer:
            plausible = _plausible_tpkt(self._buffer, 0)
            if plausible is None:
                break
            if not plausible:
                self._skip_garbage(records, time, frame)
                continue
            length = self._buffer[2] << 8 | self._buffer[3]
            if len(self._buffer) < length:
                break
            tpkt = bytes(self._buffer[:length])
            del self._buffer[:length]
            self._flush_garbage(records, time, frame)
            records.extend(self._frame(tpkt, time, frame))
        return records

    @property
    def skipping(self) -> bool:
        """Whether bytes that are not TPKT are waiting for the next frame to end their run."""
        return bool(self._garbage)

    def finish(self, *, time: dt.datetime | None = None, frame: int | None = None) -> list[IcsMessage]:
        """The end of the stream: skipped bytes and an unfinished frame become malformed records."""
        records: list[IcsMessage] = []
        self._flush_garbage(records, time, frame)
        rest = bytes(self._buffer) + bytes(self._fragment_frames)
        if rest:
            records.append(self._malformed("stream ended inside a frame", rest, time, frame))
        self._buffer.clear()
        self._fragments.clear()
        self._fragment_frames.clear()
        return records

    def _skip_garbage(self, records: list[IcsMessage], time: dt.datetime | None, frame: int | None) -> None:
        """Moves the bytes before the next possible TPKT header (or all of them) to the garbage run."""
        at = 1
        while (at := self._buffer.find(TPKT_VERSION, at)) >= 0 and _plausible_tpkt(self._buffer, at) is False:
            at += 1
        if at < 0:
            at = len(self._buffer)
        at = min(at, MAX_GARBAGE_RUN - len(self._garbage))
        self._garbage += self._buffer[:at]
        del self._buffer[:at]
        if len(self._garbage) >= MAX_GARBAGE_RUN:
            self._flush_garbage(records, time, frame)

    def _flush_garbage(self, records: list[IcsMessage], time: dt.datetime | None, frame: int | None) -> None:
        if self._garbage:
            reason = f"{len(self._garbage)} bytes skipped: not a TPKT frame (version 3, length >= 7)"
            records.append(self._malformed(reason, bytes(self._garbage), time, frame))
            self._garbage.clear()

    def _malformed(self, reason: str, raw: bytes, time: dt.datetime | None, frame: int | None) -> IcsMessage:
        return IcsMessage(
            protocol=IcsProtocol.S7COMM,
            direction=Direction.REQUEST if self.to_server else Direction.RESPONSE,
            source=self.source,
            destination=self.destination,
            time=time,
            unit=self._unit,
            malformed=reason,
            frame=frame,
            raw=raw,
        )

    def _frame(self, tpkt: bytes, time: dt.datetime | None, frame: int | None) -> list[IcsMessage]:
        try:
            cotp = decode_cotp(tpkt[TPKT_HEADER:])
        except S7FrameError as error:
            return [self._malformed(str(error), tpkt, time, frame)]
        if cotp.code != COTP_DT:
            record = _cotp_record(
                cotp, self.source, self.destination, to_server=self.to_server, time=time, frame=frame, raw=tpkt
            )
            if record.unit is not None:
                self._unit = record.unit
            return [record]
        self._fragments += cotp.data
        self._fragment_frames += tpkt
        if len(self._fragments) > MAX_REASSEMBLY:
            raw = bytes(self._fragment_frames)
            self._fragments.clear()
            self._fragment_frames.clear()
            return [self._malformed("COTP DT reassembly exceeds 64 KiB without end of TSDU", raw, time, frame)]
        if not cotp.eot:
            return []
        pdu, raw = bytes(self._fragments), bytes(self._fragment_frames)
        self._fragments.clear()
        self._fragment_frames.clear()
        record = decode_s7_pdu(
            pdu,
            self.source,
            self.destination,
            to_server=self.to_server,
            time=time,
            frame=frame,
            raw=raw,
            continuation=self._szl_continues,
        )
        record.unit = self._unit
        if record.fields.get("subfunction_name") == "READ_SZL" and record.direction is Direction.RESPONSE:
            self._szl_continues = record.fields.get("last_data_unit", 0) != 0
        return [record]


def decode_frame(
    tpkt: bytes, source: Endpoint, destination: Endpoint, *, to_server: bool, time: dt.datetime | None = None
) -> list[IcsMessage]:
    """The records of one or more complete TPKT frames (convenience over a fresh stream decoder)."""
    return S7commStreamDecoder(source, destination, to_server=to_server).feed(tpkt, time=time)


# -- encoders (what a CPU sends back) --------------------------------------------------------------


def encode_tpkt(payload: bytes) -> bytes:
    return struct.pack(">BBH", TPKT_VERSION, 0, len(payload) + TPKT_HEADER) + payload


def encode_cotp_dt(pdu: bytes) -> bytes:
    """One TPKT frame carrying a whole S7 PDU (COTP DT with end of TSDU)."""
    return encode_tpkt(bytes([2, COTP_DT, 0x80]) + pdu)


def encode_cotp_cc(*, dst_ref: int, src_ref: int, tsap_calling: bytes, tsap_called: bytes, tpdu_size: int) -> bytes:
    """The connection confirm answering a CR: echoes the TSAPs and the accepted TPDU size code."""
    params = (
        bytes([0xC0, 1, tpdu_size])
        + bytes([0xC1, len(tsap_calling)])
        + tsap_calling
        + bytes([0xC2, len(tsap_called)])
        + tsap_called
    )
    header = struct.pack(">BHHB", COTP_CC, dst_ref, src_ref, 0x00) + params
    return encode_tpkt(bytes([len(header)]) + header)


def encode_ack_data(reference: int, param: bytes, data: bytes = b"", *, error: int = 0) -> bytes:
    """An ACK_DATA PDU (12-byte header with error class and code)."""
    header = struct.pack(
        ">BBHHHHBB", S7_PROTOCOL_ID, ROSCTR_ACK_DATA, 0, reference, len(param), len(data), error >> 8, error & 0xFF
    )
    return header + param + data


def encode_setup_communication_ack(reference: int, *, amq_calling: int, amq_called: int, pdu_length: int) -> bytes:
    param = struct.pack(">BBHHH", FUNC_SETUP_COMMUNICATION, 0, amq_calling, amq_called, pdu_length)
    return encode_ack_data(reference, param)


def encode_data_item(return_code: int, payload: bytes, *, transport: int = DATA_BYTE) -> bytes:
    """One read-response data item; BYTE/INT/DINT lengths count bits, the others bytes."""
    length = len(payload) * 8 if transport in _LENGTH_IN_BITS else len(payload)
    if return_code != RETURN_SUCCESS:
        return struct.pack(">BBH", return_code, DATA_NULL, 0)
    return struct.pack(">BBH", return_code, transport, length) + payload


def encode_read_var_ack(reference: int, items: list[bytes]) -> bytes:
    """ACK_DATA for read var: the encoded data items, each but the last padded to even length."""
    data = b"".join(item + (b"\x00" if len(item) % 2 and i + 1 < len(items) else b"") for i, item in enumerate(items))
    return encode_ack_data(reference, bytes([FUNC_READ_VAR, len(items)]), data)


def encode_write_var_ack(reference: int, return_codes: list[int]) -> bytes:
    return encode_ack_data(reference, bytes([FUNC_WRITE_VAR, len(return_codes)]), bytes(return_codes))


def encode_function_ack(reference: int, function: int, *, error: int = 0) -> bytes:
    """The bare ACK_DATA a CPU sends for PLC stop, PI services and refused jobs."""
    return encode_ack_data(reference, bytes([function]), error=error)


def encode_userdata_response(
    reference: int,
    *,
    group: int,
    subfunction: int,
    sequence: int,
    payload: bytes = b"",
    error: int = 0,
    return_code: int = RETURN_SUCCESS,
    transport: int = DATA_OCTET,
    data_unit: int = 0,
    more: bool = False,
) -> bytes:
    """A USERDATA response: 12-byte parameter (method 0x12, type 8) and one data part.

    A long answer goes in pieces: `more` says another follows (the client then asks for it with
    the same `sequence`), `data_unit` numbers the pieces' run.
    """
    kind_group = USERDATA_TYPE_RESPONSE << 4 | group
    param = struct.pack(">BBBBBBBBBBH", 0, 1, 0x12, 8, 0x12, kind_group, subfunction, sequence, data_unit, more, error)
    if error or return_code != RETURN_SUCCESS:
        data = struct.pack(">BBH", return_code, DATA_NULL, 0)
    else:
        data = struct.pack(">BBH", return_code, transport, len(payload)) + payload
    header = struct.pack(">BBHHHH", S7_PROTOCOL_ID, ROSCTR_USERDATA, 0, reference, len(param), len(data))
    return header + param + data


def encode_szl(szl_id: int, index: int, record_length: int, records: list[bytes]) -> bytes:
    """The SZL response payload: id, index, record length, record count, records (each padded/cut)."""
    body = b"".join(record[:record_length].ljust(record_length, b"\x00") for record in records)
    return struct.pack(">HHHH", szl_id, index, record_length, len(records)) + body


def encode_module_record(index: int, order_number: str, version: tuple[int, int, int] | None, *, hw: int = 0) -> bytes:
    """A 28-byte SZL 0x0011 record: index, MLFB (20 chars), module type, versions ('V' x.y.z for firmware)."""
    mlfb = order_number.encode("latin-1")[:20].ljust(20, b" ")
    hardware = struct.pack(">HH", 0x0003, hw)
    tail = struct.pack(">H", 0x00C0) + (hardware if version is None else bytes([0x56, *version]))
    return struct.pack(">H", index) + mlfb + tail


def encode_component_record(index: int, text: str) -> bytes:
    """A 34-byte SZL 0x001C record: index and a 32-character text padded with NULs."""
    return struct.pack(">H", index) + text.encode("latin-1")[:32].ljust(32, b"\x00")


def encode_cpu_status_record(mode: int, moment: dt.datetime) -> bytes:
    """A 20-byte SZL 0x0424 record: event id, mode byte (0x08 RUN, 0x04 STOP) and BCD time."""
    return struct.pack(">HBB", 0x5144 if mode == 0x08 else 0x4304, 0xFF, mode) + bytes(4) + encode_clock(moment)[2:]


def encode_clock(moment: dt.datetime) -> bytes:
    """The 10-byte S7 timestamp: reserved, century, BCD year..second, milliseconds and weekday."""
    millis = moment.microsecond // 1000
    weekday = moment.isoweekday() % 7 + 1  # S7 counts Sunday as 1
    return bytes(
        [
            0x00,
            0x19 if moment.year < 2000 else 0x20,
            _to_bcd(moment.year % 100),
            _to_bcd(moment.month),
            _to_bcd(moment.day),
            _to_bcd(moment.hour),
            _to_bcd(moment.minute),
            _to_bcd(moment.second),
            _to_bcd(millis // 10),
            (millis % 10) << 4 | weekday,
        ]
    )
