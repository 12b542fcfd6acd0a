"""headless-ops: schedule and run headless operations on device fleets."""

__all__ = ["__version__"]

__version__ = "0.1.0"
