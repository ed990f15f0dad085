"""Live monitoring rate: real Modbus/TCP traffic on the loopback interface, decoded as it passes.

A pymodbus server on an address of its own in 127.0.0.0/8 and `--clients` client processes reading
holding registers as fast as they can for `--seconds`. While they run, our live capture
(`LiveCapture`, AF_PACKET on `lo`, in a process of its own: the same per-packet path as the monitor,
codecs and `PacketPass` with its inventory) and, over the same traffic at the same time, the
baseline `tcpdump -i lo -w /dev/null` (filtered to the pair's address) both read the interface.
Reported: the pair's packets per second each took in, the packets the kernel dropped for each
(PACKET_STATISTICS; tcpdump's "dropped by kernel"), and CPU seconds per 100,000 packets. Needs root
(or CAP_NET_RAW) and tcpdump (Debian package `tcpdump`).

    .venv/bin/python bench/security_live.py [--seconds 10] [--clients 3] [--no-record]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, report

UNIT = 1


def serve(host: str, port: int, ready: Event, stop: Event) -> None:
    """A pymodbus server with 100 holding registers until `stop`."""
    import asyncio

    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    async def main() -> None:
        bits = [SimData(0, values=[False] * 8, datatype=DataType.BITS)]
        registers = [SimData(0, values=list(range(100)), datatype=DataType.REGISTERS)]
        device = SimDevice(id=0, simdata=(bits, bits, registers, registers))
        server = ModbusTcpServer(device, address=(host, port))
        await server.serve_forever(background=True)
        ready.set()
        await asyncio.to_thread(stop.wait)
        await server.shutdown()  # type: ignore[no-untyped-call]

    asyncio.run(main())


def poll(host: str, port: int, client_host: str, seconds: float, results: Connection) -> None:
    """Reads ten registers again and again for `seconds`; sends how many reads were answered."""
    from pymodbus.client import ModbusTcpClient

    client = ModbusTcpClient(host, port=port, source_address=(client_host, 0), timeout=2)
    client.connect()
    answered, until = 0, time.monotonic() + seconds
    while time.monotonic() < until:
        if not client.read_holding_registers(random.randint(0, 80), count=10, device_id=UNIT).isError():
            answered += 1
    client.close()
    results.send(answered)


def capture(net: str, ready: Event, stop: Event, results: Connection) -> None:
    """Our live capture on `lo` until `stop`: the pair's packets and records, kernel drops, CPU."""
    from iip.security.captures import PacketPass
    from iip.security.live import LiveCapture
    from iip.security.protocols.base import IcsMessage, PacketInfo

    packets = PacketPass()
    ours = {"packets": 0, "records": 0}

    def on_packet(info: PacketInfo, messages: list[IcsMessage]) -> None:
        packets.observe(info, messages)
        if info.source.host.startswith(net) and info.destination.host.startswith(net):
            ours["packets"] += 1
            ours["records"] += len(messages)

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    live = LiveCapture("lo", on_packet, poll_interval=0.05)
    live.start()
    before = cpu()  # the imports and start-up are not the capture's cost
    ready.set()
    stop.wait()
    live.stop()
    received, dropped = live.kernel_counts()
    results.send({**ours, "frames": live.frames, "kernel_received": received, "kernel_dropped": dropped,
                  "cpu": cpu() - before, "reader": live.setup.reader,
                  "unread": received - dropped - live.frames})  # fmt: skip


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        raise SystemExit("tcpdump not found (apt-get install tcpdump)")
    net = f"127.{random.randint(64, 250)}.{random.randint(1, 250)}."
    server_host = net + "1"
    port = free_port(server_host)
    ctx = mp.get_context("spawn")
    stop_server, stop_capture = ctx.Event(), ctx.Event()
    server_ready, capture_ready = ctx.Event(), ctx.Event()
    server = ctx.Process(target=serve, args=(server_host, port, server_ready, stop_server))
    server.start()
    ours_end, ours_result = ctx.Pipe(duplex=False)
    capturer = ctx.Process(target=capture, args=(net, capture_ready, stop_capture, ours_result))
    capturer.start()
    baseline = subprocess.Popen(
        [tcpdump, "-i", "lo", "-n", "-w", "/dev/null", f"net {net}0/24"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    if not (server_ready.wait(30) and capture_ready.wait(30)):
        raise SystemExit("the server or the capture did not start")
    time.sleep(1.0)  # tcpdump has opened its socket by now
    baseline_cpu_before = cpu_of(baseline.pid)
    clients, answers = [], []
    started = time.monotonic()
    for n in range(args.clients):
        receive, send = ctx.Pipe(duplex=False)
        client = ctx.Process(target=poll, args=(server_host, port, f"{net}{10 + n}", args.seconds, send))
        client.start()
        clients.append(client)
        answers.append(receive)
    reads = sum(receive.recv() for receive in answers)
    for client in clients:
        client.join()
    time.sleep(0.5)  # the last packets reach both readers
    elapsed = time.monotonic() - started
    baseline_cpu = cpu_of(baseline.pid) - baseline_cpu_before
    baseline.send_signal(signal.SIGINT)
    _, stderr = baseline.communicate(timeout=30)
    stop_capture.set()
    ours = ours_end.recv()
    capturer.join()
    stop_server.set()
    server.join()

    def figure(label: str) -> int:
        found = re.search(rf"(\d+) packets? {label}", stderr)
        return int(found.group(1)) if found else 0

    theirs_packets, theirs_dropped = figure("captured"), figure("dropped by kernel")
    print(f"{args.clients} clients, {reads:,} reads answered in {elapsed:.1f} s; ours: {ours['packets']:,} packets "
          f"of the pair ({ours['records']:,} records) among {ours['frames']:,} frames on lo, kernel "
          f"received {ours['kernel_received']:,} and dropped {ours['kernel_dropped']:,} ({ours['reader']}; "
          f"{ours['unread']:,} still queued when it stopped); tcpdump: "
          f"{theirs_packets:,} captured, {theirs_dropped:,} dropped by kernel")  # fmt: skip
    per_100k = 100_000 / max(1, ours["packets"])
    results = [
        Result("security_live", "Modbus packets/s taken in live", ours["packets"] / elapsed, "tcpdump -w /dev/null",
               theirs_packets / elapsed, "packets/s"),
        Result("security_live", "packets dropped by the kernel", ours["kernel_dropped"], "tcpdump -w /dev/null",
               theirs_dropped, "packets", higher_is_better=False),
        Result("security_live", "CPU per 100,000 packets", 1000 * ours["cpu"] * per_100k, "tcpdump -w /dev/null",
               1000 * baseline_cpu * 100_000 / max(1, theirs_packets), "ms", higher_is_better=False),
    ]  # fmt: skip
    report(results, record=not args.no_record)


if __name__ == "__main__":
    main()
