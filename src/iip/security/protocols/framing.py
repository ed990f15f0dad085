"""Cutting a byte stream into length-delimited frames, the part every stream codec shares.

A TCP payload may hold half a frame, several frames, or bytes that are no frame at all. The
splitter keeps what it has not used yet and hands back, in stream order, complete frames and runs
of bytes that cannot start one. Whether a position starts a frame is decided only from the bytes at
that position, so the same stream cut at any points gives the same frames and the same garbage.
"""

from __future__ import annotations

from collections.abc import Callable

# A measure reads the header at `position` of `buffer`: the frame's whole length when the header is
# plausible, 0 when no frame can start there, None when more bytes are needed to tell.
Measure = Callable[[bytes, int], int | None]

MAX_GARBAGE = 4096  # a run of unframeable bytes is reported once it is this long


class FrameSplitter:
    """Splits one direction of a stream into `(is_frame, bytes)` pieces."""

    __slots__ = ("_max_garbage", "_measure", "_pending", "_skipped")

    def __init__(self, measure: Measure, *, max_garbage: int = MAX_GARBAGE) -> None:
        self._measure = measure
        self._pending = b""
        self._skipped = 0  # how many leading bytes of `_pending` are known garbage
        self._max_garbage = max_garbage

    @property
    def pending(self) -> bytes:
        """The bytes kept for the next `push`: an unfinished frame or undecided garbage."""
        return self._pending

    def push(self, data: bytes) -> list[tuple[bool, bytes]]:
        buffer = self._pending + data if self._pending else bytes(data)
        measure = self._measure
        pieces: list[tuple[bool, bytes]] = []
        start = 0
        scan = self._skipped
        size = len(buffer)
        while scan < size:
            length = measure(buffer, scan)
            if length is None:
                break
            if length > 0:
                if scan > start:
                    pieces.append((False, buffer[start:scan]))
                    start = scan
                end = start + length
                if end > size:
                    break
                pieces.append((True, buffer[start:end]))
                start = scan = end
                continue
            scan += 1
            if scan - start >= self._max_garbage:
                pieces.append((False, buffer[start:scan]))
                start = scan
        self._pending = buffer[start:]
        self._skipped = scan - start
        return pieces

    def take_rest(self) -> bytes:
        """What is left at the end of the stream (an unfinished frame), emptying the splitter."""
        rest, self._pending, self._skipped = self._pending, b"", 0
        return rest
