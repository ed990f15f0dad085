"""Device profiles: what a kind of device measures and how each metric is read over each protocol.

Profiles are data (YAML or JSON), validated by these models; nothing here talks to a device.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,127}$")


class Protocol(StrEnum):
    MODBUS = "modbus"
    OPCUA = "opcua"
    MQTT = "mqtt"  # JSON payloads on iip/{tenant}/{device}/telemetry (or ThingsBoard's topic)
    SPARKPLUG = "sparkplug"
    HTTP = "http"
    SIMULATED = "simulated"


class DataType(StrEnum):
    BOOL = "bool"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"

    @property
    def registers(self) -> int:
        """16-bit Modbus registers one value takes (strings: per mapping `length`)."""
        return REGISTERS[self]


REGISTERS = {
    DataType.BOOL: 1,
    DataType.INT16: 1,
    DataType.UINT16: 1,
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.FLOAT32: 2,
    DataType.INT64: 4,
    DataType.UINT64: 4,
    DataType.FLOAT64: 4,
    DataType.STRING: 0,
}


class WordOrder(StrEnum):
    """Order of the 16-bit registers of a multi-register value (bytes within a register are big-endian)."""

    BIG = "big"  # most significant register first (Modbus convention)
    LITTLE = "little"  # least significant register first ("word swapped")


class ModbusTable(StrEnum):
    HOLDING = "holding"  # function 3 read, 6/16 write
    INPUT = "input"  # function 4
    COIL = "coil"  # function 1 read, 5/15 write
    DISCRETE = "discrete"  # function 2


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModbusMapping(Strict):
    table: ModbusTable = ModbusTable.HOLDING
    address: int = Field(ge=0, le=65535, description="zero-based register or coil address")
    data_type: DataType = DataType.UINT16
    word_order: WordOrder = WordOrder.BIG
    length: int = Field(default=0, ge=0, le=125, description="registers of a string value")
    scale: float = 1.0  # engineering value = raw * scale + offset
    offset: float = 0.0

    @model_validator(mode="after")
    def _fits_table(self) -> ModbusMapping:
        bit_table = self.table in {ModbusTable.COIL, ModbusTable.DISCRETE}
        if bit_table and self.data_type is not DataType.BOOL:
            raise ValueError(f"{self.table} holds single bits: data_type must be bool")
        if self.data_type is DataType.STRING and not self.length:
            raise ValueError("a string mapping needs `length` (registers)")
        if self.address + max(self.register_count, 1) - 1 > 65535:
            raise ValueError("the value runs past register 65535")
        return self

    @property
    def register_count(self) -> int:
        return self.length if self.data_type is DataType.STRING else self.data_type.registers


class OpcUaMapping(Strict):
    node_id: str = Field(min_length=3, description='e.g. "ns=2;s=Reactor.Temperature" or "ns=2;i=1001"')


class MqttMapping(Strict):
    key: str = Field(min_length=1, description="key in the JSON `values` object")


class SparkplugMapping(Strict):
    metric: str = Field(min_length=1, description="Sparkplug metric name, e.g. 'Line/Speed'")


class MetricSpec(Strict):
    name: str
    unit: str = ""
    data_type: DataType = DataType.FLOAT64
    description: str = ""
    writable: bool = False  # commands may set it
    modbus: ModbusMapping | None = None
    opcua: OpcUaMapping | None = None
    mqtt: MqttMapping | None = None
    sparkplug: SparkplugMapping | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("metric names start with a letter and use letters, digits, '_', '.', '-' (max 128)")
        return value


class DeviceProfile(Strict):
    name: str
    description: str = ""
    protocol: Protocol
    poll_interval_s: float = Field(default=1.0, gt=0, le=86_400, description="polling period (Modbus)")
    metrics: list[MetricSpec] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("profile names start with a letter and use letters, digits, '_', '.', '-' (max 128)")
        return value

    @model_validator(mode="after")
    def _metrics(self) -> DeviceProfile:
        seen: set[str] = set()
        for metric in self.metrics:
            if metric.name in seen:
                raise ValueError(f"metric {metric.name!r} appears twice")
            seen.add(metric.name)
            if self.protocol is Protocol.MODBUS and metric.modbus is None:
                raise ValueError(f"metric {metric.name!r}: a modbus profile needs a `modbus` mapping per metric")
            if self.protocol is Protocol.OPCUA and metric.opcua is None:
                raise ValueError(f"metric {metric.name!r}: an opcua profile needs an `opcua` mapping per metric")
        return self

    def metric(self, name: str) -> MetricSpec | None:
        return next((m for m in self.metrics if m.name == name), None)
