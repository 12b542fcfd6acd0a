"""Simulated TR-069 CPEs: real CWMP clients over HTTP for the demo, tests and benchmarks."""

from __future__ import annotations

from headless_ops.simulator.cpe import CpeConfig, CpeFaults, SimulatedCpe
from headless_ops.simulator.datamodel import CpeFault, DataModel
from headless_ops.simulator.fleet import Fleet

__all__ = ["CpeConfig", "CpeFault", "CpeFaults", "DataModel", "Fleet", "SimulatedCpe"]
