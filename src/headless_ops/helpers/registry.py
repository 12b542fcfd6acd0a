"""Helpers by protocol: registered in code, by entry point, or by ``HEADLESS_OPS_HELPERS``.

Lookup order is fixed: helpers registered explicitly, then those of the
``headless_ops.helpers`` entry-point group, then ``module:attribute`` names from the
configuration. A second helper for the same protocol is refused, never silently shadowed.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from importlib.metadata import entry_points

from headless_ops.helpers.base import Helper

__all__ = ["DuplicateHelper", "HelperRegistry", "load_object"]

ENTRY_POINT_GROUP = "headless_ops.helpers"


class DuplicateHelper(ValueError):
    """A helper for this protocol is already registered."""


def load_object(spec: str) -> object:
    """Import ``module:attribute``; a class or factory is called without arguments."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"helper {spec!r} is not 'module:attribute'")
    return _instantiate(getattr(importlib.import_module(module_name), attr))


def _instantiate(obj: object) -> object:
    """Call a class or factory; keep a helper instance as it is.

    A class is always called: with class-level ``protocol`` and ``supported_operations``
    the class object itself passes ``isinstance(obj, Helper)``, yet its methods are unbound.
    """
    if isinstance(obj, type) or (callable(obj) and not isinstance(obj, Helper)):
        return obj()
    return obj


class HelperRegistry:
    """The helpers of one process, by protocol name."""

    def __init__(self) -> None:
        self._helpers: dict[str, Helper] = {}

    def register(self, helper: Helper) -> None:
        """Add ``helper``; :class:`DuplicateHelper` if its protocol already has one."""
        if not isinstance(helper, Helper):
            raise TypeError(f"{helper!r} does not implement the Helper interface")
        if helper.protocol in self._helpers:
            raise DuplicateHelper(
                f"a helper for protocol {helper.protocol!r} is already registered"
            )
        self._helpers[helper.protocol] = helper

    def unregister(self, protocol: str) -> None:
        """Remove the helper of ``protocol`` (tests, reconfiguration)."""
        self._helpers.pop(protocol, None)

    def get(self, protocol: str) -> Helper | None:
        """The helper for ``protocol``, if any."""
        return self._helpers.get(protocol)

    def __iter__(self) -> Iterator[Helper]:
        return iter(self._helpers.values())

    def load_entry_points(self, *, keep_registered: bool = False) -> list[str]:
        """Register every helper advertised in the ``headless_ops.helpers`` group.

        With ``keep_registered``, a protocol that already has a helper (one named in the
        configuration) keeps it and the entry point's is skipped; otherwise a duplicate is
        refused. Returns the protocols skipped, for the caller to log.
        """
        skipped = []
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            helper = _instantiate(ep.load())
            protocol = getattr(helper, "protocol", None)
            if keep_registered and isinstance(protocol, str) and protocol in self._helpers:
                skipped.append(protocol)
                continue
            self.register(helper)  # type: ignore[arg-type]
        return skipped

    def load_specs(self, specs: str) -> None:
        """Register helpers named ``module:attribute``, comma-separated."""
        for spec in (s.strip() for s in specs.split(",")):
            if spec:
                self.register(load_object(spec))  # type: ignore[arg-type]
