"""The decoy's S7comm face: an S7 CPU as STEP 7, TIA Portal, WinCC, snap7 or a scanner meets it.

COTP connect, setup communication, SZL reads of the identification lists (0x0011 module, 0x001C
component, 0x0424 CPU status and the list of lists 0x0000) answered from the identity, the clock,
read var on DB/M/I/Q with the process image, write var kept and reported, PLC stop and start
accepted (and seen in 0x0424 afterwards), the block functions (list blocks, list blocks of type,
get block info) answered from the program of `blocks.program_for`, and block upload, download and
delete refused as a protected CPU of the line refuses them. Everything else gets the error a CPU
gives for a function it does not offer. Long SZL answers and block lists go out in pieces like a
real CPU's, so a client must ask for the rest.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from iip.security.honeypot import blocks
from iip.security.honeypot.connection import Exchange
from iip.security.honeypot.identity import PlcIdentity, seeded_random
from iip.security.honeypot.registers import ProcessImage
from iip.security.protocols import s7comm
from iip.security.protocols.base import Direction, Endpoint, IcsMessage

TPDU_SIZE_CODE_MAX = 0x0A  # 1024-byte TPDUs, what S7-300/1200 CPUs accept
USERDATA_OVERHEAD = 10 + 12 + 4  # header, response parameter, data header
MODE_RUN, MODE_STOP = 0x08, 0x04
ELEMENT_BYTES = {0x01: 1, 0x02: 1, 0x03: 1, 0x04: 2, 0x05: 2, 0x06: 4, 0x07: 4, 0x08: 4, 0x1C: 2, 0x1D: 2}
# The data transport size a CPU answers with, per requested type (REAL as REAL, BIT as BIT).
DATA_TRANSPORT = {0x01: s7comm.DATA_BIT, 0x08: s7comm.DATA_REAL, 0x1C: s7comm.DATA_OCTET, 0x1D: s7comm.DATA_OCTET}
READABLE_AREAS = frozenset({s7comm.AREA_INPUTS, s7comm.AREA_OUTPUTS, s7comm.AREA_FLAGS, s7comm.AREA_DB})


@dataclass(slots=True)
class CpuState:
    """What one decoy CPU remembers between connections: its operating mode."""

    mode: int = MODE_RUN


BLOCK_TRANSFER_JOBS = frozenset(s7comm.BLOCK_TRANSFER_FUNCTIONS)
BLOCK_PI_SERVICES = frozenset({"_DELE", "_INSE"})  # delete a block, activate a downloaded one
METHOD_FOLLOW_UP = 0x12


@dataclass(slots=True)
class _Pending:
    """The rest of a long userdata answer, waiting for the client's follow-up request."""

    group: int
    subfunction: int
    sequence: int
    chunks: list[bytes] = field(default_factory=list)


def szl_lists(identity: PlcIdentity, state: CpuState, now: dt.datetime) -> dict[int, tuple[int, list[bytes]]]:
    """SZL id -> (record length, records) for index 0, as this CPU would answer them."""
    rng = seeded_random(identity.seed, "szl")
    boot = (rng.randint(1, 4), rng.randint(0, 9), rng.randint(0, 30))
    module = [
        s7comm.encode_module_record(0x0001, identity.order_number, None, hw=rng.randint(1, 5)),
        s7comm.encode_module_record(0x0006, identity.order_number, None, hw=rng.randint(1, 5)),
        s7comm.encode_module_record(0x0007, "", identity.firmware),
        s7comm.encode_module_record(0x0081, "Boot Loader", boot),
    ]
    component = [
        s7comm.encode_component_record(0x0001, identity.plc_name),
        s7comm.encode_component_record(0x0002, identity.module_name),
        s7comm.encode_component_record(0x0003, identity.plant_id),
        s7comm.encode_component_record(0x0004, "Original Siemens Equipment"),
        s7comm.encode_component_record(0x0005, identity.serial_number),
        s7comm.encode_component_record(0x0007, identity.model),
        s7comm.encode_component_record(0x0008, f"MMC {rng.getrandbits(32):08X}"),
        struct.pack(">HHH", 0x0009, 0x002A, 0xF600) + bytes(28),  # manufacturer id (Siemens) and profile
        struct.pack(">H", 0x000A) + bytes(32),
        struct.pack(">H", 0x000B) + bytes(32),
    ]
    status = [s7comm.encode_cpu_status_record(state.mode, now)]
    known = [0x0000, 0x0011, 0x0111, 0x001C, 0x011C, 0x0424]
    return {
        0x0000: (2, [struct.pack(">H", szl_id) for szl_id in known]),
        s7comm.SZL_MODULE_IDENTIFICATION: (28, module),
        s7comm.SZL_COMPONENT_IDENTIFICATION: (34, component),
        s7comm.SZL_CPU_STATUS: (20, status),
    }


class S7Responder:
    """One ISO-on-TCP connection to the decoy CPU."""

    def __init__(
        self,
        peer: Endpoint,
        local: Endpoint,
        *,
        identity: PlcIdentity,
        image: ProcessImage,
        state: CpuState,
        clock: Callable[[], float],
    ) -> None:
        self.identity = identity
        self.image = image
        self.state = state
        self.clock = clock
        self.decoder = s7comm.S7commStreamDecoder(peer, local, to_server=True)
        self.connected = False
        self.pdu_length = identity.pdu_length or 240
        self.sequence = 0
        self.pending: _Pending | None = None
        self.program = blocks.program_for(identity)

    def receive(self, data: bytes) -> list[Exchange]:
        messages = self.decoder.feed(data)
        if self.decoder.skipping:  # a CPU resets the connection on bytes that are not ISO-on-TCP
            messages += self.decoder.finish()
        exchanges = [self._exchange(message) for message in messages]
        for index, exchange in enumerate(exchanges):
            if exchange.hang_up:
                return exchanges[: index + 1]
        return exchanges

    def _exchange(self, message: IcsMessage) -> Exchange:
        if message.fields.get("cotp_pdu_name") == "CR":
            self.connected = True
            return Exchange(message, self._connect_confirm(message.fields))
        reply = self._answer(message)
        return Exchange(message, reply or b"", hang_up=reply is None)

    def _answer(self, message: IcsMessage) -> bytes | None:
        """The reply (b"" when none is due); None when a CPU would drop the connection."""
        if "cotp_pdu_name" in message.fields or not self.connected or message.fields.get("s7comm_plus"):
            return None  # disconnect, data before connect, or a protocol this CPU lacks
        if message.is_malformed:
            if message.transaction is None:
                return None
            error = s7comm.ERROR_CONTEXT_NOT_SUPPORTED
            return self._dt(s7comm.encode_function_ack(message.transaction, 0, error=error))
        rosctr = message.fields.get("rosctr_code")
        if rosctr == s7comm.ROSCTR_JOB:
            return self._dt(self._job(message))
        if rosctr == s7comm.ROSCTR_USERDATA and message.direction is Direction.REQUEST:
            return self._dt(self._userdata(message))
        return b""  # acknowledgements from the client need no answer

    @staticmethod
    def _dt(pdu: bytes) -> bytes:
        return s7comm.encode_cotp_dt(pdu)

    def _connect_confirm(self, fields: dict[str, Any]) -> bytes:
        requested = int(fields.get("tpdu_size", 1024))
        code = min(max(requested.bit_length() - 1, 7), TPDU_SIZE_CODE_MAX)
        return s7comm.encode_cotp_cc(
            dst_ref=int(fields.get("src_ref", 0)),
            src_ref=0x0044,
            tsap_calling=bytes.fromhex(str(fields.get("tsap_calling", "0100"))),
            tsap_called=bytes.fromhex(str(fields.get("tsap_called", "0102"))),
            tpdu_size=code,
        )

    # -- jobs -----------------------------------------------------------------------------------

    def _job(self, message: IcsMessage) -> bytes:
        reference, function = message.transaction or 0, message.function or 0
        if function == s7comm.FUNC_SETUP_COMMUNICATION:
            self.pdu_length = max(min(int(message.fields["pdu_length"]), self.identity.pdu_length or 240), 240)
            amq = min(int(message.fields["max_amq_calling"]), 1) or 1
            return s7comm.encode_setup_communication_ack(
                reference, amq_calling=amq, amq_called=amq, pdu_length=self.pdu_length
            )
        if function == s7comm.FUNC_READ_VAR:
            return self._read_var(reference, message.fields.get("items", []))
        if function == s7comm.FUNC_WRITE_VAR:
            return self._write_var(reference, message.fields.get("items", []), message.fields.get("data_items", []))
        return s7comm.encode_function_ack(reference, function, error=self._control(function, message))

    def _control(self, function: int, message: IcsMessage) -> int:
        """Stop, start, block transfers: the error code of the acknowledgement (0: done)."""
        service = message.fields.get("pi_service")
        if function == s7comm.FUNC_PLC_STOP:
            self.state.mode = MODE_STOP
            return 0
        if function == s7comm.FUNC_PI_SERVICE and service == "P_PROGRAM":
            self.state.mode = MODE_RUN
            return 0
        if function in BLOCK_TRANSFER_JOBS or (function == s7comm.FUNC_PI_SERVICE and service in BLOCK_PI_SERVICES):
            return self.program.refusal
        return s7comm.ERROR_CONTEXT_NOT_SUPPORTED

    def _read_var(self, reference: int, items: list[dict[str, Any]]) -> bytes:
        encoded = [self._read_item(item) for item in items]
        response_size = 12 + 2 + sum(len(item) + 1 for item in encoded)
        if response_size > self.pdu_length:
            return s7comm.encode_function_ack(reference, s7comm.FUNC_READ_VAR, error=0x8500)  # wrong PDU size
        return s7comm.encode_read_var_ack(reference, encoded)

    def _read_item(self, item: dict[str, Any]) -> bytes:
        area, transport = item.get("area"), item.get("transport_size", 0)
        if area not in READABLE_AREAS or transport not in ELEMENT_BYTES:
            return s7comm.encode_data_item(0x0A if area not in READABLE_AREAS else 0x06, b"")
        db, start, count = int(item.get("db", 0)), int(item["byte"]), int(item.get("count", 0))
        if self.image.s7_size(area, db) is None:
            return s7comm.encode_data_item(0x0A, b"")  # no such DB
        if transport == 0x01:
            data = self.image.s7_read(area, db, start, 1)
            if data is None:
                return s7comm.encode_data_item(0x05, b"")
            bit = data[0] >> int(item.get("bit", 0)) & 1
            return s7comm.encode_data_item(s7comm.RETURN_SUCCESS, bytes([bit]), transport=s7comm.DATA_BIT)
        data = self.image.s7_read(area, db, start, count * ELEMENT_BYTES[transport])
        if data is None:
            return s7comm.encode_data_item(0x05, b"")  # address out of range
        kind = DATA_TRANSPORT.get(transport, s7comm.DATA_BYTE)
        return s7comm.encode_data_item(s7comm.RETURN_SUCCESS, data, transport=kind)

    def _write_var(self, reference: int, items: list[dict[str, Any]], data_items: list[dict[str, Any]]) -> bytes:
        codes = [self._write_item(item, data) for item, data in zip(items, data_items, strict=False)]
        return s7comm.encode_write_var_ack(reference, codes)

    def _write_item(self, item: dict[str, Any], data_item: dict[str, Any]) -> int:
        area = item.get("area")
        if area not in READABLE_AREAS or area == s7comm.AREA_INPUTS:
            return 0x03 if area in READABLE_AREAS else 0x0A  # inputs are the process's to write
        db, start, data = int(item.get("db", 0)), int(item.get("byte", 0)), bytes(data_item.get("data", b""))
        if self.image.s7_size(area, db) is None:
            return 0x0A
        if item.get("transport_size") == 0x01:
            written = bool(data) and self.image.s7_write_bit(area, db, start, int(item.get("bit", 0)), bool(data[0]))
        else:
            written = self.image.s7_write(area, db, start, data)
        return s7comm.RETURN_SUCCESS if written else 0x05

    # -- userdata -------------------------------------------------------------------------------

    def _userdata(self, message: IcsMessage) -> bytes:
        group, subfunction = message.function or 0, int(message.fields.get("subfunction_code", 0))
        reference = message.transaction or 0
        if message.fields.get("method") == METHOD_FOLLOW_UP:  # the client asks for the next piece
            return self._next_piece(reference, group, subfunction)
        if group == s7comm.GROUP_CPU and subfunction == s7comm.SUBFUNCTION_READ_SZL:
            return self._read_szl(reference, message)
        if group == s7comm.GROUP_BLOCK and subfunction in (1, 2, 3):
            return self._block_function(reference, subfunction, message)
        if group == s7comm.GROUP_TIME and subfunction in (1, 3):
            clock = s7comm.encode_clock(dt.datetime.fromtimestamp(self.clock(), dt.UTC))
            return s7comm.encode_userdata_response(
                reference, group=group, subfunction=subfunction, sequence=0, payload=clock
            )
        if group == s7comm.GROUP_TIME and subfunction in (2, 4):
            return s7comm.encode_userdata_response(  # the null acknowledgement a CPU sends for set clock
                reference, group=group, subfunction=subfunction, sequence=0, return_code=0x0A
            )
        return s7comm.encode_userdata_response(
            reference, group=group, subfunction=subfunction, sequence=0, error=s7comm.ERROR_CONTEXT_NOT_SUPPORTED
        )

    def _read_szl(self, reference: int, message: IcsMessage) -> bytes:
        group, subfunction = s7comm.GROUP_CPU, s7comm.SUBFUNCTION_READ_SZL
        szl_id, index = int(message.fields.get("szl_id", -1)), int(message.fields.get("szl_index", 0))
        payload = self._szl_payload(szl_id, index)
        if payload is None:
            return s7comm.encode_userdata_response(
                reference, group=group, subfunction=subfunction, sequence=0, error=s7comm.ERROR_SZL_INVALID_ID
            )
        return self._in_pieces(reference, group, subfunction, payload)

    def _block_function(self, reference: int, subfunction: int, message: IcsMessage) -> bytes:
        """List blocks (1), list blocks of type (2), get block info (3) from the CPU's program."""
        group = s7comm.GROUP_BLOCK
        payload = bytes(message.values[0]) if message.values else b""
        if subfunction == 1:
            return self._in_pieces(reference, group, subfunction, blocks.list_blocks_payload(self.program))
        if subfunction == 2:
            kind = payload[1] if len(payload) >= 2 else -1
            listed = blocks.blocks_of_type_payload(self.program, kind)
            if not listed:  # no block of that type: "object does not exist"
                return s7comm.encode_userdata_response(
                    reference, group=group, subfunction=subfunction, sequence=0, return_code=0x0A
                )
            return self._in_pieces(reference, group, subfunction, listed)
        wanted = blocks.requested_block(payload)
        block = self.program.find(*wanted) if wanted else None
        if block is None:
            return s7comm.encode_userdata_response(
                reference, group=group, subfunction=subfunction, sequence=0, error=blocks.ERROR_BLOCK_NOT_FOUND
            )
        return self._in_pieces(reference, group, subfunction, blocks.block_info_payload(block))

    def _in_pieces(self, reference: int, group: int, subfunction: int, payload: bytes) -> bytes:
        """The first piece of an answer that may not fit the PDU; the rest waits for follow-ups."""
        room = self.pdu_length - USERDATA_OVERHEAD
        room -= room % 4 if group == s7comm.GROUP_BLOCK else 0  # block entries are not split
        chunks = [payload[i : i + room] for i in range(0, len(payload), room)] or [b""]
        self.sequence = self.sequence % 255 + 1
        self.pending = _Pending(group, subfunction, self.sequence, chunks[1:]) if len(chunks) > 1 else None
        return s7comm.encode_userdata_response(
            reference,
            group=group,
            subfunction=subfunction,
            sequence=self.sequence,
            payload=chunks[0],
            data_unit=0xD5 if self.pending else 0,
            more=self.pending is not None,
        )

    def _next_piece(self, reference: int, group: int, subfunction: int) -> bytes:
        pending = self.pending
        if pending is None or not pending.chunks or (pending.group, pending.subfunction) != (group, subfunction):
            self.pending = None
            return s7comm.encode_userdata_response(
                reference, group=group, subfunction=subfunction, sequence=0, error=s7comm.ERROR_CONTEXT_NOT_SUPPORTED
            )
        chunk = pending.chunks.pop(0)
        more = bool(pending.chunks)
        if not more:
            self.pending = None
        return s7comm.encode_userdata_response(
            reference,
            group=group,
            subfunction=subfunction,
            sequence=pending.sequence,
            payload=chunk,
            data_unit=0xD5,
            more=more,
        )

    def _szl_payload(self, szl_id: int, index: int) -> bytes | None:
        """SZL `szl_id` (0x01xx: the one record with `index`) as the response payload."""
        lists = szl_lists(self.identity, self.state, dt.datetime.fromtimestamp(self.clock(), dt.UTC))
        whole = lists.get(szl_id)
        if whole is not None:
            return s7comm.encode_szl(szl_id, index, whole[0], whole[1])
        partial = lists.get(szl_id & 0x00FF) if szl_id & 0xFF00 == 0x0100 else None
        if partial is None:
            return None
        record_length, records = partial
        chosen = [r for r in records if struct.unpack_from(">H", r, 0)[0] == index]
        return s7comm.encode_szl(szl_id, index, record_length, chosen) if chosen else None
