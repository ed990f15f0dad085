"""Learned-allowlist detection on the labelled Modbus attack captures, and its throughput.

Split (as in tests/security/test_detection_dataset.py): one baseline learned from the benign packets
before the first attack packet of each of the five captures; the rest of each capture is the test
part. Per scenario: test packets, attack packets, detected (an alert with an attack frame in its
evidence), alerts, false alerts, benign hours (test part duration), false alerts per hour.

Also printed: ours with broadcasts judged per port, as unicast flows are (`announcements_any_port`
off), to show what that default does on these captures.

Baselines measured in the same run:
- quality: the simplest allowlist, (host pair, service port, transport) tuples seen in training,
  the service port being the lower of the two ports; one alert per new tuple (new talkers only);
- speed: decoding alone (`iter_capture`), against decoding plus `Detector.check`.

    .venv/bin/python bench/security_detection.py [--repeat 3] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.table import Table

from bench.common import Result, report
from iip.security.baseline import Baseline, BaselineLearner
from iip.security.capture import iter_capture
from iip.security.detection import Alert, AlertKind, DetectionSettings, Detector, LabelledScore, score_alerts
from iip.security.protocols.base import IcsMessage, PacketInfo
from iip.security.records import Severity

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "ics" / "modbus-attacks"
SCENARIOS = (
    "CnC_uploading_exe_modbus_6RTU_with_operate",
    "characterization_modbus_6RTU_with_operate",
    "exploit_ms08_netapi_modbus_6RTU_with_operate",
    "moving_two_files_modbus_6RTU",
    "send_a_fake_command_modbus_6RTU_with_operate",
)
Item = tuple[PacketInfo, list[IcsMessage]]


def labels(name: str) -> set[int]:
    text = (DATA / f"{name}_labeled.csv").read_text()
    return {int(f) for f, label in (line.split(";") for line in text.split()) if label.strip() != "0"}


def talker(packet: PacketInfo) -> tuple[str, str, int, str]:
    low, high = sorted((packet.source.host, packet.destination.host))
    return low, high, min(packet.source.port, packet.destination.port), packet.transport.value


def tuple_allowlist(training: list[Item], test: list[Item]) -> list[Alert]:
    """The simplest allowlist: one alert per (host pair, lower port, transport) never seen in training."""
    known = {talker(p) for p, _ in training}
    alerts: dict[tuple[object, ...], Alert] = {}
    for packet, _ in test:
        key = talker(packet)
        if key in known:
            continue
        alert = alerts.get(key)
        if alert is None:
            alert = alerts[key] = Alert(
                AlertKind.NEW_TALKER, Severity.HIGH, key[0], key[1], packet.time, packet.time, ("T0869",)
            )
        alert.count += 1
        if len(alert.frames) < 100:
            alert.frames.append(packet.frame)
    return list(alerts.values())


def evaluate(
    captures: dict[str, tuple[list[Item], set[int]]], settings: DetectionSettings | None = None
) -> tuple[dict[str, LabelledScore], dict[str, LabelledScore], Baseline]:
    learner = BaselineLearner()
    training: list[Item] = []
    for items, attack in captures.values():
        first = min(attack)
        for packet, messages in items:
            if packet.frame < first:
                learner.observe(packet, messages)
                training.append((packet, messages))
        learner.new_segment()
    baseline = learner.baseline()
    ours: dict[str, LabelledScore] = {}
    plain: dict[str, LabelledScore] = {}
    for name, (items, attack) in captures.items():
        test = [(p, m) for p, m in items if p.frame >= min(attack)]
        hours = (test[-1][0].time - test[0][0].time).total_seconds() / 3600
        count = sum(1 for p, _ in test if p.frame in attack)
        detector = Detector(baseline, settings)
        for packet, messages in test:
            detector.check(packet, messages)
        ours[name] = score_alerts(
            detector.finish(), attack, packets=len(test), attack_packets=count, benign_hours=hours
        )
        plain[name] = score_alerts(
            tuple_allowlist(training, test), attack, packets=len(test), attack_packets=count, benign_hours=hours
        )
    return ours, plain, baseline


def print_table(title: str, scores: dict[str, LabelledScore]) -> None:
    table = Table(title=title)
    for column in ("scenario", "packets", "attack", "detected", "alerts", "false", "benign h", "false/h"):
        table.add_column(column)
    for name, s in scores.items():
        table.add_row(
            name,
            str(s.packets),
            str(s.attack_packets),
            "yes" if s.detected else "NO",
            str(s.alerts),
            str(s.false_alerts),
            f"{s.benign_hours:.3f}",
            f"{s.false_per_hour:.1f}",
        )
    false = sum(s.false_alerts for s in scores.values())
    hours = sum(s.benign_hours for s in scores.values())
    detected = sum(s.detected for s in scores.values())
    table.add_row(
        "all",
        "",
        "",
        f"{detected}/5",
        str(sum(s.alerts for s in scores.values())),
        str(false),
        f"{hours:.3f}",
        f"{false / hours:.1f}",
    )
    Console(width=160).print(table)


def throughput(paths: list[Path], baseline: Baseline, repeat: int) -> tuple[float, float, int]:
    """(packets/s decoding only, packets/s decoding + detection, packets), best of `repeat`."""
    packets = sum(1 for path in paths for _ in iter_capture(path))
    decode_best = check_best = 0.0
    for _ in range(repeat):
        started = time.perf_counter()
        for path in paths:
            for _item in iter_capture(path):
                pass
        decode_best = max(decode_best, packets / (time.perf_counter() - started))
        started = time.perf_counter()
        for path in paths:
            detector = Detector(baseline)
            for packet, messages in iter_capture(path):
                detector.check(packet, messages)
            detector.finish()
        check_best = max(check_best, packets / (time.perf_counter() - started))
    return decode_best, check_best, packets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"data set not found at {DATA}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    captures = {name: (list(iter_capture(DATA / f"{name}.pcap")), labels(name)) for name in SCENARIOS}
    ours, plain, baseline = evaluate(captures)
    print_table("learned allowlist (ours)", ours)
    strict, _, _ = evaluate(captures, DetectionSettings(announcements_any_port=False))
    print_table("ours with broadcasts judged per port (announcements_any_port=False)", strict)
    print_table("baseline: (host pair, service port) allowlist", plain)
    decode_rate, check_rate, packets = throughput([DATA / f"{n}.pcap" for n in SCENARIOS], baseline, args.repeat)
    # Detection's own rate: packets per second of the time detection adds to decoding.
    detection_only = 1.0 / (1.0 / check_rate - 1.0 / decode_rate) if check_rate < decode_rate else float("inf")
    print(
        f"{packets} packets; decode {decode_rate:,.0f}/s, decode+detect {check_rate:,.0f}/s, "
        f"detection alone {detection_only:,.0f}/s"
    )
    hours = sum(s.benign_hours for s in ours.values())
    report(
        [
            Result(
                "security_detection",
                "scenarios detected",
                sum(s.detected for s in ours.values()),
                "host-pair/port allowlist",
                sum(s.detected for s in plain.values()),
                "of 5",
            ),
            Result(
                "security_detection",
                "false alerts per benign hour",
                sum(s.false_alerts for s in ours.values()) / hours,
                "host-pair/port allowlist",
                sum(s.false_alerts for s in plain.values()) / hours,
                "/h",
                higher_is_better=False,
            ),
            Result(
                "security_detection",
                "alerts (all scenarios)",
                sum(s.alerts for s in ours.values()),
                "host-pair/port allowlist",
                sum(s.alerts for s in plain.values()),
                "alerts",
                higher_is_better=False,
            ),
            Result("security_detection", "throughput decode+detect", check_rate, "decode only", decode_rate, "pkt/s"),
        ],
        record=not args.no_record,
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
