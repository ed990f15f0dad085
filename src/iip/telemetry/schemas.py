"""Wire models of the telemetry queries (times are Unix epoch milliseconds, UTC)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class SeriesOut(BaseModel):
    device: str = Field(examples=["press-7"])
    metric: str = Field(examples=["temperature"])


class PointOut(BaseModel):
    ts_ms: int = Field(examples=[1767225600000])
    value: float = Field(examples=[81.25])
    quality: int = Field(examples=[0], description="0 good, 1 uncertain, 2 bad")


class SeriesPointsOut(SeriesOut):
    points: list[PointOut]


class PointsOut(BaseModel):
    start_ms: int
    end_ms: int
    limit: int
    truncated: bool = Field(description="the limit was reached: there may be more points in the range")
    series: list[SeriesPointsOut]


class BucketOut(BaseModel):
    """One bucket's aggregates; those not asked for are null. Buckets without points are left out."""

    start_ms: int
    count: int | None = None
    avg: float | None = None
    min: float | None = None
    max: float | None = None
    sum: float | None = None
    first: float | None = None
    last: float | None = None


class SeriesBucketsOut(SeriesOut):
    buckets: list[BucketOut]


class BucketsOut(BaseModel):
    start_ms: int
    end_ms: int
    bucket_ms: int
    functions: list[str]
    series: list[SeriesBucketsOut]


class LatestOut(SeriesOut):
    ts_ms: int
    value: float
    quality: int


class RetentionOut(BaseModel):
    tenant_id: str
    days: int = Field(description="raw points older than this many days are deleted")
    default_days: int = Field(description="the platform's default, used unless the tenant has its own")
    own: bool = Field(description="whether the tenant has its own retention")


class RetentionIn(BaseModel):
    days: int = Field(ge=1, le=36_500, examples=[90])
