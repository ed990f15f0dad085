"""What a decoded capture comes to: packets, messages per protocol, malformed frames by reason, the
time it spans, and the hosts it shows (`inventory.InventoryBuilder`: roles, units, point ranges).

One pass over `capture.CaptureReader`; whoever else needs the packets (a baseline learner, a
detector) observes them in the same pass, so a capture is read once and never held in memory.
`PacketPass` is that per-packet path; live monitoring (`monitor.py`) feeds an interface's packets
through it too, taking the hosts seen every so often instead of once at the end. Datagrams refused
while reassembling IP fragments count as malformed, with their reason, like broken ICS frames;
fragments given up and flows forgotten to make room count as dropped, with theirs.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from iip.security.capture import CaptureReader
from iip.security.fragments import FragmentStats
from iip.security.inventory import InventoryBuilder
from iip.security.protocols.base import IcsMessage, PacketInfo
from iip.security.records import ObservedAsset

Observer = Callable[[PacketInfo, list[IcsMessage]], None]


@dataclass(slots=True)
class CaptureSummary:
    frames: int = 0  # records in the file
    packets: int = 0  # IP packets among them
    messages: Counter[str] = field(default_factory=Counter)
    malformed: Counter[str] = field(default_factory=Counter)  # ICS frames and IP datagrams, per reason
    dropped: Counter[str] = field(default_factory=Counter)  # IP fragments and flows given up, per reason
    first_time: dt.datetime | None = None
    last_time: dt.datetime | None = None
    assets: list[ObservedAsset] = field(default_factory=list)
    error: str = ""  # why the file could not be read to its end; "" when it could


class PacketPass:
    """What every packet goes through: the counts and time span of `summary`, the hosts it shows, and
    each observer."""

    def __init__(self, observers: Sequence[Observer] = ()) -> None:
        self.summary = CaptureSummary()
        self.observers = list(observers)
        self._inventory = InventoryBuilder()

    def observe(self, packet: PacketInfo, messages: list[IcsMessage]) -> None:
        self.summary.packets += 1
        _span(self.summary, packet.time)
        self._inventory.observe(packet, messages)
        for observe in self.observers:
            observe(packet, messages)
        count(self.summary, messages)

    def take_hosts(self) -> list[ObservedAsset]:
        """The hosts seen since the last take, in the stored shape; the next take starts afresh."""
        hosts = [asset.to_record() for asset in self._inventory.assets()]
        self._inventory = InventoryBuilder()
        return hosts


def summarize(
    decoded: Iterable[tuple[PacketInfo, list[IcsMessage]]], observers: Sequence[Observer] = ()
) -> CaptureSummary:
    """One pass over decoded packets: counts, time span and hosts; each observer sees every packet too."""
    packets = PacketPass(observers)
    for packet, messages in decoded:
        packets.observe(packet, messages)
    packets.summary.assets = packets.take_hosts()
    return packets.summary


def count(summary: CaptureSummary, messages: Iterable[IcsMessage]) -> None:
    for message in messages:
        summary.messages[message.protocol.value] += 1
        if message.malformed:
            summary.malformed[message.malformed] += 1


def decode_capture(source: str | Path | IO[bytes], observers: Sequence[Observer] = ()) -> CaptureSummary:
    """Read a pcap/pcapng file; a damaged or foreign file gives what was read and `error`, never raises."""
    reader = CaptureReader(source)
    summary = summarize(reader, observers)
    count(summary, reader.finish())  # frames still pending when the capture ended
    summary.frames, summary.error = reader.frames, reader.error
    count_fragments(summary, reader.decoder.stats.fragments)
    count_evictions(summary, reader.decoder.stats.evicted)
    return summary


def count_fragments(summary: CaptureSummary, stats: FragmentStats) -> None:
    """Datagrams refused (overlapping fragments ...) as malformed, fragments given up as dropped."""
    summary.malformed.update(stats.malformed)
    summary.dropped.update(stats.dropped)


def count_evictions(summary: CaptureSummary, evicted: Counter[str]) -> None:
    """Flows forgotten to make room (their reassembly state was lost) as dropped; flows forgotten
    once idle lost nothing and are not counted."""
    for reason, n in evicted.items():
        if reason != "idle":
            summary.dropped[f"flows forgotten: {reason}"] += n


def _span(summary: CaptureSummary, at: dt.datetime) -> None:
    if summary.first_time is None or at < summary.first_time:
        summary.first_time = at
    if summary.last_time is None or at > summary.last_time:
        summary.last_time = at
