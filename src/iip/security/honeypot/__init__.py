"""A decoy PLC speaking Modbus/TCP and S7comm, and the threat intelligence its visitors leave.

`run_honeypot(HoneypotConfig(seed=...), sink)` starts both listeners; every connection and every
request goes to the sink as a `HoneypotSighting`; `build_indicators` (or a live `IndicatorBook`)
turns sightings into one indicator per source address.
"""

from iip.security.honeypot.identity import PlcIdentity, identity_for
from iip.security.honeypot.intel import IndicatorBook, SourceIndicator, build_indicators, notable_actions
from iip.security.honeypot.server import HoneypotConfig, RunningHoneypot, run_honeypot
from iip.security.honeypot.sightings import HoneypotSighting, SightingKind, Sink

__all__ = [
    "HoneypotConfig",
    "HoneypotSighting",
    "IndicatorBook",
    "PlcIdentity",
    "RunningHoneypot",
    "SightingKind",
    "Sink",
    "SourceIndicator",
    "build_indicators",
    "identity_for",
    "notable_actions",
    "run_honeypot",
]
