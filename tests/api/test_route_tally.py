"""A hot path's tallied requests read exactly as if each had been observed on its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from iip.api.middleware import LATENCY_BUCKETS, HttpMetrics

DURATIONS = [0.0001, 0.004, 0.005, 0.0051, 0.3, 2.5, 11.0, 0.0, 0.025]


def exposition_without_created(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


def test_tallied_requests_read_as_observed_ones() -> None:
    metrics = HttpMetrics()
    tally = metrics.tally("GET", "/hot/{key}", 200)
    assert not tally.direct  # this prometheus_client has the histogram's parts the tally adds to
    expected = CollectorRegistry()
    requests = Counter("iip_http_requests", "HTTP requests handled", ["method", "route", "status"], registry=expected)
    latency = Histogram(
        "iip_http_request_duration_seconds",
        "HTTP request latency",
        ["method", "route"],
        registry=expected,
        buckets=LATENCY_BUCKETS,
    )
    for rounds in range(2):  # the second round adds to what the first scrape flushed
        for seconds in DURATIONS[rounds:]:
            tally.record(seconds)
            requests.labels("GET", "/hot/{key}", "200").inc()
            latency.labels("GET", "/hot/{key}").observe(seconds)
        assert exposition_without_created(metrics.registry) == exposition_without_created(expected)
    assert tally.count == 0  # flushed by the scrape


def test_nothing_recorded_counts_zero() -> None:
    metrics = HttpMetrics()
    metrics.tally("GET", "/hot/{key}", 200)
    text = generate_latest(metrics.registry).decode()
    assert 'iip_http_requests_total{method="GET",route="/hot/{key}",status="200"} 0.0' in text
    assert 'iip_http_request_duration_seconds_count{method="GET",route="/hot/{key}"} 0.0' in text
