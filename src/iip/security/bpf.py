"""The live capture's kernel-side filter: a classic BPF program attached with `SO_ATTACH_FILTER`.

Frames the program refuses never reach the socket's queue or ring, nor its statistics, so the
reader spends no time on them and they cannot crowd out the ones it wants. The program has up to
two parts:

- loopback: `ld [SKF_AD_OFF + SKF_AD_PKTTYPE]; jeq #PACKET_OUTGOING, drop` — every packet on `lo` is
  seen twice, going out and coming in; the outgoing copy is dropped.
- ICS ports only (optional): IPv4 or IPv6 carrying TCP or UDP with port 502, 20000, 2404 or 102 at
  either end passes, and so does every IP fragment (IPv4 with MF set or a fragment offset; IPv6
  with a fragment header), because fragments after the first carry no ports and the decoder
  reassembles them. IPv6 packets whose first header is hop-by-hop, routing or destination options
  pass too: classic BPF cannot loop over the header chain. Anything else (ARP, ICMP, other ports,
  ICS on an unusual port) is dropped.

On Ethernet the program skips up to two VLAN tags written in the frame (802.1Q 0x8100, 802.1ad
0x88a8, legacy QinQ 0x9100): the kernel takes the outer tag off received frames before packet
sockets see them, but an inner tag, or a tag on a frame being sent, stays in the data. Interfaces
that carry raw IP (tun) start with the IP header. Ethernet (loopback's too):

    ldx #14; ldh [12]                          X: where the IP header starts, A: the EtherType
    jeq #0x8100/#0x88a8/#0x9100 -> tag1
    ...  tag1: ldx #18; ldh [16]; (tags again -> tag2: ldx #22; ldh [20])
    jeq #0x0800 -> ipv4; jeq #0x86dd -> ipv6; ret #0
    ipv4: ldh [x+6]; jset #0x3fff -> accept            MF or offset: a fragment
          ldb [x+9]; jeq #6/#17 -> else drop
          ldb [x+0]; and #0xf; lsh #2; add x; tax -> ports     X: the TCP/UDP header
    ipv6: ldb [x+6]; jeq #6/#17 -> (txa; add #40; tax) -> ports
          jeq #44/#0/#43/#60 -> accept; ret #0
    ports: ldh [x+0]; jeq #502/#20000/#2404/#102 -> accept
           ldh [x+2]; jeq #502/#20000/#2404/#102 -> accept; ret #0
    accept: ret #262144

A load beyond the frame's end refuses the frame, as classic BPF does.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

SO_ATTACH_FILTER = 26
SO_DETACH_FILTER = 27

# Instruction classes, sizes, modes and operations (linux/filter.h, linux/bpf_common.h).
BPF_LD, BPF_LDX, BPF_ST, BPF_ALU, BPF_JMP, BPF_RET, BPF_MISC = 0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x07
BPF_W, BPF_H, BPF_B = 0x00, 0x08, 0x10
BPF_IMM, BPF_ABS, BPF_IND, BPF_MEM = 0x00, 0x20, 0x40, 0x60
BPF_ADD, BPF_AND, BPF_LSH, BPF_RSH = 0x00, 0x50, 0x60, 0x70
BPF_JA, BPF_JEQ, BPF_JSET = 0x00, 0x10, 0x40
BPF_K, BPF_X = 0x00, 0x08
BPF_TAX, BPF_TXA = 0x00, 0x80
SKF_AD_OFF = -0x1000
SKF_AD_PKTTYPE = 4

PACKET_OUTGOING = 4
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 0xFFFE  # tun devices: raw IP
ARPHRD_TUNNEL = 0x0100 + 31  # IP-in-IP
ETHERNET_TYPES = frozenset({ARPHRD_ETHER, ARPHRD_LOOPBACK})
RAW_IP_TYPES = frozenset({ARPHRD_NONE, ARPHRD_TUNNEL})

ICS_PORTS = (502, 20000, 2404, 102)  # Modbus/TCP, DNP3, IEC 60870-5-104, S7comm (ISO-TSAP)
VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
IPV6_PASS_HEADERS = (44, 0, 43, 60)  # fragment; hop-by-hop, routing, destination options
ACCEPT = 0x40000  # bytes of a frame kept: all of it (an IP packet is at most 64 KiB)
_INSTRUCTION = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k


@dataclass(frozen=True, slots=True)
class Label:
    name: str


@dataclass(frozen=True, slots=True)
class Op:
    """One instruction; `jt`/`jf` name a label further on (or are 0: the next instruction)."""

    code: int
    k: int = 0
    jt: str | int = 0
    jf: str | int = 0


Program = list[tuple[int, int, int, int]]  # (code, jt, jf, k), as the kernel reads them


def assemble(items: Sequence[Op | Label]) -> Program:
    """Resolves the labels to the forward offsets classic BPF jumps by."""
    where: dict[str, int] = {}
    position = 0
    for item in items:
        if isinstance(item, Label):
            where[item.name] = position
        else:
            position += 1
    program: Program = []
    for item in items:
        if isinstance(item, Label):
            continue
        here = len(program)

        def offset(target: str | int, here: int = here) -> int:
            if isinstance(target, int):
                return target
            distance = where[target] - here - 1
            if not 0 <= distance <= 255:
                raise ValueError(f"jump to {target} out of reach ({distance})")
            return distance

        k = item.k
        if item.code == BPF_JMP | BPF_JA and isinstance(item.jt, str):
            k, jt, jf = offset(item.jt), 0, 0
        else:
            jt, jf = offset(item.jt), offset(item.jf)
        program.append((item.code, jt, jf, k & 0xFFFFFFFF))
    return program


def _any_of(values: Sequence[int], target: str, otherwise: str | int = 0) -> list[Op | Label]:
    """`jeq` each value to `target`; when none matches, on to `otherwise` (0: the next instruction)."""
    jumps: list[Op | Label] = [Op(BPF_JMP | BPF_JEQ | BPF_K, value, target) for value in values[:-1]]
    jumps.append(Op(BPF_JMP | BPF_JEQ | BPF_K, values[-1], target, otherwise))
    return jumps


def capture_program(hardware_type: int, *, drop_outgoing: bool, ics_ports_only: bool) -> Program | None:
    """The filter for an interface of `hardware_type` (ARPHRD_*); None when there is nothing to
    filter. The ports part applies to Ethernet and raw-IP interfaces only (ValueError otherwise)."""
    items: list[Op | Label] = []
    if drop_outgoing:
        items += [
            Op(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_PKTTYPE),
            Op(BPF_JMP | BPF_JEQ | BPF_K, PACKET_OUTGOING, "drop"),
        ]
    if not ics_ports_only:
        if not items:
            return None
        return assemble([*items, Op(BPF_RET | BPF_K, ACCEPT), Label("drop"), Op(BPF_RET | BPF_K, 0)])
    if hardware_type in ETHERNET_TYPES:
        items += [
            Op(BPF_LDX | BPF_W | BPF_IMM, 14),
            Op(BPF_LD | BPF_H | BPF_ABS, 12),
            *_any_of(VLAN_TYPES, "tag1", "network"),
            Label("tag1"),
            Op(BPF_LDX | BPF_W | BPF_IMM, 18),
            Op(BPF_LD | BPF_H | BPF_ABS, 16),
            *_any_of(VLAN_TYPES, "tag2", "network"),
            Label("tag2"),
            Op(BPF_LDX | BPF_W | BPF_IMM, 22),
            Op(BPF_LD | BPF_H | BPF_ABS, 20),
            Label("network"),
            Op(BPF_JMP | BPF_JEQ | BPF_K, 0x0800, "ipv4"),
            Op(BPF_JMP | BPF_JEQ | BPF_K, 0x86DD, "ipv6", "drop"),
        ]
    elif hardware_type in RAW_IP_TYPES:
        items += [
            Op(BPF_LDX | BPF_W | BPF_IMM, 0),
            Op(BPF_LD | BPF_B | BPF_ABS, 0),
            Op(BPF_ALU | BPF_RSH | BPF_K, 4),
            Op(BPF_JMP | BPF_JEQ | BPF_K, 4, "ipv4"),
            Op(BPF_JMP | BPF_JEQ | BPF_K, 6, "ipv6", "drop"),
        ]
    else:
        raise ValueError(f"no ICS port filter for hardware type {hardware_type}")
    items += [
        Label("ipv4"),
        Op(BPF_LD | BPF_H | BPF_IND, 6),
        Op(BPF_JMP | BPF_JSET | BPF_K, 0x3FFF, "accept"),
        Op(BPF_LD | BPF_B | BPF_IND, 9),
        *_any_of((6, 17), "ports4", "drop"),
        Label("ports4"),
        Op(BPF_LD | BPF_B | BPF_IND, 0),
        Op(BPF_ALU | BPF_AND | BPF_K, 0x0F),
        Op(BPF_ALU | BPF_LSH | BPF_K, 2),
        Op(BPF_ALU | BPF_ADD | BPF_X),
        Op(BPF_MISC | BPF_TAX),
        Op(BPF_JMP | BPF_JA, jt="ports"),
        Label("ipv6"),
        Op(BPF_LD | BPF_B | BPF_IND, 6),
        *_any_of((6, 17), "ports6"),
        *_any_of(IPV6_PASS_HEADERS, "accept", "drop"),
        Label("ports6"),
        Op(BPF_MISC | BPF_TXA),
        Op(BPF_ALU | BPF_ADD | BPF_K, 40),
        Op(BPF_MISC | BPF_TAX),
        Label("ports"),
        Op(BPF_LD | BPF_H | BPF_IND, 0),
        *_any_of(ICS_PORTS, "accept"),
        Op(BPF_LD | BPF_H | BPF_IND, 2),
        *_any_of(ICS_PORTS, "accept", "drop"),
        Label("accept"),
        Op(BPF_RET | BPF_K, ACCEPT),
        Label("drop"),
        Op(BPF_RET | BPF_K, 0),
    ]
    return assemble(items)


SetOption = Callable[[socket.socket, int, int, int | bytes], None]


def attach(sock: socket.socket, program: Program, set_option: SetOption) -> None:
    """Attaches `program` to `sock` (struct sock_fprog: length and a pointer to the instructions)."""
    code = b"".join(_INSTRUCTION.pack(*instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HP", len(program), ctypes.addressof(buffer))  # native: padded to the pointer
    set_option(sock, socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)  # the kernel copies the program
