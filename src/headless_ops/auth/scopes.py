"""Scopes a token can carry. ``admin`` implies every other scope."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ALL_SCOPES", "Scope", "parse_scopes"]


class Scope(StrEnum):
    """What a token may do."""

    OPERATIONS_READ = "operations:read"
    OPERATIONS_WRITE = "operations:write"
    DEVICES_READ = "devices:read"
    DEVICES_WRITE = "devices:write"
    ADMIN = "admin"


ALL_SCOPES = frozenset(Scope)


def parse_scopes(values: list[str] | str) -> frozenset[Scope]:
    """Scopes from names (a list or a space/comma-separated string); ValueError on an unknown one."""
    if isinstance(values, str):
        values = values.replace(",", " ").split()
    out = set()
    for value in values:
        try:
            out.add(Scope(value))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise ValueError(f"unknown scope {value!r}; known: {known}") from None
    return frozenset(out)
