"""The simulated plant (`iip sim`): Modbus pumps and power meters, an OPC UA reactor, a Sparkplug B
packaging line and MQTT sensors with plausible signals, for `make run`, demos, tests and load tests.
"""

from iip.devices.sim.catalog import PROFILES, PlantConfig, plant_document, render_catalog
from iip.devices.sim.plant import PlantPart, SimulatedPlant

__all__ = ["PROFILES", "PlantConfig", "PlantPart", "SimulatedPlant", "plant_document", "render_catalog"]
