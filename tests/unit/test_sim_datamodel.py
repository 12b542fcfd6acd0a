"""The simulator's data model: both shipped files, TR-069 RPC semantics and faults."""

from __future__ import annotations

from pathlib import Path

import pytest

from headless_ops.cwmp.soap import ParameterInfo, ParameterValue
from headless_ops.simulator.datamodel import SHIPPED_MODELS, CpeFault, DataModel

IGD = "InternetGatewayDevice."
MS98 = IGD + "ManagementServer."


def faults_of(exc: pytest.ExceptionInfo[CpeFault]) -> dict[str, int]:
    return {f.name: f.code for f in exc.value.parameter_faults}


# ---- the shipped files ----


def test_tr098_is_the_real_gateway_file() -> None:
    model = DataModel.load("tr098")
    assert model.root == IGD
    assert model.device_id == {
        "Manufacturer": "Huawei Technologies Co., Ltd.",
        "OUI": "202BC1",
        "ProductClass": "BM632w",
        "SerialNumber": "8KA8WA1151100043",
    }
    # 1,006 data rows minus the 4 DeviceID rows; object rows get their trailing dot.
    assert len(model.names("", False)) == 1002
    assert model.value(IGD + "DeviceInfo.SoftwareVersion") == "V100R001IRQC56B017"
    assert model.type_of(MS98 + "PeriodicInformInterval") == "xsd:unsignedInt"
    assert model.exists(IGD + "LANDevice.1.Hosts.Host.6.")
    original = Path("/work/shared/data/cwmp/data_model_202BC1-BM632w-8KA8WA1151100043.csv")
    if original.exists():  # the shipped file is an unmodified copy
        assert SHIPPED_MODELS["tr098"].read_bytes() == original.read_bytes()


def test_tr181_has_what_the_brief_lists() -> None:
    model = DataModel.load("tr181")
    assert model.root == "Device."
    assert set(model.device_id) == {"Manufacturer", "OUI", "ProductClass", "SerialNumber"}
    wanted = [
        *(
            f"Device.DeviceInfo.{p}"
            for p in [
                "Manufacturer",
                "ManufacturerOUI",
                "ProductClass",
                "SerialNumber",
                "HardwareVersion",
                "SoftwareVersion",
                "ProvisioningCode",
                "UpTime",
            ]
        ),
        *(
            f"Device.ManagementServer.{p}"
            for p in [
                "URL",
                "Username",
                "Password",
                "PeriodicInformEnable",
                "PeriodicInformInterval",
                "ConnectionRequestURL",
                "ConnectionRequestUsername",
                "ConnectionRequestPassword",
                "ParameterKey",
            ]
        ),
        "Device.Time.NTPServer1",
        "Device.Time.NTPServer2",
        "Device.Time.Enable",
        "Device.WiFi.SSID.1.SSID",
        "Device.WiFi.SSID.2.SSID",
        "Device.WiFi.AccessPoint.1.Security.ModeEnabled",
        "Device.WiFi.AccessPoint.2.Security.KeyPassphrase",
        "Device.IP.Interface.1.IPv4Address.1.IPAddress",
        "Device.IP.Interface.2.IPv4Address.1.SubnetMask",
        "Device.DHCPv4.Server.Pool.1.MinAddress",
        "Device.Ethernet.Interface.4.Status",
        "Device.Hosts.Host.2.PhysAddress",
        "Device.RootDataModelVersion",
    ]
    missing = [name for name in wanted if model.value(name) is None]
    assert missing == []
    assert model.exists("Device.NAT.PortMapping.")
    assert model.value("Device.NAT.PortMappingNumberOfEntries") == "0"
    assert not model.exists("Device.Hosts.Host.3.")
    rows = len(SHIPPED_MODELS["tr181"].read_text().splitlines()) - 1
    assert 150 <= rows <= 250
    # Template rows are not part of the live tree.
    assert all("{i}" not in info.name for info in model.names("", False))


@pytest.mark.parametrize("name", ["tr098", "tr181"])
def test_every_writable_value_passes_its_own_type_check(name: str) -> None:
    """The file's values are valid for their types: writing them all back raises nothing."""
    model = DataModel.load(name)
    writable = {i.name for i in model.names("", False) if i.writable and not i.name.endswith(".")}
    values = [pv for pv in model.parameter_values() if pv.name in writable]
    assert len(values) > 20
    model.set(values)


# ---- GetParameterValues ----


@pytest.mark.parametrize("name", ["tr098", "tr181"])
def test_get_partial_path_expands_in_model_order(name: str) -> None:
    model = DataModel.load(name)
    ms = model.root + "ManagementServer."
    values = model.get([ms])
    names = [pv.name for pv in values]
    assert names and all(n.startswith(ms) and not n.endswith(".") for n in names)
    everything = [pv.name for pv in model.parameter_values()]
    assert names == [n for n in everything if n.startswith(ms)]
    assert ms + "PeriodicInformInterval" in names
    typed = {pv.name: pv.type for pv in values}
    assert typed[ms + "PeriodicInformEnable"] == "xsd:boolean"
    # A leaf and a partial path together keep the order asked for.
    leaf = model.root + "DeviceInfo.SoftwareVersion"
    mixed = model.get([leaf, ms])
    assert mixed[0].name == leaf and [pv.name for pv in mixed[1:]] == names
    assert len(model.get([""])) == len(everything)


@pytest.mark.parametrize(
    "bad",
    [
        "Device.DeviceInfo.NoSuchThing",
        "Device.NoSuchObject.",
        "Device.DeviceInfo",  # an object named without its dot
        "Device.DeviceInfo.SoftwareVersion.",  # a parameter named like an object
    ],
)
def test_get_unknown_name_faults_9005(bad: str) -> None:
    model = DataModel.load("tr181")
    with pytest.raises(CpeFault) as exc:
        model.get(["Device.DeviceInfo.UpTime", bad])
    assert exc.value.code == 9005
    assert bad in exc.value.string


# ---- GetParameterNames ----


@pytest.mark.parametrize("name", ["tr098", "tr181"])
def test_gpn_next_level(name: str) -> None:
    model = DataModel.load(name)
    root = model.root
    assert model.names("", True) == [ParameterInfo(root, False)]
    top = model.names(root, True)
    assert root + "DeviceInfo." in [i.name for i in top]
    assert root + "ManagementServer." in [i.name for i in top]
    for info in top:
        rest = info.name[len(root) :]
        assert rest and "." not in rest.rstrip(".")  # direct children only
    ms = model.names(root + "ManagementServer.", True)
    byname = {i.name: i.writable for i in ms}
    assert byname[root + "ManagementServer.URL"] is True
    assert byname[root + "ManagementServer.ParameterKey"] is False


@pytest.mark.parametrize("name", ["tr098", "tr181"])
def test_gpn_whole_subtree_includes_the_path(name: str) -> None:
    model = DataModel.load(name)
    path = model.root + "DeviceInfo."
    infos = model.names(path, False)
    assert infos[0] == ParameterInfo(path, False)
    names = [i.name for i in infos]
    assert all(n.startswith(path) for n in names)
    assert len(names) > len(model.names(path, True))
    # Objects end with ".", parameters do not, and all parameters of get() are there.
    leaves = [n for n in names if not n.endswith(".")]
    assert leaves == [pv.name for pv in model.get([path])]
    assert len(model.names("", False)) == len(model.names(model.root, False))


def test_gpn_on_a_parameter_and_faults() -> None:
    model = DataModel.load("tr181")
    leaf = "Device.DeviceInfo.ProvisioningCode"
    assert model.names(leaf, False) == [ParameterInfo(leaf, True)]
    with pytest.raises(CpeFault) as exc:
        model.names(leaf, True)
    assert exc.value.code == 9003
    for bad in ("Device.Nope.", "Device.DeviceInfo.Nope", "Device.DeviceInfo"):
        with pytest.raises(CpeFault) as exc:
            model.names(bad, False)
        assert exc.value.code == 9005


# ---- SetParameterValues ----


def test_set_applies_and_normalises() -> None:
    model = DataModel.load("tr181")
    model.set(
        [
            ParameterValue("Device.WiFi.SSID.1.SSID", "new <&> ssid"),
            ParameterValue("Device.ManagementServer.PeriodicInformEnable", "1", "xsd:boolean"),
            ParameterValue(
                "Device.ManagementServer.PeriodicInformInterval", " 60", "xsd:unsignedInt"
            ),
            ParameterValue("Device.Ethernet.Interface.1.MaxBitRate", "-1", "xsd:int"),
            ParameterValue(
                "Device.ManagementServer.PeriodicInformTime", "2025-03-01T12:00:00Z", "xsd:dateTime"
            ),
        ]
    )
    assert model.value("Device.WiFi.SSID.1.SSID") == "new <&> ssid"
    assert model.value("Device.ManagementServer.PeriodicInformEnable") == "true"
    assert model.value("Device.ManagementServer.PeriodicInformInterval") == "60"
    assert model.value("Device.Ethernet.Interface.1.MaxBitRate") == "-1"
    assert model.value("Device.ManagementServer.PeriodicInformTime") == "2025-03-01T12:00:00Z"


def test_set_is_atomic_with_per_parameter_faults() -> None:
    model = DataModel.load("tr181")
    before = model.parameter_values()
    with pytest.raises(CpeFault) as exc:
        model.set(
            [
                ParameterValue("Device.WiFi.SSID.1.SSID", "fine"),  # valid, must not land
                ParameterValue("Device.WiFi.SSID.9.SSID", "x"),  # unknown
                ParameterValue("Device.DeviceInfo.SerialNumber", "x"),  # read-only
                ParameterValue(
                    "Device.ManagementServer.PeriodicInformInterval", "-5", "xsd:unsignedInt"
                ),
                ParameterValue(
                    "Device.ManagementServer.PeriodicInformEnable", "yes", "xsd:boolean"
                ),
                ParameterValue("Device.Time.Enable", "true", "xsd:string"),  # wrong type
                ParameterValue(
                    "Device.ManagementServer.PeriodicInformTime", "yesterday", "xsd:dateTime"
                ),
                ParameterValue("Device.Ethernet.Interface.1.MaxBitRate", str(2**31), "xsd:int"),
                ParameterValue("Device.DeviceInfo.", "x"),  # an object
            ]
        )
    assert exc.value.code == 9003
    assert faults_of(exc) == {
        "Device.WiFi.SSID.9.SSID": 9005,
        "Device.DeviceInfo.SerialNumber": 9008,
        "Device.ManagementServer.PeriodicInformInterval": 9007,
        "Device.ManagementServer.PeriodicInformEnable": 9007,
        "Device.Time.Enable": 9006,
        "Device.ManagementServer.PeriodicInformTime": 9007,
        "Device.Ethernet.Interface.1.MaxBitRate": 9007,
        "Device.DeviceInfo.": 9005,
    }
    assert all(f.string for f in exc.value.parameter_faults)
    assert model.parameter_values() == before


def test_set_duplicate_name_faults_9003() -> None:
    model = DataModel.load("tr098")
    name = IGD + "DeviceInfo.ProvisioningCode"
    with pytest.raises(CpeFault) as exc:
        model.set([ParameterValue(name, "a"), ParameterValue(name, "b")])
    assert exc.value.code == 9003
    assert [(f.name, f.code) for f in exc.value.parameter_faults] == [(name, 9003)]
    assert model.value(name) == ""


def test_models_from_one_file_are_independent() -> None:
    a, b = DataModel.load("tr181"), DataModel.load("tr181")
    a.set([ParameterValue("Device.Time.NTPServer1", "ntp.example")])
    a.add_object("Device.NAT.PortMapping.")
    a.delete_object("Device.WiFi.SSID.2.")
    assert b.value("Device.Time.NTPServer1") == "0.pool.ntp.org"
    assert not b.exists("Device.NAT.PortMapping.1.")
    assert b.exists("Device.WiFi.SSID.2.")
    assert DataModel.load("tr181").value("Device.NAT.PortMappingNumberOfEntries") == "0"


# ---- AddObject / DeleteObject ----


def test_add_object_from_the_template() -> None:
    model = DataModel.load("tr181")
    assert model.add_object("Device.NAT.PortMapping.") == 1
    assert model.add_object("Device.NAT.PortMapping.") == 2
    values = {pv.name: pv for pv in model.get(["Device.NAT.PortMapping.2."])}
    assert values["Device.NAT.PortMapping.2.Enable"] == ParameterValue(
        "Device.NAT.PortMapping.2.Enable", "false", "xsd:boolean"
    )
    assert values["Device.NAT.PortMapping.2.Protocol"].value == "TCP"
    assert values["Device.NAT.PortMapping.2.ExternalPort"].type == "xsd:unsignedInt"
    assert model.value("Device.NAT.PortMappingNumberOfEntries") == "2"
    # The new instance is writable; SPV on it works; GPN lists it as an object.
    model.set([ParameterValue("Device.NAT.PortMapping.2.ExternalPort", "8080", "xsd:unsignedInt")])
    assert ParameterInfo("Device.NAT.PortMapping.2.", True) in model.names(
        "Device.NAT.PortMapping.", True
    )
    # Numbers are not reused after a delete.
    model.delete_object("Device.NAT.PortMapping.2.")
    assert model.add_object("Device.NAT.PortMapping.") == 3
    assert model.value("Device.NAT.PortMappingNumberOfEntries") == "2"


def test_add_object_clones_an_existing_instance_with_defaults() -> None:
    model = DataModel.load("tr181")
    number = model.add_object("Device.IP.Interface.")
    assert number == 3
    new = {pv.name: pv for pv in model.get([f"Device.IP.Interface.{number}."])}
    old = {pv.name.replace(".1.", f".{number}.", 1) for pv in model.get(["Device.IP.Interface.1."])}
    # Same parameters minus the nested table's instances (IPv4Address.1.*).
    assert set(new) == {n for n in old if ".IPv4Address.1." not in n}
    assert new[f"Device.IP.Interface.{number}.Enable"].value == "false"
    assert new[f"Device.IP.Interface.{number}.Name"].value == ""
    assert model.exists(f"Device.IP.Interface.{number}.IPv4Address.")
    assert model.value("Device.IP.InterfaceNumberOfEntries") == "3"
    # The nested empty table takes instances too.
    assert model.add_object(f"Device.IP.Interface.{number}.IPv4Address.") == 1
    assert model.value(f"Device.IP.Interface.{number}.IPv4AddressNumberOfEntries") == "1"
    # Model order: the new instance sits after the table's existing instances.
    order = [i.name for i in model.names("Device.IP.", False)]
    assert order.index(f"Device.IP.Interface.{number}.") > order.index("Device.IP.Interface.2.")


def test_add_object_nested_template() -> None:
    model = DataModel.load("tr181")
    assert model.add_object("Device.DHCPv4.Server.Pool.1.StaticAddress.") == 1
    assert model.value("Device.DHCPv4.Server.Pool.1.StaticAddress.1.Chaddr") == ""
    assert model.value("Device.DHCPv4.Server.Pool.1.StaticAddressNumberOfEntries") == "1"


def test_add_object_tr098() -> None:
    model = DataModel.load("tr098")
    pool = IGD + "LANDevice.1.LANHostConfigManagement.DHCPConditionalServingPool."
    assert model.add_object(pool) == 5
    assert model.value(pool + "5.Enable") == "false"
    # A writable table without instances or template: an instance with no children.
    pm = IGD + "WANDevice.1.WANConnectionDevice.1.WANIPConnection.1.PortMapping."
    assert model.add_object(pm) == 1
    assert model.names(pm, True) == [ParameterInfo(pm + "1.", True)]
    assert model.value(pm.rstrip(".") + "NumberOfEntries") == "1"


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("Device.Nope.", "Invalid"),
        ("Device.NAT.PortMapping", "Invalid"),  # no trailing dot
        ("Device.DeviceInfo.", "not a table"),
        ("Device.Hosts.Host.", "read-only table"),
        ("Device.DeviceInfo.UpTime", "Invalid"),
    ],
)
def test_add_object_faults_9005(path: str, text: str) -> None:
    model = DataModel.load("tr181")
    with pytest.raises(CpeFault) as exc:
        model.add_object(path)
    assert exc.value.code == 9005
    assert text in exc.value.string


def test_delete_object() -> None:
    model = DataModel.load("tr181")
    model.set([ParameterValue("Device.WiFi.SSID.2.SSID", "gone soon")])
    model.delete_object("Device.WiFi.SSID.2.")
    assert not model.exists("Device.WiFi.SSID.2.")
    assert model.value("Device.WiFi.SSID.2.SSID") is None
    assert model.value("Device.WiFi.SSIDNumberOfEntries") == "1"
    with pytest.raises(CpeFault) as exc:
        model.get(["Device.WiFi.SSID.2."])
    assert exc.value.code == 9005
    for bad in (
        "Device.WiFi.SSID.2.",
        "Device.WiFi.SSID.",
        "Device.Hosts.Host.1.",
        "Device.WiFi.SSID.1",
    ):
        with pytest.raises(CpeFault) as exc:
            model.delete_object(bad)
        assert exc.value.code == 9005
    # A deleted-then-added instance does not inherit old values.
    assert model.add_object("Device.WiFi.SSID.") == 3
    assert model.value("Device.WiFi.SSID.3.SSID") == ""


def test_set_value_is_unchecked_but_needs_a_parameter() -> None:
    model = DataModel.load("tr181")
    model.set_value(
        "Device.DeviceInfo.SerialNumber", "X1"
    )  # read-only for the ACS, not for the CPE
    assert model.value("Device.DeviceInfo.SerialNumber") == "X1"
    with pytest.raises(KeyError):
        model.set_value("Device.Nope", "x")


def test_custom_csv(tmp_path: Path) -> None:
    csv_file = tmp_path / "mini.csv"
    csv_file.write_text(
        "Parameter,Object,Writable,Value,Value type\n"
        "DeviceID.OUI,false,false,ABCDEF,xsd:string\n"
        "Device.DeviceInfo.SoftwareVersion,false,false,9.9,xsd:string\n"  # no object rows
        "Device.Things,true,true,,\n"
        "Device.Things.{i},true,true,,\n"
        "Device.Things.{i}.Count,false,true,7,xsd:unsignedInt\n"
        "Device.Things.{i}.Label,false,true,,\n",  # no type: string
        encoding="utf-8",
    )
    model = DataModel.load(str(csv_file))
    assert model.root == "Device."
    assert model.device_id == {"OUI": "ABCDEF"}
    assert [i.name for i in model.names("", False)] == [
        "Device.",
        "Device.DeviceInfo.",
        "Device.DeviceInfo.SoftwareVersion",
        "Device.Things.",
    ]
    assert model.add_object("Device.Things.") == 1
    assert model.get(["Device.Things."]) == [
        ParameterValue("Device.Things.1.Count", "7", "xsd:unsignedInt"),
        ParameterValue("Device.Things.1.Label", "", "xsd:string"),
    ]
