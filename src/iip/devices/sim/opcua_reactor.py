"""The simulated reactor as an asyncua server: one object per device, one variable per profile metric.

Variables get the node ids, names and types the profile's mappings give (`ns=2;s=R-101.Temperature`,
Double for float64, String for text, ...); the server registers the plant's namespace first, so it
is index 2 as the profiles say. `update()` writes the model's values with a source timestamp, which
subscribed clients receive as data changes.

Writable variables (the setpoints) hand a client's write to the model as it arrives; a value the
model refuses is answered with BadOutOfRange and the variable keeps the setpoint in force.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from asyncua import ua
from asyncua.server.address_space import NodeData
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds

from iip.devices.profiles import DataType, DeviceProfile
from iip.devices.sim.catalog import OPCUA_NAMESPACE_INDEX, OPCUA_NAMESPACE_URI, OPCUA_PATH
from iip.devices.sim.signals import DeviceModel, SetpointError
from iip.kernel.errors import Invalid, Unavailable

logger = logging.getLogger(__name__)

VARIANT_OF: dict[DataType, ua.VariantType] = {
    DataType.BOOL: ua.VariantType.Boolean,
    DataType.INT16: ua.VariantType.Int16,
    DataType.UINT16: ua.VariantType.UInt16,
    DataType.INT32: ua.VariantType.Int32,
    DataType.UINT32: ua.VariantType.UInt32,
    DataType.INT64: ua.VariantType.Int64,
    DataType.UINT64: ua.VariantType.UInt64,
    DataType.FLOAT32: ua.VariantType.Float,
    DataType.FLOAT64: ua.VariantType.Double,
    DataType.STRING: ua.VariantType.String,
}
INTEGER_TYPES = frozenset(
    {DataType.INT16, DataType.UINT16, DataType.INT32, DataType.UINT32, DataType.INT64, DataType.UINT64}
)


@dataclass(frozen=True, slots=True)
class OpcUaObject:
    """A simulated device as an object of the server."""

    name: str  # browse name of the object, e.g. "R-101"
    key: str
    profile: DeviceProfile
    model: DeviceModel


@dataclass(slots=True)
class _Variable:
    metric: str
    node_id: ua.NodeId
    variant: ua.VariantType
    data_type: DataType
    writable: bool


def _typed(value: Any, data_type: DataType) -> Any:
    if data_type is DataType.BOOL:
        return bool(value)
    if data_type is DataType.STRING:
        return str(value)
    if data_type in INTEGER_TYPES:
        return round(value)
    return float(value)


class SimulatedOpcUaServer:
    """An OPC UA server (no security, anonymous) exposing simulated devices, updated by `update()`."""

    def __init__(self, host: str, port: int, objects: Sequence[OpcUaObject]) -> None:
        self.host = host
        self.port = port
        self.objects = list(objects)
        self._server: Server | None = None
        self._variables: list[tuple[OpcUaObject, list[_Variable]]] = []

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}{OPCUA_PATH}"

    async def start(self) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("IIP simulated plant")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        namespace = await server.register_namespace(OPCUA_NAMESPACE_URI)
        if namespace != OPCUA_NAMESPACE_INDEX:  # the profiles' node ids name the index
            raise Invalid(f"the plant's OPC UA namespace got index {namespace}, not {OPCUA_NAMESPACE_INDEX}")
        for item in self.objects:
            await self._add_object(server, namespace, item)
        try:
            await server.start()
        except OSError as err:
            raise Unavailable(
                f"the OPC UA server cannot listen on {self.host}:{self.port}: {err.strerror or err}",
                code="sim_port_unavailable",
            ) from err
        self._server = server
        await self.update()

    async def _add_object(self, server: Server, namespace: int, item: OpcUaObject) -> None:
        folder = await server.nodes.objects.add_object(
            ua.NodeId(ua.String(item.name), ua.Int16(namespace)), ua.QualifiedName(item.name, namespace)
        )
        variables: list[_Variable] = []
        readings = item.model.readings()
        for metric in item.profile.metrics:
            if metric.opcua is None:
                continue
            node_id = ua.NodeId.from_string(metric.opcua.node_id)
            variant = VARIANT_OF[metric.data_type]
            value = _typed(readings[metric.name], metric.data_type)
            browse_name = metric.opcua.node_id.rsplit(".", 1)[-1]
            node = await folder.add_variable(
                node_id, ua.QualifiedName(browse_name, namespace), ua.Variant(value, variant)
            )
            if metric.writable:
                await node.set_writable()
                server.set_attribute_value_setter(node_id, self._setter(item, metric.name))
            variables.append(_Variable(metric.name, node_id, variant, metric.data_type, metric.writable))
        self._variables.append((item, variables))

    @staticmethod
    def _setter(item: OpcUaObject, metric: str) -> Callable[[NodeData, AttributeIds, ua.DataValue], None]:
        def take(node: NodeData, attribute: AttributeIds, value: ua.DataValue) -> None:
            if value.Value is not None and value.Value.Value is not None:
                try:
                    item.model.apply({metric: value.Value.Value})
                except SetpointError as err:
                    logger.info("%s refused a write: %s", item.key, err)
                    raise ua.uaerrors.BadOutOfRange from err
            node.attributes[attribute].value = value

        return take

    async def update(self) -> None:
        """Show the models' current values (a setpoint only when it differs from what is shown)."""
        server = self._server
        if server is None:
            return
        now = ua.DateTime.now(dt.UTC)
        for item, variables in self._variables:
            readings = item.model.readings()
            for variable in variables:
                value = _typed(readings[variable.metric], variable.data_type)
                if variable.writable:
                    shown = server.read_attribute_value(variable.node_id).Value
                    if shown is not None and shown.Value == value:
                        continue
                data = ua.DataValue(ua.Variant(value, variable.variant), SourceTimestamp=now, ServerTimestamp=now)
                await server.write_attribute_value(variable.node_id, data)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()
