"""The parameter tree of a simulated CPE, loaded from a CSV file, with TR-069 RPC semantics.

The CSV format is genieacs-sim's: columns ``Parameter, Object, Writable, Value, Value type``;
object rows name the object without the trailing dot; ``DeviceID.*`` rows give the Inform's
DeviceId. Rows whose path contains ``{i}`` are *templates*: they are not part of the live
tree, they give the shape (and default values) of the instances AddObject creates in the
table before the last ``{i}``.

At fleet scale (1,000 CPEs in one process) the parsed file is shared: every CPE's model
starts as a view of one immutable schema and copies the node list only when its structure
changes (AddObject/DeleteObject). Changed values live in a small per-CPE dict.
"""

from __future__ import annotations

import base64
import binascii
import csv
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from headless_ops.cwmp.soap import ParameterInfo, ParameterValue, SetParameterValuesFault

__all__ = ["DATA_DIR", "SHIPPED_MODELS", "CpeFault", "DataModel", "fault_text"]

#: Where the shipped data models live.
DATA_DIR = Path(__file__).parent / "data"
#: Short names accepted by :meth:`DataModel.load`.
SHIPPED_MODELS: dict[str, Path] = {
    "tr098": DATA_DIR / "tr098-huawei-bm632w.csv",
    "tr181": DATA_DIR / "tr181-generic.csv",
}

_FAULT_TEXT: dict[int, str] = {
    9000: "Method not supported",
    9001: "Request denied",
    9002: "Internal error",
    9003: "Invalid arguments",
    9004: "Resources exceeded",
    9005: "Invalid parameter name",
    9006: "Invalid parameter type",
    9007: "Invalid parameter value",
    9008: "Attempt to set a non-writable parameter",
    9009: "Notification request rejected",
    9010: "File transfer failure",
    9011: "Upload failure",
    9012: "File transfer server authentication failure",
    9013: "Unsupported protocol for file transfer",
    9015: "File transfer failure: unable to contact file server",
    9016: "File transfer failure: unable to access file",
    9017: "File transfer failure: unable to complete download",
    9018: "File transfer failure: file corrupted",
}

_TYPE_DEFAULTS: dict[str, str] = {
    "xsd:int": "0",
    "xsd:unsignedInt": "0",
    "xsd:long": "0",
    "xsd:unsignedLong": "0",
    "xsd:boolean": "false",
    "xsd:dateTime": "0001-01-01T00:00:00Z",
}

_INT_RANGES: dict[str, tuple[int, int]] = {
    "xsd:int": (-(2**31), 2**31 - 1),
    "xsd:unsignedInt": (0, 2**32 - 1),
    "xsd:long": (-(2**63), 2**63 - 1),
    "xsd:unsignedLong": (0, 2**64 - 1),
}

_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?")
_INTEGER = re.compile(r"[+-]?\d+")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})*")
_NUMERIC_SEGMENT = re.compile(r"(?<=\.)\d+(?=\.)")


def fault_text(code: int) -> str:
    """The standard text of a CPE fault code (``"Fault <code>"`` for codes without one)."""
    return _FAULT_TEXT.get(code, f"Fault {code}")


class CpeFault(Exception):
    """A CWMP fault the CPE answers an RPC with (9000-9899).

    ``parameter_faults`` is only filled for SetParameterValues (top-level code 9003).
    """

    def __init__(
        self,
        code: int,
        string: str = "",
        parameter_faults: list[SetParameterValuesFault] | None = None,
    ) -> None:
        self.code = code
        self.string = string or fault_text(code)
        self.parameter_faults: list[SetParameterValuesFault] = list(parameter_faults or [])
        super().__init__(f"{code} {self.string}")


@dataclass(frozen=True, slots=True)
class _Node:
    """One parameter or object. Objects' names end with "."; ``default`` is the file's value."""

    name: str
    is_object: bool
    writable: bool
    type: str
    default: str


@dataclass(frozen=True)
class _Schema:
    """A parsed CSV file, shared (read-only) by every DataModel loaded from it."""

    source: Path
    root: str
    nodes: tuple[_Node, ...]
    index: dict[str, _Node]
    #: generic table path ("Device.NAT.PortMapping.", numeric segments as "{i}") -> the
    #: nodes of one instance, named relative to "<table><n>." ("Enable", "Stats.", …).
    templates: dict[str, tuple[_Node, ...]]
    device_id: dict[str, str] = field(default_factory=dict)


def _generic(path: str) -> str:
    """Instance numbers replaced by ``{i}``: the key of a table's template."""
    return _NUMERIC_SEGMENT.sub("{i}", path)


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("true", "1")


@lru_cache(maxsize=32)
def _load_schema(path: str) -> _Schema:
    source = Path(path)
    nodes: list[_Node] = []
    index: dict[str, _Node] = {}
    templates: dict[str, list[_Node]] = {}
    device_id: dict[str, str] = {}
    root = ""
    with source.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            raw = (row.get("Parameter") or "").strip()
            if not raw:
                continue
            is_object = _truthy(row.get("Object") or "")
            writable = _truthy(row.get("Writable") or "")
            value = row.get("Value") or ""
            vtype = (row.get("Value type") or "").strip()
            if raw.startswith("DeviceID."):
                device_id[raw.removeprefix("DeviceID.")] = value
                continue
            name = raw + "." if is_object and not raw.endswith(".") else raw
            if is_object:
                vtype, value = "", ""
            elif not vtype:
                vtype = "xsd:string"
            node = _Node(name, is_object, writable, vtype, value)
            if "{i}" in name:
                # A template row: it belongs to the table before its last "{i}".
                table, _, relative = name.rpartition("{i}.")
                if relative and table:
                    templates.setdefault(_generic(table), []).append(
                        _Node(relative, is_object, writable, vtype, value)
                    )
                continue
            if not root:
                root = name.split(".", 1)[0] + "."
            if name in index:
                continue  # a repeated row: the first one wins
            # Files that skip intermediate object rows still get a walkable tree.
            parts = name.rstrip(".").split(".")
            for depth in range(1, len(parts)):
                ancestor = ".".join(parts[:depth]) + "."
                if ancestor not in index:
                    anc = _Node(ancestor, True, False, "", "")
                    nodes.append(anc)
                    index[ancestor] = anc
            nodes.append(node)
            index[name] = node
    if not root:
        raise ValueError(f"{source}: no parameters below a root object")
    return _Schema(
        source=source,
        root=root,
        nodes=tuple(nodes),
        index=index,
        templates={k: tuple(v) for k, v in templates.items()},
        device_id=device_id,
    )


def _canonical(vtype: str, text: str) -> str | None:
    """``text`` as stored for ``vtype``, or None when it does not parse as that type."""
    if vtype in _INT_RANGES:
        stripped = text.strip()
        if not _INTEGER.fullmatch(stripped):
            return None
        low, high = _INT_RANGES[vtype]
        number = int(stripped)
        return str(number) if low <= number <= high else None
    if vtype == "xsd:boolean":
        lowered = text.strip().lower()
        if lowered in ("true", "1"):
            return "true"
        if lowered in ("false", "0"):
            return "false"
        return None
    if vtype == "xsd:dateTime":
        stripped = text.strip()
        if not _DATETIME.fullmatch(stripped):
            return None
        try:
            datetime.fromisoformat(stripped)
        except ValueError:
            return None
        return stripped
    if vtype == "xsd:base64Binary":
        try:
            base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return None
        return text
    if vtype == "xsd:hexBinary":
        return text if _HEX.fullmatch(text) else None
    return text  # xsd:string and anything a file may name beyond the standard types


class DataModel:
    """A CPE's parameter tree; the methods raise :class:`CpeFault` the way a CPE faults."""

    def __init__(self, schema: _Schema) -> None:
        self._schema = schema
        #: "InternetGatewayDevice." or "Device.".
        self.root: str = schema.root
        #: The file's DeviceID rows (Manufacturer, OUI, ProductClass, SerialNumber).
        self.device_id: dict[str, str] = dict(schema.device_id)
        # Shared with the schema until the first AddObject/DeleteObject (copy on write).
        self._nodes: tuple[_Node, ...] | list[_Node] = schema.nodes
        self._index: dict[str, _Node] = schema.index
        self._own = False
        self._values: dict[str, str] = {}
        self._last_instance: dict[str, int] = {}

    @classmethod
    def load(cls, name_or_path: str) -> DataModel:
        """A fresh model from a shipped file ("tr098", "tr181") or a CSV path."""
        path = SHIPPED_MODELS.get(name_or_path, Path(name_or_path))
        return cls(_load_schema(str(path.resolve())))

    @property
    def source(self) -> Path:
        """The CSV file this model was loaded from."""
        return self._schema.source

    # ---- reading ----

    def value(self, name: str) -> str | None:
        """The value of parameter ``name``; None when there is no such parameter."""
        node = self._index.get(name)
        if node is None or node.is_object:
            return None
        return self._values.get(name, node.default)

    def type_of(self, name: str) -> str | None:
        """The ``xsd:`` type of parameter ``name``; None when there is no such parameter."""
        node = self._index.get(name)
        return None if node is None or node.is_object else node.type

    def exists(self, name: str) -> bool:
        """Whether ``name`` is a parameter or (ending with ".") an object of the tree."""
        return name in self._index

    def get(self, names: list[str]) -> list[ParameterValue]:
        """GetParameterValues: partial paths (ending ".", or "" for all) expand to every
        parameter below them, in model order. One unknown name faults the whole call (9005)."""
        out: list[ParameterValue] = []
        for name in names:
            if name == "" or name.endswith("."):
                if name:
                    node = self._index.get(name)
                    if node is None or not node.is_object:
                        raise CpeFault(9005, f"Invalid parameter name: {name}")
                out.extend(
                    self._pv(n) for n in self._nodes if not n.is_object and n.name.startswith(name)
                )
            else:
                node = self._index.get(name)
                if node is None or node.is_object:
                    raise CpeFault(9005, f"Invalid parameter name: {name}")
                out.append(self._pv(node))
        return out

    def names(self, path: str, next_level: bool) -> list[ParameterInfo]:
        """GetParameterNames. ``next_level`` false: ``path`` itself and everything below it;
        true: only its direct children ("" with true gives the root object)."""
        if path == "":
            if next_level:
                root = self._index[self.root]
                return [ParameterInfo(root.name, root.writable)]
            return [ParameterInfo(n.name, n.writable) for n in self._nodes]
        node = self._index.get(path)
        if node is None or node.is_object != path.endswith("."):
            raise CpeFault(9005, f"Invalid parameter name: {path}")
        if not node.is_object:
            if next_level:
                raise CpeFault(9003, f"NextLevel true on parameter {path}")
            return [ParameterInfo(node.name, node.writable)]
        if not next_level:
            return [
                ParameterInfo(n.name, n.writable) for n in self._nodes if n.name.startswith(path)
            ]
        depth = path.count(".")
        return [
            ParameterInfo(n.name, n.writable)
            for n in self._nodes
            if n.name.startswith(path)
            and n.name != path
            and n.name.count(".") - (1 if n.is_object else 0) == depth
        ]

    def parameter_values(self) -> list[ParameterValue]:
        """Every parameter of the tree, in model order (for an Upload or a dump)."""
        return [self._pv(n) for n in self._nodes if not n.is_object]

    # ---- writing ----

    def set(self, values: list[ParameterValue]) -> None:
        """SetParameterValues, atomically: every value is checked before any is applied.

        Raises CpeFault(9003) listing per-parameter faults: 9005 unknown name, 9008 not
        writable, 9006 type differs from the model's, 9007 value does not parse, 9003 a name
        given twice.
        """
        faults: list[SetParameterValuesFault] = []
        seen: set[str] = set()
        staged: list[tuple[str, str]] = []
        for pv in values:
            if pv.name in seen:
                faults.append(
                    SetParameterValuesFault(pv.name, 9003, "Parameter named more than once")
                )
                continue
            seen.add(pv.name)
            node = self._index.get(pv.name)
            if node is None or node.is_object:
                faults.append(SetParameterValuesFault(pv.name, 9005, fault_text(9005)))
            elif not node.writable:
                faults.append(SetParameterValuesFault(pv.name, 9008, fault_text(9008)))
            elif pv.type != node.type:
                faults.append(
                    SetParameterValuesFault(
                        pv.name, 9006, f"{fault_text(9006)}: expected {node.type}"
                    )
                )
            else:
                canonical = _canonical(node.type, pv.value)
                if canonical is None:
                    faults.append(SetParameterValuesFault(pv.name, 9007, fault_text(9007)))
                else:
                    staged.append((pv.name, canonical))
        if faults:
            raise CpeFault(9003, fault_text(9003), faults)
        for name, value in staged:
            self._values[name] = value

    def set_value(self, name: str, value: str) -> None:
        """Write a parameter without any check (the CPE's own bookkeeping); KeyError when
        the parameter does not exist."""
        node = self._index.get(name)
        if node is None or node.is_object:
            raise KeyError(name)
        self._values[name] = value

    def add_object(self, table: str) -> int:
        """AddObject: a new instance of ``table`` ("….PortMapping."); returns its number.

        Its children come from the file's template rows for the table (with the template's
        values) when there are some, else from the table's first instance (values reset to
        their type's default, nested instances left out). Only writable tables accept AddObject; anything
        else faults 9005.
        """
        node = self._index.get(table)
        if node is None or not node.is_object or not table.endswith("."):
            raise CpeFault(9005, f"Invalid object name: {table}")
        instances = self._instances(table)
        template = self._schema.templates.get(_generic(table))
        if not node.writable:
            kind = "a read-only table" if instances or template else "not a table"
            raise CpeFault(9005, f"{table} is {kind}")
        number = max([*instances, self._last_instance.get(table, 0)]) + 1
        self._last_instance[table] = number
        prefix = f"{table}{number}."
        new = [_Node(prefix, True, True, "", "")]
        if template:
            new.extend(
                _Node(prefix + t.name, t.is_object, t.writable, t.type, t.default) for t in template
            )
        elif instances:
            source = f"{table}{min(instances)}."
            for n in self._nodes:
                if n.name.startswith(source) and n.name != source:
                    relative = n.name[len(source) :]
                    if any(part.isdigit() for part in relative.split(".")):
                        continue  # instances of nested tables: the new instance starts empty
                    default = "" if n.is_object else _TYPE_DEFAULTS.get(n.type, "")
                    new.append(_Node(prefix + relative, n.is_object, n.writable, n.type, default))
        self._make_own()
        assert isinstance(self._nodes, list)
        position = max(i for i, n in enumerate(self._nodes) if n.name.startswith(table)) + 1
        self._nodes[position:position] = new
        for n in new:
            self._index[n.name] = n
        self._update_count(table)
        return number

    def delete_object(self, instance: str) -> None:
        """DeleteObject of "…<table>.<n>."; unknown, not an instance or not deletable: 9005."""
        node = self._index.get(instance)
        last = instance.rstrip(".").rpartition(".")[2]
        if node is None or not node.is_object or not last.isdigit():
            raise CpeFault(9005, f"Invalid object name: {instance}")
        if not node.writable:
            raise CpeFault(9005, f"{instance} cannot be deleted")
        self._make_own()
        self._nodes = [n for n in self._nodes if not n.name.startswith(instance)]
        for name in [k for k in self._index if k.startswith(instance)]:
            del self._index[name]
        for name in [k for k in self._values if k.startswith(instance)]:
            del self._values[name]
        table = instance[: -len(last) - 1]
        # Instance numbers are not handed out again (as on real CPEs).
        self._last_instance[table] = max(self._last_instance.get(table, 0), int(last))
        self._update_count(table)

    # ---- internals ----

    def _pv(self, node: _Node) -> ParameterValue:
        return ParameterValue(node.name, self._values.get(node.name, node.default), node.type)

    def _instances(self, table: str) -> list[int]:
        depth = table.count(".") + 1
        return [
            int(n.name[len(table) : -1])
            for n in self._nodes
            if n.is_object
            and n.name.startswith(table)
            and n.name.count(".") == depth
            and n.name[len(table) : -1].isdigit()
        ]

    def _update_count(self, table: str) -> None:
        # TR-069 tables have a "<Table>NumberOfEntries" sibling; keep it true.
        counter = table.rstrip(".") + "NumberOfEntries"
        if counter in self._index:
            self._values[counter] = str(len(self._instances(table)))

    def _make_own(self) -> None:
        if not self._own:
            self._nodes = list(self._nodes)
            self._index = dict(self._index)
            self._own = True
