"""ICS decoding rate from captures, one core: `read_capture` (frames, TCP flows, codec records).

Modbus: the largest Modbus captures (ModbusTCP.pcap, mb2.pcap, bro's modbusBig.pcap), read from
memory and repeated until `--packets` packets have gone through. Baselines, measured in the same
run on the same bytes: scapy reading the same captures and dissecting them down to its Modbus layer
(`scapy.contrib.modbus`, bound to port 502), and dpkt alone (frames parsed to TCP, no ICS decoding)
as the floor any Python reader pays. DNP3 (every capture in dnp3/ and bro/dnp3/) and IEC 104 (the
three captures) are measured the same way, with dpkt alone and, for IEC 104, scapy's IEC 104 layer
as baselines.

    .venv/bin/python bench/security_decode.py [--packets 200000] [--no-record]

Target: 20,000 Modbus packets/s per core.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dpkt

from bench.common import Result, report
from iip.security.capture import read_capture

DATASETS = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "ics" / "pcaps"
MODBUS = ["ModbusTCP/ModbusTCP.pcap", "ModbusTCP/mb2.pcap", "bro/modbus/modbusBig.pcap"]
IEC104 = ["IEC60870-5-104/090813_diverse.pcap", "IEC60870-5-104/JavaRMI_and_IEC_Misc.pcap",
          "IEC60870-5-104/TestDissectIec104.pcap"]  # fmt: skip


def load(names: list[str]) -> list[bytes]:
    return [(DATASETS / name).read_bytes() for name in names]


def packet_count(captures: list[bytes]) -> int:
    return sum(sum(1 for _ in dpkt.pcap.Reader(io.BytesIO(data))) for data in captures)


def rate(captures: list[bytes], packets_wanted: int, read: Callable[[bytes], object]) -> tuple[float, int]:
    """Packets per second of `read` over the captures, repeated until `packets_wanted` packets."""
    per_round = packet_count(captures)
    rounds = max(1, -(-packets_wanted // per_round))
    started = time.perf_counter()
    for _ in range(rounds):
        for data in captures:
            read(data)
    elapsed = time.perf_counter() - started
    return rounds * per_round / elapsed, rounds * per_round


def ours(data: bytes) -> None:
    summary = read_capture(io.BytesIO(data))
    if summary.error:
        raise RuntimeError(summary.error)


def dpkt_only(data: bytes) -> None:
    for _ts, buf in dpkt.pcap.Reader(io.BytesIO(data)):
        ip = dpkt.ethernet.Ethernet(buf).data
        _ = getattr(getattr(ip, "data", None), "data", None)


def scapy_reader() -> Callable[[bytes], None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import scapy.contrib.modbus
        import scapy.contrib.scada.iec104  # noqa: F401 - binds TCP port 2404 to the IEC 104 layer
        from scapy.utils import PcapReader

    def read(data: bytes) -> None:
        for packet in PcapReader(io.BytesIO(data)):
            packet.lastlayer()  # dissection is eager: every layer is built on reading

    return read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    modbus = load(MODBUS)
    dnp3 = [path.read_bytes() for path in sorted((DATASETS / "dnp3").rglob("*.pcap"))
            + sorted((DATASETS / "bro" / "dnp3").glob("*.pcap"))]  # fmt: skip
    dnp3 = [data for data in dnp3 if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4")]
    iec104 = load(IEC104)
    scapy = scapy_reader()
    results: list[Result] = []
    ours_rate, ours_packets = rate(modbus, args.packets, ours)
    scapy_rate, scapy_packets = rate(modbus, packet_count(modbus), scapy)  # scapy is slow: one round
    dpkt_rate, _ = rate(modbus, args.packets // 2, dpkt_only)
    print(f"Modbus: ours over {ours_packets:,} packets, scapy over {scapy_packets:,}")
    results.append(Result("security_decode", "Modbus pcap packets/s", ours_rate, "scapy + Modbus layer",
                          scapy_rate, "packets/s"))  # fmt: skip
    results.append(Result("security_decode", "Modbus pcap packets/s", ours_rate, "dpkt frames only (no ICS)",
                          dpkt_rate, "packets/s"))  # fmt: skip
    for label, captures, with_scapy in (("DNP3", dnp3, False), ("IEC 104", iec104, True)):
        wanted = args.packets // 4
        ours_rate, _ = rate(captures, wanted, ours)
        base_rate, _ = rate(captures, wanted, dpkt_only)
        results.append(Result("security_decode", f"{label} pcap packets/s", ours_rate, "dpkt frames only (no ICS)",
                              base_rate, "packets/s"))  # fmt: skip
        if with_scapy:
            scapy_rate, _ = rate(captures, packet_count(captures) * 5, scapy)
            results.append(Result("security_decode", f"{label} pcap packets/s", ours_rate,
                                  "scapy + IEC 104 layer", scapy_rate, "packets/s"))  # fmt: skip
    report(results, record=not args.no_record)


if __name__ == "__main__":
    main()
