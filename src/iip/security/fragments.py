"""IP fragment reassembly (RFC 791 for IPv4, RFC 8200 for IPv6) with RFC 5722's care about overlaps.

Fragments are held per datagram (source, destination, protocol and identification) until every byte
from 0 to the end the last fragment names has arrived; the datagram's payload is then handed back
whole. A fragment overlapping one already held is refused, and with it the whole datagram and any
of its fragments still to come (an overlap is how evasion hides one payload behind another); an
exact duplicate is only dropped. Held datagrams are bounded in number and bytes (the oldest is
dropped to make room) and given up `timeout_s` after their first fragment. Everything refused or
given up is counted with its reason: malformed (`FragmentStats.malformed`) or dropped (`dropped`).
"""

from __future__ import annotations

import bisect
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

MAX_DATAGRAM = 65535  # IPv4 total length; IPv6 payload length (jumbograms are never fragmented)


@dataclass(frozen=True, slots=True)
class FragmentLimits:
    timeout_s: float = 30.0  # Linux's ipfrag_time
    max_datagrams: int = 1024  # incomplete datagrams held at once
    max_bytes: int = 4 * 1024 * 1024  # payload bytes held at once


@dataclass
class FragmentStats:
    fragments: int = 0  # fragments seen
    reassembled: int = 0  # datagrams put back together
    malformed: Counter[str] = field(default_factory=Counter)  # refused datagrams, per reason
    dropped: Counter[str] = field(default_factory=Counter)  # fragments or datagrams given up, per reason


@dataclass(slots=True)
class _Datagram:
    first: float  # when its first fragment arrived (seconds)
    offsets: list[int] = field(default_factory=list)  # sorted
    parts: dict[int, bytes] = field(default_factory=dict)  # offset -> payload
    held: int = 0  # payload bytes held
    end: int | None = None  # the payload length, once the last fragment has come
    refused: bool = False  # overlapping or inconsistent: its later fragments are dropped too


class Reassembler:
    """Puts fragmented datagrams back together; `add` returns the payload when one is complete."""

    def __init__(self, limits: FragmentLimits | None = None) -> None:
        self.limits = limits or FragmentLimits()
        self.stats = FragmentStats()
        self._datagrams: OrderedDict[tuple[Any, ...], _Datagram] = OrderedDict()  # oldest first
        self._bytes = 0
        self._latest = 0.0

    @property
    def pending(self) -> int:
        """Incomplete datagrams held."""
        return sum(1 for d in self._datagrams.values() if not d.refused)

    @property
    def waiting(self) -> bool:
        """Whether anything is held (incomplete datagrams, or refused ones remembered)."""
        return bool(self._datagrams)

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def add(self, key: tuple[Any, ...], offset: int, payload: bytes, more: bool, now: float) -> bytes | None:
        """One fragment (`offset` in bytes, `more`: the MF flag) of the datagram `key`, whose first item
        names the IP version ("IPv4", "IPv6") for the reasons; the whole payload when this fragment
        completes it, else None."""
        self.stats.fragments += 1
        version = key[0]
        self.expire(now)
        datagram = self._datagrams.get(key)
        if datagram is None:
            datagram = self._datagrams[key] = _Datagram(now)
        elif datagram.refused:
            self.stats.dropped[f"{version} fragments of a refused datagram"] += 1
            return None
        end = offset + len(payload)
        problem = self._problem(datagram, offset, payload, end, more)
        if problem == "duplicate":
            self.stats.dropped[f"{version} duplicate fragments"] += 1
            return None
        if problem:
            self.stats.malformed[f"{version} {problem} (datagram refused)"] += 1
            self._refuse(datagram)
            return None
        if not more:
            datagram.end = end
        if payload:
            bisect.insort(datagram.offsets, offset)
            datagram.parts[offset] = payload
            datagram.held += len(payload)
            self._bytes += len(payload)
        if datagram.end is not None and datagram.held == datagram.end:
            # No overlaps were let in, so as many bytes as the length means every byte is there.
            del self._datagrams[key]
            self._bytes -= datagram.held
            self.stats.reassembled += 1
            return b"".join(datagram.parts[o] for o in datagram.offsets)
        self._bound(key)
        return None

    def expire(self, now: float) -> None:
        """Gives up the datagrams whose first fragment came more than `timeout_s` before `now`."""
        self._latest = max(self._latest, now)
        horizon = self._latest - self.limits.timeout_s
        while self._datagrams:
            key, oldest = next(iter(self._datagrams.items()))
            if oldest.first >= horizon:
                return
            self._drop(key, f"datagrams incomplete after {self.limits.timeout_s:g} s")

    def finish(self) -> None:
        """The end of the traffic: what is still incomplete is counted as dropped."""
        for key in list(self._datagrams):
            self._drop(key, "datagrams incomplete when the traffic ended")

    @staticmethod
    def _problem(datagram: _Datagram, offset: int, payload: bytes, end: int, more: bool) -> str:
        """Why the fragment is refused ("duplicate": only dropped), or ""."""
        known_end = max((o + len(p) for o, p in datagram.parts.items()), default=0)
        at = bisect.bisect_left(datagram.offsets, offset)
        same = at < len(datagram.offsets) and datagram.offsets[at] == offset and datagram.parts[offset] == payload
        before = datagram.offsets[at - 1] if at else None
        overlaps = (before is not None and before + len(datagram.parts[before]) > offset) or (
            at < len(datagram.offsets) and datagram.offsets[at] < end
        )
        checks = (
            (more and len(payload) % 8 != 0, "fragment payload not a multiple of 8 bytes"),
            (end > MAX_DATAGRAM, "fragments reassemble beyond 65,535 bytes"),
            (datagram.end is not None and (end > datagram.end or (not more and end != datagram.end)),
             "fragments disagree on the datagram's end"),
            (not more and end < known_end, "fragments disagree on the datagram's end"),
            (same and bool(payload), "duplicate"),
            (overlaps and not same, "fragments overlap"),
        )  # fmt: skip
        return next((reason for failed, reason in checks if failed), "")

    def _refuse(self, datagram: _Datagram) -> None:
        """Keeps the datagram's key (without its bytes) so its later fragments are refused too."""
        self._bytes -= datagram.held
        datagram.parts, datagram.offsets, datagram.held, datagram.refused = {}, [], 0, True

    def _bound(self, keep: tuple[Any, ...]) -> None:
        limits = self.limits
        while len(self._datagrams) > limits.max_datagrams or self._bytes > limits.max_bytes:
            key = next(iter(self._datagrams))
            if key == keep and len(self._datagrams) == 1:  # one datagram larger than the whole budget
                self._drop(key, "datagrams dropped: fragment buffers full")
                return
            if key == keep:
                self._datagrams.move_to_end(key)
                continue
            self._drop(key, "datagrams dropped: fragment buffers full")

    def _drop(self, key: tuple[Any, ...], reason: str) -> None:
        datagram = self._datagrams.pop(key)
        self._bytes -= datagram.held
        if not datagram.refused:
            self.stats.dropped[f"{key[0]} {reason}"] += 1
