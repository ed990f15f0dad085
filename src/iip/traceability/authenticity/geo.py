"""Where a code was scanned against where it was meant to be sold and where it was scanned before.

Pure functions. A market is an ISO 3166-1 alpha-2 country (`CN`) or an ISO 3166-2 subdivision
(`CN-GD`), optionally with a point (latitude, longitude) the distance check measures from. A scan
place is what the client said: a country or subdivision, a point, or both.

- outside the market: the scan names a country (or subdivision) no market covers. A market `CN`
  covers `CN` and `CN-GD`; a market `CN-GD` covers `CN-GD`, and `CN` too (the scan does not say
  which province, so it is not held against the code).
- far from the market: the scan has a point, some markets have points, and the nearest of them is
  more than `far_km` away.
- impossible travel: two consecutive located scans of one code are further apart than the fastest
  travel allows (`max_speed_kmh`); distances within `travel_tolerance_km` are never judged, as
  positions from phones and networks are that rough.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

EARTH_RADIUS_KM = 6371.0088  # mean radius (IUGG)
PLACE_CODE = re.compile(r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$")


class PlaceError(ValueError):
    """A market or place that cannot be used; the message says why."""


# CLDR territories that are no country: groupings, pseudo-locales, "unknown region".
NOT_COUNTRIES = frozenset({"EU", "EZ", "UN", "QO", "XA", "XB", "ZZ"})


@cache
def known_countries() -> frozenset[str]:
    """ISO 3166-1 alpha-2 codes as CLDR lists territories (with a few reserved ones in use, such as XK)."""
    from babel import Locale

    codes = (code for code in map(str, Locale("en").territories) if len(code) == 2 and code.isalpha())
    return frozenset(code for code in codes if code not in NOT_COUNTRIES)


def place_code(value: str) -> str:
    """A country or subdivision code, upper case; PlaceError if it is neither."""
    code = value.strip().upper()
    if not PLACE_CODE.match(code) or code[:2] not in known_countries():
        raise PlaceError(f"{value[:20]!r} is not an ISO 3166 country (CN) or subdivision (CN-GD) code")
    return code


def check_point(latitude: float | None, longitude: float | None) -> tuple[float, float] | None:
    if latitude is None and longitude is None:
        return None
    if latitude is None or longitude is None:
        raise PlaceError("give latitude and longitude together")
    if not (math.isfinite(latitude) and math.isfinite(longitude)):
        raise PlaceError("latitude and longitude must be numbers")
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        raise PlaceError("latitude is within ±90 and longitude within ±180")
    return latitude, longitude


@dataclass(frozen=True, slots=True)
class Market:
    code: str  # CN or CN-GD
    point: tuple[float, float] | None = None

    @classmethod
    def of(cls, code: str, latitude: float | None = None, longitude: float | None = None) -> Market:
        return cls(place_code(code), check_point(latitude, longitude))

    def covers(self, place: str) -> bool:
        if self.code[:2] != place[:2]:
            return False
        return len(self.code) == 2 or len(place) == 2 or self.code == place

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"code": self.code}
        if self.point is not None:
            found["latitude"], found["longitude"] = self.point
        return found

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Market:
        return cls.of(str(data["code"]), data.get("latitude"), data.get("longitude"))


@dataclass(frozen=True, slots=True)
class Place:
    """Where a scan happened, as the client told it."""

    code: str | None = None
    point: tuple[float, float] | None = None

    @property
    def known(self) -> bool:
        return self.code is not None or self.point is not None


def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance between two (latitude, longitude) points in km."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True, slots=True)
class Finding:
    """Something wrong about where a code was scanned: an alert kind, a sentence, and the figures."""

    kind: str
    message: str
    details: dict[str, Any]


OUTSIDE_MARKET = "outside_market"
FAR_FROM_MARKET = "far_from_market"
IMPOSSIBLE_TRAVEL = "impossible_travel"


def market_findings(markets: Sequence[Market], place: Place, *, far_km: float) -> list[Finding]:
    """Whether a scan is outside the intended market or too far from its points (nothing without markets)."""
    if not markets:
        return []
    found: list[Finding] = []
    if place.code is not None and not any(m.covers(place.code) for m in markets):
        names = ", ".join(m.code for m in markets)
        found.append(
            Finding(
                OUTSIDE_MARKET,
                f"scanned in {place.code}, outside the intended market ({names})",
                {"place": place.code, "markets": [m.code for m in markets]},
            )
        )
    points = [m for m in markets if m.point is not None]
    if place.point is not None and points:
        nearest = min(points, key=lambda m: haversine_km(place.point, m.point))  # type: ignore[arg-type]
        distance = haversine_km(place.point, nearest.point)  # type: ignore[arg-type]
        if distance > far_km:
            found.append(
                Finding(
                    FAR_FROM_MARKET,
                    f"scanned {distance:.0f} km from the nearest market point ({nearest.code}), "
                    f"more than {far_km:g} km",
                    {"distance_km": round(distance, 1), "market": nearest.code, "limit_km": far_km},
                )
            )
    return found


def travel_finding(
    previous: tuple[tuple[float, float], dt.datetime] | None,
    current: tuple[tuple[float, float], dt.datetime],
    *,
    max_speed_kmh: float,
    tolerance_km: float,
) -> Finding | None:
    """Whether getting from the previous located scan to this one needed more than `max_speed_kmh`."""
    if previous is None:
        return None
    (before, then), (now_point, now) = previous, current
    distance = haversine_km(before, now_point)
    if distance <= tolerance_km:
        return None
    hours = abs((now - then).total_seconds()) / 3600
    speed = math.inf if hours == 0 else distance / hours
    if speed <= max_speed_kmh:
        return None
    shown = "instantly" if math.isinf(speed) else f"at {speed:.0f} km/h"
    return Finding(
        IMPOSSIBLE_TRAVEL,
        f"scanned {distance:.0f} km from its previous scan {hours * 60:.0f} min earlier: travelling {shown}, "
        f"above {max_speed_kmh:g} km/h",
        {
            "distance_km": round(distance, 1),
            "hours": round(hours, 4),
            "speed_kmh": None if math.isinf(speed) else round(speed, 1),
            "limit_kmh": max_speed_kmh,
        },
    )
