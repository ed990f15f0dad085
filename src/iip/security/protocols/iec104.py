"""IEC 60870-5-104: APCI frames (I, S, U) and their ASDUs, as `IcsMessage` records.

Fields follow CISA ICSNPP's iec104 logs: APCI type and send/receive sequence numbers, U-format
function (STARTDT/STOPDT/TESTFR act/con), and for I-format the ASDU: type id by name
(`function_name`, e.g. "M_ME_NC_1"), cause of transmission with its negative and test bits,
originator, common address (`unit`) and the information objects (`fields["objects"]`: IOA, value,
quality, CP56Time2a timestamps) of the common monitor, command, system and parameter types.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable
from typing import Any

from iip.security.protocols.base import NOWHERE, Direction, Endpoint, IcsMessage, IcsProtocol
from iip.security.protocols.framing import FrameSplitter

START = 0x68
MIN_LENGTH = 4  # control field only (S and U frames)
MAX_LENGTH = 253

U_FUNCTIONS = {
    0x07: "STARTDT_ACT",
    0x0B: "STARTDT_CON",
    0x13: "STOPDT_ACT",
    0x23: "STOPDT_CON",
    0x43: "TESTFR_ACT",
    0x83: "TESTFR_CON",
}

CAUSES = {
    1: "per/cyc",
    2: "back",
    3: "spont",
    4: "init",
    5: "req",
    6: "act",
    7: "actcon",
    8: "deact",
    9: "deactcon",
    10: "actterm",
    11: "retrem",
    12: "retloc",
    13: "file",
    20: "inrogen",
    **{20 + group: f"inro{group}" for group in range(1, 17)},
    37: "reqcogen",
    **{37 + group: f"reqco{group}" for group in range(1, 5)},
    44: "unknown_type",
    45: "unknown_cause",
    46: "unknown_asdu_address",
    47: "unknown_object_address",
}
# Causes an outstation sends without being asked.
SPONTANEOUS_CAUSES = frozenset({1, 2, 3, 4, 11, 12})

Element = dict[str, Any]
ElementReader = Callable[[bytes], Element]


def cp56time2a(data: bytes) -> str | None:
    """A CP56Time2a timestamp as ISO text (no zone: IEC 104 sends local or UTC time by convention)."""
    millis = data[0] | data[1] << 8
    minute, hour, day, month, year = data[2] & 0x3F, data[3] & 0x1F, data[4] & 0x1F, data[5] & 0x0F, data[6] & 0x7F
    try:
        stamp = dt.datetime(2000 + year, month, day, hour, minute, millis // 1000, (millis % 1000) * 1000)
    except ValueError:
        return None
    return stamp.isoformat(timespec="milliseconds")


def _cp56(data: bytes, element: Element) -> None:
    element["time"] = cp56time2a(data)
    element["time_invalid"] = bool(data[2] & 0x80)
    element["summer_time"] = bool(data[3] & 0x80)


def _cp24(data: bytes, element: Element) -> None:
    element["time_ms"] = data[0] | data[1] << 8
    element["time_minute"] = data[2] & 0x3F


def _quality(byte: int) -> dict[str, bool]:
    return {"invalid": bool(byte & 0x80), "not_topical": bool(byte & 0x40), "substituted": bool(byte & 0x20),
            "blocked": bool(byte & 0x10)}  # fmt: skip


def _siq(data: bytes) -> Element:
    return {"value": bool(data[0] & 1), **_quality(data[0])}


def _diq(data: bytes) -> Element:
    return {"value": data[0] & 3, **_quality(data[0])}


def _vti(data: bytes) -> Element:
    raw = data[0] & 0x7F
    return {"value": raw - 128 if raw & 0x40 else raw, "transient": bool(data[0] & 0x80), **_quality(data[1])}


def _bsi(data: bytes) -> Element:
    return {"value": int.from_bytes(data[:4], "little"), **_quality(data[4])}


def _nva(data: bytes) -> Element:
    return {"value": struct.unpack_from("<h", data)[0] / 32768, **_quality(data[2])}


def _sva(data: bytes) -> Element:
    return {"value": struct.unpack_from("<h", data)[0], **_quality(data[2])}


def _float(data: bytes) -> Element:
    return {"value": struct.unpack_from("<f", data)[0], **_quality(data[4])}


def _bcr(data: bytes) -> Element:
    flags = data[4]
    return {"value": struct.unpack_from("<i", data)[0], "sequence": flags & 0x1F, "carry": bool(flags & 0x20),
            "adjusted": bool(flags & 0x40), "invalid": bool(flags & 0x80)}  # fmt: skip


def _protection(data: bytes) -> Element:
    return {"value": data[0], "elapsed_ms": data[-2] | data[-1] << 8}


def _scd(data: bytes) -> Element:
    return {"value": int.from_bytes(data[:4], "little"), **_quality(data[4])}


def _nva_only(data: bytes) -> Element:
    return {"value": struct.unpack_from("<h", data)[0] / 32768}


def _sco(data: bytes) -> Element:
    return {"value": bool(data[0] & 1), "qualifier": data[0] >> 2 & 0x1F, "select": bool(data[0] & 0x80)}


def _dco(data: bytes) -> Element:
    return {"value": data[0] & 3, "qualifier": data[0] >> 2 & 0x1F, "select": bool(data[0] & 0x80)}


def _setpoint(fmt: str, scale: float | None) -> ElementReader:
    def read(data: bytes) -> Element:
        (raw,) = struct.unpack_from("<" + fmt, data)
        qos = data[struct.calcsize("<" + fmt)]
        return {"value": raw / scale if scale else raw, "qualifier": qos & 0x7F, "select": bool(qos & 0x80)}

    return read


def _bitstring_command(data: bytes) -> Element:
    return {"value": int.from_bytes(data[:4], "little")}


def _byte_value(data: bytes) -> Element:
    return {"value": data[0]}


def _no_value(data: bytes) -> Element:
    return {}


def _clock(data: bytes) -> Element:
    return {"value": cp56time2a(data)}


def _u16_value(data: bytes) -> Element:
    return {"value": data[0] | data[1] << 8}


def _file_value(data: bytes) -> Element:
    return {"file": data[0] | data[1] << 8, "value": data[2:].hex()}


# type id -> (name, element size without time tag, element reader, time tag size: 0, 3 or 7)
TYPES: dict[int, tuple[str, int, ElementReader, int]] = {
    1: ("M_SP_NA_1", 1, _siq, 0),
    2: ("M_SP_TA_1", 1, _siq, 3),
    3: ("M_DP_NA_1", 1, _diq, 0),
    4: ("M_DP_TA_1", 1, _diq, 3),
    5: ("M_ST_NA_1", 2, _vti, 0),
    6: ("M_ST_TA_1", 2, _vti, 3),
    7: ("M_BO_NA_1", 5, _bsi, 0),
    8: ("M_BO_TA_1", 5, _bsi, 3),
    9: ("M_ME_NA_1", 3, _nva, 0),
    10: ("M_ME_TA_1", 3, _nva, 3),
    11: ("M_ME_NB_1", 3, _sva, 0),
    12: ("M_ME_TB_1", 3, _sva, 3),
    13: ("M_ME_NC_1", 5, _float, 0),
    14: ("M_ME_TC_1", 5, _float, 3),
    15: ("M_IT_NA_1", 5, _bcr, 0),
    16: ("M_IT_TA_1", 5, _bcr, 3),
    17: ("M_EP_TA_1", 3, _protection, 3),
    18: ("M_EP_TB_1", 4, _protection, 3),
    19: ("M_EP_TC_1", 4, _protection, 3),
    20: ("M_PS_NA_1", 5, _scd, 0),
    21: ("M_ME_ND_1", 2, _nva_only, 0),
    30: ("M_SP_TB_1", 1, _siq, 7),
    31: ("M_DP_TB_1", 1, _diq, 7),
    32: ("M_ST_TB_1", 2, _vti, 7),
    33: ("M_BO_TB_1", 5, _bsi, 7),
    34: ("M_ME_TD_1", 3, _nva, 7),
    35: ("M_ME_TE_1", 3, _sva, 7),
    36: ("M_ME_TF_1", 5, _float, 7),
    37: ("M_IT_TB_1", 5, _bcr, 7),
    38: ("M_EP_TD_1", 3, _protection, 7),
    39: ("M_EP_TE_1", 4, _protection, 7),
    40: ("M_EP_TF_1", 4, _protection, 7),
    45: ("C_SC_NA_1", 1, _sco, 0),
    46: ("C_DC_NA_1", 1, _dco, 0),
    47: ("C_RC_NA_1", 1, _dco, 0),
    48: ("C_SE_NA_1", 3, _setpoint("h", 32768), 0),
    49: ("C_SE_NB_1", 3, _setpoint("h", None), 0),
    50: ("C_SE_NC_1", 5, _setpoint("f", None), 0),
    51: ("C_BO_NA_1", 4, _bitstring_command, 0),
    58: ("C_SC_TA_1", 1, _sco, 7),
    59: ("C_DC_TA_1", 1, _dco, 7),
    60: ("C_RC_TA_1", 1, _dco, 7),
    61: ("C_SE_TA_1", 3, _setpoint("h", 32768), 7),
    62: ("C_SE_TB_1", 3, _setpoint("h", None), 7),
    63: ("C_SE_TC_1", 5, _setpoint("f", None), 7),
    64: ("C_BO_TA_1", 4, _bitstring_command, 7),
    70: ("M_EI_NA_1", 1, _byte_value, 0),
    100: ("C_IC_NA_1", 1, _byte_value, 0),
    101: ("C_CI_NA_1", 1, _byte_value, 0),
    102: ("C_RD_NA_1", 0, _no_value, 0),
    103: ("C_CS_NA_1", 7, _clock, 0),
    104: ("C_TS_NA_1", 2, _u16_value, 0),
    105: ("C_RP_NA_1", 1, _byte_value, 0),
    106: ("C_CD_NA_1", 2, _u16_value, 0),
    107: ("C_TS_TA_1", 2, _u16_value, 7),
    110: ("P_ME_NA_1", 3, _setpoint("h", 32768), 0),
    111: ("P_ME_NB_1", 3, _setpoint("h", None), 0),
    112: ("P_ME_NC_1", 5, _setpoint("f", None), 0),
    113: ("P_AC_NA_1", 1, _byte_value, 0),
    120: ("F_FR_NA_1", 6, _file_value, 0),
    121: ("F_SR_NA_1", 7, _file_value, 0),
    122: ("F_SC_NA_1", 4, _file_value, 0),
    123: ("F_LS_NA_1", 5, _file_value, 0),
    124: ("F_AF_NA_1", 4, _file_value, 0),
    126: ("F_DR_TA_1", 13, _file_value, 0),
    127: ("F_SC_NB_1", 16, _file_value, 0),
}
TYPE_NAMES = {type_id: spec[0] for type_id, spec in TYPES.items()} | {125: "F_SG_NA_1"}


class Malformed(ValueError):
    """A frame that breaks the protocol; its text is the record's `malformed` reason."""


def measure_frame(buffer: bytes, position: int) -> int | None:
    """Length of the APDU at `position` (0 when no APDU can start there)."""
    if buffer[position] != START:
        return 0
    if len(buffer) - position < 3:
        return None
    length = buffer[position + 1]
    if length < MIN_LENGTH or length > MAX_LENGTH:
        return 0
    # An S frame's first control octet is exactly 01; a U frame's names one function.
    control = buffer[position + 2]
    if control & 1 and (control != 0x01 if control & 2 == 0 else control not in U_FUNCTIONS):
        return 0
    if not control & 1 and length < MIN_LENGTH + 6:  # an I frame carries at least the ASDU header
        return 0
    return 2 + length


def _segments(count: int, sequence: bool, size: int, body: bytes) -> list[tuple[int, bytes]]:
    """(IOA, element bytes) of each information object."""
    objects = []
    if sequence:
        if len(body) != 3 + count * size:
            raise Malformed("ASDU length does not match its objects")
        first = int.from_bytes(body[:3], "little")
        for n in range(count):
            objects.append((first + n, body[3 + n * size : 3 + (n + 1) * size]))
        return objects
    if len(body) != count * (3 + size):
        raise Malformed("ASDU length does not match its objects")
    for n in range(count):
        start = n * (3 + size)
        objects.append((int.from_bytes(body[start : start + 3], "little"), body[start + 3 : start + 3 + size]))
    return objects


def _read_asdu(asdu: bytes, msg: IcsMessage, *, to_server: bool) -> None:
    if len(asdu) < 6:
        raise Malformed("ASDU shorter than its header")
    type_id, qualifier, cause_byte, originator = asdu[0], asdu[1], asdu[2], asdu[3]
    common_address = asdu[4] | asdu[5] << 8
    cause = cause_byte & 0x3F
    count, sequence = qualifier & 0x7F, bool(qualifier & 0x80)
    msg.function, msg.unit = type_id, common_address
    msg.function_name = TYPE_NAMES.get(type_id, f"UNKNOWN_{type_id}")
    msg.quantity = count
    msg.fields.update(
        info_obj_type=msg.function_name,
        cause_tx=cause,
        cause_tx_name=CAUSES.get(cause, f"UNKNOWN_{cause}"),
        negative=bool(cause_byte & 0x40),
        test=bool(cause_byte & 0x80),
        originator_address=originator,
        asdu_address=common_address,
        sq=sequence,
        num_ix=count,
    )
    if not to_server:
        msg.direction = Direction.UNSOLICITED if cause in SPONTANEOUS_CAUSES else Direction.RESPONSE
    if cause >= 44 or cause_byte & 0x40:  # the outstation refused the command: an exception of sorts
        msg.exception = cause if cause >= 44 else None
        msg.exception_name = msg.fields["cause_tx_name"] if cause >= 44 else ""
    spec = TYPES.get(type_id)
    if spec is None:
        msg.fields["objects_unread"] = f"information objects of type {type_id} not decoded"
        return
    _name, size, read, time_size = spec
    objects = []
    for ioa, data in _segments(count, sequence, size + time_size, asdu[6:]):
        element: Element = {"ioa": ioa, **read(data[:size])}
        if time_size == 7:
            _cp56(data[size:], element)
        elif time_size == 3:
            _cp24(data[size:], element)
        objects.append(element)
    msg.fields["objects"] = objects
    msg.values = [element.get("value") for element in objects]
    if objects:
        msg.address = objects[0]["ioa"]


def decode_frame(
    frame: bytes,
    *,
    to_server: bool,
    source: Endpoint = NOWHERE,
    destination: Endpoint = NOWHERE,
    time: dt.datetime | None = None,
    frame_number: int | None = None,
) -> IcsMessage:
    """One complete APDU (68 length control-field [ASDU]) as a record; never raises."""
    msg = IcsMessage.of_frame(
        IcsProtocol.IEC104,
        frame,
        to_server=to_server,
        source=source,
        destination=destination,
        time=time,
        frame_number=frame_number,
    )
    try:
        _read_apdu(bytes(frame), msg, to_server=to_server)
    except (Malformed, struct.error, IndexError, ValueError) as err:
        msg.malformed = str(err) if isinstance(err, Malformed) else "truncated ASDU"
    return msg


def _read_apdu(frame: bytes, msg: IcsMessage, *, to_server: bool) -> None:
    if len(frame) < 2 + MIN_LENGTH or frame[0] != START:
        raise Malformed("not an IEC 104 APDU")
    if frame[1] != len(frame) - 2:
        raise Malformed("APDU length does not match frame")
    msg.fields["apdu_len"] = frame[1]
    control = frame[2:6]
    if control[0] & 1 == 0:
        msg.fields.update(
            apci_type="I",
            apci_tx=(control[0] | control[1] << 8) >> 1,
            apci_rx=(control[2] | control[3] << 8) >> 1,
        )
        _read_asdu(frame[6:], msg, to_server=to_server)
        return
    if len(frame) != 6:
        raise Malformed("S or U frame with an ASDU")
    if control[0] & 3 == 1:
        msg.function_name = "S"
        msg.fields.update(apci_type="S", apci_rx=(control[2] | control[3] << 8) >> 1)
        return
    name = U_FUNCTIONS.get(control[0])
    if name is None:
        raise Malformed("unknown U-format function")
    msg.function_name = name
    msg.fields.update(apci_type="U", u_function=name)
    msg.direction = Direction.REQUEST if name.endswith("_ACT") else Direction.RESPONSE


class Iec104StreamDecoder:
    """One direction of an IEC 104 TCP connection: one record per APDU (or per garbage run)."""

    def __init__(self, source: Endpoint, destination: Endpoint, *, to_server: bool) -> None:
        self.source, self.destination, self.to_server = source, destination, to_server
        self._splitter = FrameSplitter(measure_frame)

    def feed(self, data: bytes, *, time: dt.datetime | None = None, frame: int | None = None) -> list[IcsMessage]:
        messages = []
        for is_frame, chunk in self._splitter.push(data):
            if is_frame:
                messages.append(
                    decode_frame(
                        chunk,
                        to_server=self.to_server,
                        source=self.source,
                        destination=self.destination,
                        time=time,
                        frame_number=frame,
                    )
                )
            else:
                messages.append(self._garbage(chunk, "bytes that are not an IEC 104 APDU", time, frame))
        return messages

    def finish(self, *, time: dt.datetime | None = None, frame: int | None = None) -> list[IcsMessage]:
        """The end of the stream: an unfinished APDU left over becomes a malformed record."""
        rest = self._splitter.take_rest()
        if not rest:
            return []
        ended_inside = measure_frame(rest, 0) != 0
        reason = "stream ended inside a frame" if ended_inside else "bytes that are not an IEC 104 APDU"
        return [self._garbage(rest, reason, time, frame)]

    def _garbage(self, chunk: bytes, reason: str, time: dt.datetime | None, frame: int | None) -> IcsMessage:
        return IcsMessage(
            protocol=IcsProtocol.IEC104,
            direction=Direction.REQUEST if self.to_server else Direction.RESPONSE,
            source=self.source,
            destination=self.destination,
            time=time,
            frame=frame,
            raw=chunk,
            malformed=reason,
        )
