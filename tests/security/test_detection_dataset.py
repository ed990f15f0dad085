"""Detection on the labelled Modbus attack captures (Lemay & Fernandez, CSET 2016; five pcaps of one
site: an HMI polling six RTUs, one RTU host compromised; per-packet labels `frame;label`).

Train/test split: the five captures are one site, so one baseline is learned from the benign
packets that come before the first attack packet of each capture (each capture a training segment:
810 + 2 + 4 + 324 + 4781 packets, about 330 s). Everything from the first attack packet on is the
test part (attack and benign packets alike), checked against that baseline with default settings.
An alert is true when its evidence holds an attack frame, false otherwise; benign hours are the
duration of each test part. Nothing of a test part is used for learning or choosing settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from iip.security.baseline import BaselineLearner
from iip.security.capture import iter_capture
from iip.security.detection import LabelledScore, detect, score_alerts
from iip.security.protocols.base import IcsMessage, PacketInfo
from tests.security.conftest import MODBUS_ATTACKS, require_dataset

SCENARIOS = (
    "CnC_uploading_exe_modbus_6RTU_with_operate",
    "characterization_modbus_6RTU_with_operate",
    "exploit_ms08_netapi_modbus_6RTU_with_operate",
    "moving_two_files_modbus_6RTU",
    "send_a_fake_command_modbus_6RTU_with_operate",
)

Item = tuple[PacketInfo, list[IcsMessage]]


@dataclass
class Capture:
    name: str
    items: list[Item]
    attack_frames: set[int]

    @property
    def first_attack(self) -> int:
        return min(self.attack_frames)


def read_labels(path: Path) -> set[int]:
    attack: set[int] = set()
    for line in path.read_text().split():
        frame, label = line.split(";")
        if label.strip() != "0":
            attack.add(int(frame))
    return attack


def load(directory: Path) -> list[Capture]:
    return [
        Capture(
            name,
            list(iter_capture(directory / f"{name}.pcap")),
            read_labels(directory / f"{name}_labeled.csv"),
        )
        for name in SCENARIOS
    ]


@pytest.fixture(scope="module")
def scores() -> dict[str, LabelledScore]:
    captures = load(require_dataset(MODBUS_ATTACKS))
    learner = BaselineLearner()
    for capture in captures:
        for packet, messages in capture.items:
            if packet.frame < capture.first_attack:
                learner.observe(packet, messages)
        learner.new_segment()
    baseline = learner.baseline()
    out: dict[str, LabelledScore] = {}
    for capture in captures:
        test = [(p, m) for p, m in capture.items if p.frame >= capture.first_attack]
        hours = (test[-1][0].time - test[0][0].time).total_seconds() / 3600
        attack_packets = sum(1 for p, _ in test if p.frame in capture.attack_frames)
        alerts = detect(baseline, test)
        out[capture.name] = score_alerts(
            alerts, capture.attack_frames, packets=len(test), attack_packets=attack_packets, benign_hours=hours
        )
    return out


def test_the_labels_match_the_captures(scores: dict[str, LabelledScore]) -> None:
    assert all(score.attack_packets > 0 for score in scores.values())
    assert scores["send_a_fake_command_modbus_6RTU_with_operate"].attack_packets == 10


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_scenario_is_detected(scores: dict[str, LabelledScore], scenario: str) -> None:
    score = scores[scenario]
    assert score.detected, score
    assert score.alerts <= 5, score  # aggregated, not one per packet


def test_false_alerts_at_most_one_per_hour_of_benign_traffic(scores: dict[str, LabelledScore]) -> None:
    false_alerts = sum(s.false_alerts for s in scores.values())
    hours = sum(s.benign_hours for s in scores.values())
    assert hours > 0.2
    assert false_alerts / hours <= 1.0
    assert false_alerts == 0  # what the default settings achieve on these captures
