"""The binary frame `telemetry.points` travels in (ADR 0017), and its codec.

A batch of 52,000 points is about 2 MB of JSON, which every subscriber parsed and validated in about
17 ms. The frame keeps the columns as packed little-endian arrays behind a small JSON header:

    offset  size  what
    0       4     magic b"\\x89IPB" (0x89 is never UTF-8 nor JSON: binary frames are told apart at once)
    4       1     version (1)
    5       4     header length H, uint32
    9       H     header, JSON: tenant_id, source, count, series, attributes (padded with spaces so
                  that the columns start at a multiple of 8)
    9+H     8n    ts_ms, int64
            8n    value, float64 (NaN and infinities travel as they are, which JSON cannot carry)
            4n    series_index, uint32
            n     quality, uint8

Decoding checks what `PointBatch.model_validate` checks (the header's fields, the columns' length,
`series_index` within `series`) and that every quality is a `Quality` code, and raises `FrameError`
(a ValueError: the bus dead-letters the message) otherwise. Data that starts like a JSON object is
decoded as the pydantic JSON the subject carried before, so messages queued then, and dead letters
published again, still decode.
"""

from __future__ import annotations

import logging
import struct
import sys
from array import array
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, Field, ValidationError

if TYPE_CHECKING:
    from iip.telemetry.public import PointBatch

logger = logging.getLogger(__name__)

MAGIC = b"\x89IPB"
VERSION = 1
_FIXED = struct.Struct("<4sBI")  # magic, version, header length
_POINT_BYTES = 8 + 8 + 4 + 1
_ALIGN = 8
_JSON_START = frozenset(b"{ \t\r\n")
_LITTLE = sys.byteorder == "little"

if array("I").itemsize != 4 or array("q").itemsize != 8 or array("d").itemsize != 8:
    raise ImportError("the point batch frame needs 4-byte unsigned and 8-byte signed integer arrays")


class FrameError(ValueError):
    """Bytes that are not a valid point batch frame; the message says what is wrong."""


class _Header(BaseModel):
    tenant_id: str
    source: str = ""
    count: int = Field(ge=0)
    series: list[tuple[str, str]] = Field(default_factory=list)
    attributes: dict[str, dict[str, Any]] = Field(default_factory=dict)


class PointBatchCodec:
    """Encodes `PointBatch`es as binary frames; decodes frames and the older JSON form.

    Takes the model and the quality codes rather than importing them: `telemetry.public` builds its
    subject with this codec.
    """

    def __init__(self, model: type[PointBatch], qualities: Iterable[int]) -> None:
        self._model = model
        codes = sorted({int(q) for q in qualities})
        if not codes or codes[0] < 0 or codes[-1] > 255:
            raise ValueError("quality codes must fit in a byte")
        self._quality_codes = bytes(codes)
        self._quality_names = ", ".join(str(code) for code in codes)

    # --- encoding --------------------------------------------------------------------------------

    def encode(self, payload: PointBatch) -> bytes:
        try:
            return self._frame(payload)
        except (TypeError, ValueError, OverflowError) as err:
            # Columns the frame cannot hold (a timestamp past int64, a value that is no number,
            # columns of different lengths) travel as JSON, as before: receivers judge them as they
            # always did, and a publisher that retries a failed publish is never stuck on one.
            logger.warning("point batch of tenant %s sent as JSON: %s", payload.tenant_id, err)
            return payload.model_dump_json().encode()

    def _frame(self, batch: PointBatch) -> bytes:
        count = len(batch.series_index)
        ts = array("q", batch.ts_ms)
        value = array("d", batch.value)
        index = array("I", batch.series_index)
        quality = bytes(batch.quality)
        if not len(ts) == len(value) == len(quality) == count:
            raise ValueError("series_index, ts_ms, value and quality must have the same length")
        if not _LITTLE:
            for column in (ts, value, index):
                column.byteswap()
        header = orjson.dumps(
            {
                "tenant_id": batch.tenant_id,
                "source": batch.source,
                "count": count,
                "series": batch.series,
                "attributes": batch.attributes,
            }
        )
        header += b" " * (-(_FIXED.size + len(header)) % _ALIGN)
        return b"".join((_FIXED.pack(MAGIC, VERSION, len(header)), header, ts, value, index, quality))

    # --- decoding --------------------------------------------------------------------------------

    def decode(self, data: bytes) -> PointBatch:
        if data[:4] == MAGIC:
            return self._unframe(data)
        if data and data[0] in _JSON_START:
            return self._model.model_validate_json(data)
        raise FrameError(
            f"not a point batch: starts with {data[:4].hex(' ') or 'nothing'}, "
            f"neither the frame's magic {MAGIC.hex(' ')} nor a JSON object"
        )

    def _unframe(self, data: bytes) -> PointBatch:
        import numpy as np  # here, not at the top: importers of telemetry.public need not load it

        from iip.telemetry.public import PointColumns  # public builds this codec: imported once it is loaded

        size = len(data)
        if size < _FIXED.size:
            raise FrameError(f"truncated point batch frame: {size} bytes, its fixed part alone is {_FIXED.size}")
        _, version, header_size = _FIXED.unpack_from(data)
        if version != VERSION:
            raise FrameError(f"point batch frame version {version} is not supported (this build reads {VERSION})")
        body = _FIXED.size + header_size
        if body > size:
            raise FrameError(
                f"truncated point batch frame: a header of {header_size} bytes, {size - _FIXED.size} bytes follow"
            )
        try:
            header = _Header.model_validate_json(data[_FIXED.size : body])
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise FrameError(f"bad point batch frame header: {f'{where}: ' if where else ''}{first['msg']}") from None
        count = header.count
        expected = body + count * _POINT_BYTES
        if size != expected:
            raise FrameError(
                f"point batch frame of {count} points must be {expected} bytes, it is {size}"
                + (" (truncated)" if size < expected else "")
            )
        at = body
        ts = np.frombuffer(data, "<i8", count, at)
        at += 8 * count
        value = np.frombuffer(data, "<f8", count, at)
        at += 8 * count
        index = np.frombuffer(data, "<u4", count, at)
        at += 4 * count
        quality = data[at:]
        series = header.series
        if count:
            if int(index.max()) >= len(series):
                first_bad = int(np.argmax(index >= len(series)))
                raise FrameError(
                    f"series_index[{first_bad}] = {index[first_bad]} is out of range: "
                    f"the frame has {len(series)} series"
                )
            if quality.translate(None, self._quality_codes):  # what is left is no quality code
                first_bad = next(i for i, code in enumerate(quality) if code not in self._quality_codes)
                raise FrameError(
                    f"quality[{first_bad}] = {quality[first_bad]} is not a quality code ({self._quality_names})"
                )
        batch = self._model.model_construct(
            tenant_id=header.tenant_id,
            series=series,
            series_index=index.tolist(),
            ts_ms=ts.tolist(),
            value=value.tolist(),
            quality=list(quality),
            attributes=header.attributes,
            source=header.source,
        )
        # The arrays just read, for consumers that work on arrays (live scoring): no second conversion.
        batch._columns = PointColumns(index, ts, value, np.frombuffer(quality, dtype=np.uint8))
        return batch
