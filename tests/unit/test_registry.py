"""The helper registry (helpers/registry.py).

One helper per protocol (a duplicate is refused, never shadowed); objects that do not
implement the Helper interface are refused; helpers load from ``module:attribute`` specs
(a class or factory is called, an instance kept) and from the ``headless_ops.helpers``
entry-point group of an installed distribution.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from headless_ops.domain.devices import DeviceStatus
from headless_ops.domain.operations import OperationType
from headless_ops.helpers.base import DeviceView, Helper, OperationContext, StatusReport
from headless_ops.helpers.registry import DuplicateHelper, HelperRegistry, load_object

DEVICE = DeviceView(tenant_id="ten_1", id="dev_1", name="gw-1", protocol="fake", connection={})


class FakeHelper:
    """A complete helper declared the usual way: class-level protocol and capabilities."""

    protocol = "fake"
    supported_operations = frozenset({OperationType.REBOOT})

    async def refresh_status(self, device: DeviceView) -> StatusReport:
        return StatusReport(status=DeviceStatus.ONLINE, detail=f"hello {device.name}")

    async def execute(self, context: OperationContext) -> dict[str, Any]:
        return {"rebooted": context.device.id}


class OtherFakeHelper(FakeHelper):
    protocol = "other"


class NoExecute:
    """Misses ``execute``: not a helper."""

    protocol = "broken"
    supported_operations = frozenset({OperationType.REBOOT})

    async def refresh_status(self, device: DeviceView) -> StatusReport:
        return StatusReport(status=DeviceStatus.UNKNOWN)


def make_fake() -> FakeHelper:
    """A factory, as an entry point or spec may name one."""
    helper = FakeHelper()
    helper.protocol = "from-factory"
    return helper


#: A ready instance, registered as it is.
INSTANCE = OtherFakeHelper()
NOT_A_HELPER = {"protocol": "dict"}
SPEC = f"{__name__}:"


def test_register_get_iterate_unregister() -> None:
    registry = HelperRegistry()
    fake, other = FakeHelper(), OtherFakeHelper()
    registry.register(fake)
    registry.register(other)
    assert registry.get("fake") is fake
    assert registry.get("other") is other
    assert registry.get("ssh") is None
    assert list(registry) == [fake, other]
    registry.unregister("fake")
    assert registry.get("fake") is None
    registry.unregister("fake")  # removing twice is harmless
    assert list(registry) == [other]


def test_duplicate_protocol_refused() -> None:
    registry = HelperRegistry()
    first = FakeHelper()
    registry.register(first)
    with pytest.raises(DuplicateHelper, match="'fake' is already registered"):
        registry.register(FakeHelper())
    # The first one stays: never silently shadowed.
    assert registry.get("fake") is first
    assert issubclass(DuplicateHelper, ValueError)


@pytest.mark.parametrize(
    "obj", [object(), NOT_A_HELPER, NoExecute(), FakeHelper.refresh_status, "fake"]
)
def test_non_helper_refused(obj: object) -> None:
    registry = HelperRegistry()
    with pytest.raises(TypeError, match="does not implement the Helper interface"):
        registry.register(obj)  # type: ignore[arg-type]
    assert list(registry) == []


async def test_load_specs_instantiates_a_class() -> None:
    registry = HelperRegistry()
    registry.load_specs(SPEC + "FakeHelper")
    helper = registry.get("fake")
    # An instance, not the class: the class itself has the protocol's attributes too,
    # but its methods would be unbound.
    assert isinstance(helper, FakeHelper)
    report = await helper.refresh_status(DEVICE)
    assert report.status is DeviceStatus.ONLINE
    assert report.detail == "hello gw-1"


def test_load_specs_calls_a_factory_and_keeps_an_instance() -> None:
    registry = HelperRegistry()
    registry.load_specs(f" {SPEC}make_fake , ,{SPEC}INSTANCE,")
    factory_made = registry.get("from-factory")
    assert isinstance(factory_made, FakeHelper)
    assert registry.get("other") is INSTANCE


def test_load_specs_empty_is_nothing() -> None:
    registry = HelperRegistry()
    registry.load_specs("")
    registry.load_specs(" , ")
    assert list(registry) == []


def test_load_specs_duplicate_refused() -> None:
    registry = HelperRegistry()
    registry.register(FakeHelper())
    with pytest.raises(DuplicateHelper):
        registry.load_specs(SPEC + "FakeHelper")


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ("FakeHelper", ValueError, "not 'module:attribute'"),
        (":FakeHelper", ValueError, "not 'module:attribute'"),
        (f"{__name__}:", ValueError, "not 'module:attribute'"),
        ("headless_ops_no_such_module:Helper", ModuleNotFoundError, "no_such_module"),
        (SPEC + "NoSuchHelper", AttributeError, "NoSuchHelper"),
    ],
)
def test_load_object_bad_specs(spec: str, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        load_object(spec)


@pytest.mark.parametrize("attr", ["NOT_A_HELPER", "NoExecute"])
def test_load_specs_non_helper_refused(attr: str) -> None:
    registry = HelperRegistry()
    with pytest.raises(TypeError, match="does not implement the Helper interface"):
        registry.load_specs(SPEC + attr)


def test_entry_points_are_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real installed distribution (a .dist-info on sys.path) advertising two helpers.
    dist = tmp_path / "acme_helpers-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-helpers\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[headless_ops.helpers]\nfake = {__name__}:FakeHelper\nother = {__name__}:INSTANCE\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert str(tmp_path) in sys.path

    registry = HelperRegistry()
    registry.load_entry_points()
    assert isinstance(registry.get("fake"), FakeHelper)
    assert registry.get("other") is INSTANCE
    # Entry points first, then configured specs: a spec for the same protocol is refused.
    with pytest.raises(DuplicateHelper):
        registry.load_specs(SPEC + "FakeHelper")


def test_helper_protocol_is_runtime_checkable() -> None:
    assert isinstance(FakeHelper(), Helper)
    assert not isinstance(NoExecute(), Helper)
