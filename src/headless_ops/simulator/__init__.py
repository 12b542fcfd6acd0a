"""Simulated devices for the demo, tests and benchmarks: TR-069 CPEs (real CWMP clients over
HTTP) and SSH devices (``simulator.ssh_device``, real asyncssh servers)."""

from __future__ import annotations

from headless_ops.simulator.cpe import CpeConfig, CpeFaults, SimulatedCpe
from headless_ops.simulator.datamodel import CpeFault, DataModel
from headless_ops.simulator.fleet import Fleet

__all__ = ["CpeConfig", "CpeFault", "CpeFaults", "DataModel", "Fleet", "SimulatedCpe"]
