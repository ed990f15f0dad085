"""Bounded per-flow state for long-running monitoring: the decoder's TCP reassembly and the detector's
conversations, rates and scan windows stay within their limits under many distinct flows, forget
idle flows, count what they forget, and still decode and detect on the flows that are active."""

from __future__ import annotations

import datetime as dt

import dpkt

from iip.kernel.settings import SecuritySettings
from iip.security.baseline import BaselineLearner
from iip.security.capture import DecoderLimits, PacketDecoder
from iip.security.detection import AlertKind, DetectionSettings, Detector
from iip.security.monitor import monitor_limits
from iip.security.protocols.base import Endpoint, IcsMessage, PacketInfo, Transport

T0 = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)
HMI, PLC = "10.1.0.2", "10.1.0.10"


def frame(src: str, sport: int, dst: str, dport: int, seq: int, payload: bytes = b"", flags: int = 0x18) -> bytes:
    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, flags=flags, data=payload)
    ip = dpkt.ip.IP(src=bytes(map(int, src.split("."))), dst=bytes(map(int, dst.split("."))), p=6, data=tcp)
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=0x0800, data=ip))


def read_request(transaction: int, address: int) -> bytes:
    return transaction.to_bytes(2, "big") + bytes.fromhex("0000000601 03") + address.to_bytes(2, "big") + b"\x00\x02"


def test_decoder_follows_at_most_max_flows_and_keeps_the_active_one() -> None:
    decoder = PacketDecoder(DecoderLimits(max_flows=100))
    records: list[IcsMessage] = []
    number, seq = 0, 1
    for n in range(5000):
        number += 1
        source = f"10.9.{n // 250}.{n % 250 + 1}"
        decoded = decoder.packet(number, T0 + dt.timedelta(milliseconds=n), 1,
                                 frame(source, 40000, PLC, 502, 1, read_request(1, 1)))  # fmt: skip
        assert decoded is not None
        if n % 10 == 0:  # the HMI keeps polling on its own connection all along
            number += 1
            request = read_request(n, 100)
            decoded = decoder.packet(number, T0 + dt.timedelta(milliseconds=n), 1,
                                     frame(HMI, 50000, PLC, 502, seq, request))  # fmt: skip
            assert decoded is not None
            records += [m for m in decoded[1] if m.source.host == HMI]
            seq += len(request)
        assert decoder.flows <= 100
    assert decoder.stats.evicted["over limit"] == 5000 + 1 - 100
    assert [m.transaction for m in records] == [n % 65536 for n in range(0, 5000, 10)]
    assert all(m.address == 100 and not m.malformed for m in records)


def test_decoder_forgets_idle_flows_and_hands_over_what_they_held() -> None:
    decoder = PacketDecoder(DecoderLimits(flow_idle_s=60))
    half = read_request(9, 40)[:7]  # a request cut short: still waiting for the rest
    decoder.packet(1, T0, 1, frame("10.2.0.1", 41000, PLC, 502, 1, half))
    for n in range(2, 1100):  # traffic on another flow, two minutes on
        decoded = decoder.packet(n, T0 + dt.timedelta(seconds=120), 1,
                                 frame(HMI, 50000, PLC, 502, 1 + 12 * (n - 2), read_request(n, 100)))  # fmt: skip
        assert decoded is not None
        leftovers = [m for m in decoded[1] if m.source.host == "10.2.0.1"]
        if leftovers:
            break
    assert decoder.stats.evicted == {"idle": 1}
    assert decoder.flows == 1
    assert [m.malformed for m in leftovers] == ["stream ended inside a frame"]


def packet(number: int, when: dt.datetime, src: str, sport: int, dst: str, dport: int, flags: int = 0x18,
           payload: int = 12) -> PacketInfo:  # fmt: skip
    return PacketInfo(number, when, Endpoint(src, sport), Endpoint(dst, dport), Transport.TCP, 60 + payload, flags,
                      payload)  # fmt: skip


def learned_baseline() -> tuple[BaselineLearner, int]:
    learner = BaselineLearner(rate_window_s=10)
    number = 0
    for second in range(120):
        for _ in range(5):  # five polls a second, each answered
            when = T0 + dt.timedelta(seconds=second)
            learner.observe(packet(number + 1, when, HMI, 50000, PLC, 502), [])
            learner.observe(packet(number + 2, when, PLC, 502, HMI, 50000), [])
            number += 2
    return learner, number


def test_detector_state_stays_bounded_and_active_flows_are_still_checked() -> None:
    learner, number = learned_baseline()
    settings = DetectionSettings(max_flows=200, flow_idle_s=60, scan_hosts=1000, scan_ports=1000)
    detector = Detector(learner.baseline(), settings)
    start = T0 + dt.timedelta(hours=1)
    for n in range(20_000):  # twenty thousand sources, each opening one connection
        number += 1
        when = start + dt.timedelta(milliseconds=n)
        source = f"172.16.{n // 250}.{n % 250 + 1}"
        detector.check(packet(number, when, source, 30000 + n % 1000, f"10.1.{n % 50}.99", 8000 + n % 7, 0x02, 0))
        if n % 50 == 0:  # the learned pair, polling all along
            number += 1
            detector.check(packet(number, when, HMI, 50000, PLC, 502))
        tracked = detector.tracked
        assert max(tracked["conversations"], tracked["scan windows"], tracked["rate counters"]) <= 200
        assert tracked["pending handshakes"] <= 200
    assert detector.evictions["conversations over limit"] >= 19_000
    assert detector.evictions["scan windows over limit"] > 0
    # The learned flow is still followed: a flood on it (15 times its learned peak) is seen.
    flood_at = start + dt.timedelta(seconds=30)
    for n in range(1500):
        number += 1
        detector.check(packet(number, flood_at + dt.timedelta(milliseconds=n), HMI, 50000, PLC, 502))
    kinds = {alert.kind for alert in detector.finish() if alert.source == HMI}
    assert AlertKind.FLOOD in kinds
    assert AlertKind.NEW_SERVICE not in kinds
    assert AlertKind.NEW_TALKER not in kinds


def test_detector_forgets_idle_conversations() -> None:
    learner, number = learned_baseline()
    detector = Detector(learner.baseline(), DetectionSettings(flow_idle_s=60))
    start = T0 + dt.timedelta(hours=1)
    for n in range(300):
        number += 1
        detector.check(packet(number, start, f"172.17.{n // 250}.{n % 250 + 1}", 31000, PLC, 502))
    assert detector.tracked["conversations"] == 300
    number += 1
    detector.check(packet(number, start + dt.timedelta(minutes=5), HMI, 50000, PLC, 502))
    assert detector.tracked["conversations"] == 1
    assert detector.evictions["conversations idle"] == 300
    assert detector.tracked["scan windows"] == 0  # their windows had passed too


def test_settings_give_the_monitor_its_limits() -> None:
    settings = SecuritySettings(monitor_flow_idle_s=90, monitor_max_flows=500, monitor_fragment_timeout_s=10,
                                monitor_fragment_max_datagrams=64, monitor_fragment_max_bytes=100_000)  # fmt: skip
    decoder, detection = monitor_limits(settings)
    assert (decoder.flow_idle_s, decoder.max_flows) == (90, 500)
    assert (decoder.fragments.timeout_s, decoder.fragments.max_datagrams, decoder.fragments.max_bytes) == (
        10, 64, 100_000)  # fmt: skip
    assert (detection.flow_idle_s, detection.max_flows) == (90, 500)
    defaults = monitor_limits(SecuritySettings())[0]
    assert defaults == DecoderLimits()  # the settings' defaults are the decoder's own
