"""Learning a baseline from built streams, and its plain-JSON form."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iip.security.baseline import Baseline, FlowKey, PairKey, learn_baseline
from iip.security.protocols.base import Transport
from tests.security.streams import HMI, PLC, PLC2, ROGUE, SYN, Stream, plant


def test_learns_flows_pairs_functions_and_ranges() -> None:
    baseline = learn_baseline(plant(60).items)
    assert FlowKey(HMI[0], PLC[0], "tcp", 502) in baseline.flows
    assert FlowKey(HMI[0], PLC2[0], "tcp", 502) in baseline.flows
    assert baseline.flows[FlowKey(HMI[0], PLC[0], "tcp", 502)].protocol == "modbus"
    pair = baseline.pairs[PairKey(HMI[0], PLC[0], "modbus", 502)]
    assert set(pair.functions) == {1, 3, 5, 6}
    assert pair.units == {1}
    assert pair.reads["1/coils"].intervals == [(0, 3)]
    assert pair.reads["1/holding_registers"].intervals == [(0, 9)]
    assert pair.writes["1/coils"].intervals == [(1, 1)]
    assert pair.writes["1/holding_registers"].intervals == [(5, 5)]
    low, high = pair.written_values["1/holding_registers/5"]
    assert 100 <= low < high <= 200
    assert set(baseline.pairs[PairKey(HMI[0], PLC2[0], "modbus", 502)].functions) == {3}


def test_timing_rate_peak_and_interarrival() -> None:
    baseline = learn_baseline(plant(60).items)
    pair = baseline.pairs[PairKey(HMI[0], PLC2[0], "modbus", 502)]
    assert pair.requests == 60
    assert pair.interarrival_mean_s is not None
    assert abs(pair.interarrival_mean_s - 1.0) < 1e-6
    assert pair.peak_requests == 10  # one a second in windows of 10 s
    assert 0.9 < pair.rate_per_s < 1.1
    assert baseline.flows[FlowKey(HMI[0], PLC2[0], "tcp", 502)].peak_packets >= 20


def test_unanswered_syn_is_not_a_flow() -> None:
    stream = plant(5)
    stream.packet(3, ROGUE, (PLC[0], 4444), flags=SYN, payload=0)
    baseline = learn_baseline(stream.items)
    assert FlowKey(ROGUE[0], PLC[0], "tcp", 4444) not in baseline.flows
    assert ROGUE[0] in baseline.hosts  # the sender exists even though nobody answered


def test_udp_and_broadcast_flows_are_learned() -> None:
    stream = plant(5)
    stream.packet(2, ("10.0.0.5", 138), ("10.0.0.255", 138), transport=Transport.UDP)
    stream.packet(3, ("10.0.0.5", 50000), ("10.0.0.53", 53), transport=Transport.UDP)
    baseline = learn_baseline(stream.items)
    assert FlowKey("10.0.0.5", "10.0.0.255", "udp", 138) in baseline.flows
    assert FlowKey("10.0.0.5", "10.0.0.53", "udp", 53) in baseline.flows
    assert "10.0.0.255" not in baseline.hosts


def test_segments_count_their_own_time_only() -> None:
    first = plant(30).items
    second = Stream(start=first[-1][0].time.replace(hour=5))
    plant(20, stream=second)
    baseline = learn_baseline(first, second.items)
    assert 48 < baseline.training_s < 51  # about 30 s + 20 s, not the five hours between
    pair = baseline.pairs[PairKey(HMI[0], PLC2[0], "modbus", 502)]
    assert pair.interarrival_max_s is not None
    assert pair.interarrival_max_s < 2


def test_json_round_trip_is_plain_json() -> None:
    baseline = learn_baseline(plant(30).items)
    text = json.dumps(baseline.to_json())
    again = Baseline.from_json(json.loads(text))
    assert again.to_json() == baseline.to_json()
    assert again.pairs == baseline.pairs
    assert again.flows == baseline.flows


def test_unknown_format_is_refused() -> None:
    data = learn_baseline(plant(3).items).to_json()
    data["format"] = 99
    with pytest.raises(ValueError, match="format"):
        Baseline.from_json(data)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 20),  # function
            st.integers(0, 2000),  # address
            st.integers(1, 50),  # quantity
            st.integers(0, 65535),  # value
            st.integers(0, 3),  # unit
        ),
        max_size=30,
    )
)
def test_json_round_trip_of_any_learned_requests(requests: list[tuple[int, int, int, int, int]]) -> None:
    stream = Stream()
    for i, (function, address, quantity, value, unit) in enumerate(requests):
        stream.modbus(i * 0.5, HMI, PLC, function, address=address, quantity=quantity, values=[value], unit=unit)
    baseline = learn_baseline(stream.items)
    assert Baseline.from_json(json.loads(json.dumps(baseline.to_json()))).to_json() == baseline.to_json()
