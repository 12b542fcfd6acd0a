"""The ``headless-ops`` CLI, run as ``python -m headless_ops`` beside a running server.

Tokens: ``token create`` prints a bearer that the server accepts for what its scope allows
(reads) and refuses with 403 otherwise (writes); ``token list`` shows it without its secret;
``token revoke`` makes it a 401 at once. Devices: ``device add``, ``device import`` from CSV
and JSON with good and bad rows (good rows added; each bad row reported with its number
and the field at fault; exit code 1), ``device list``; the server sees what the CLI added.

SQLite only: the CLI runs the same store code the integration tests cover on both engines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess, run_cli, start_server

OPS = "/api/v1/inventory_device_headless_operation/"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server on a SQLite data dir the CLI shares."""
    data_dir = tmp_path_factory.mktemp("cli") / "data"
    proc = start_server(data_dir)
    try:
        yield proc
    finally:
        proc.stop()


def cli(server: ServerProcess, *args: str) -> tuple[int, str, str]:
    """Run the CLI on the server's data dir: (exit code, stdout, stderr)."""
    done = run_cli(*args, data_dir=server.data_dir)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


def test_token_create_scope_list_and_revoke(server: ServerProcess) -> None:
    code, out, err = cli(
        server, "token", "create", "--tenant", "t", "--scope", "operations:read", "--name", "x"
    )
    assert code == 0, err
    token_id = re.search(r"^token id: (tok_\w+)$", out, re.M).group(1)  # type: ignore[union-attr]
    bearer = re.search(r"^token:\s+(\S+)$", out, re.M).group(1)  # type: ignore[union-attr]
    assert bearer.startswith(token_id + ".")
    assert "not stored and cannot be shown again" in err
    secret = bearer.split(".", 1)[1]

    with server.client(bearer) as reader:
        r = reader.get(OPS)
        assert r.status_code == 200, r.text
        assert r.json()["count"] == 0  # tenant t is new: it sees none of default's operations
        r = reader.post(OPS, json={"device_id": "dev_any", "operation_type": "reboot"})
        assert r.status_code == 403, r.text
        assert "operations:write" in r.json()["detail"]
        r = reader.get("/api/v1/inventory_device/")
        assert r.status_code == 403, r.text  # operations:read does not include devices:read

        code, out, err = cli(server, "token", "revoke", token_id)
        assert (code, out.strip()) == (0, f"revoked {token_id}"), err
        # Revocation is immediate: the running server refuses the very next request.
        r = reader.get(OPS)
        assert r.status_code == 401, r.text
        assert r.json()["detail"] == "token revoked"
        assert r.headers["www-authenticate"].startswith("Bearer")

    code, out, err = cli(server, "token", "list")
    assert code == 0, err
    row = next(line for line in out.splitlines() if token_id in line)
    assert re.search(r"\bt\b", row) and re.search(r"\bx\b", row), row
    assert "operations:read" in row
    assert re.search(r"\d{4}-\d\d-\d\dT[\d:.]+Z\s*│\s*$", row), row  # revoked: a timestamp
    assert "bootstrap-admin" in out  # the first start's admin token is listed too …
    assert secret not in out  # … and no secret, of either
    assert server.admin_token.split(".", 1)[1] not in out  # type: ignore[union-attr]

    code, _, err = cli(server, "token", "revoke", "tok_doesnotexist")
    assert code == 1
    assert "no token tok_doesnotexist" in err


CSV_IMPORT = """id,name,protocol,host,port,username,password,labels,oui,serial_number
dev_csv_1,csv-ssh-1,ssh,10.0.0.1,22,admin,CSVSECRETpw1,site=a;role=edge,,
dev_csv_2,csv-bad-protocol,telnet,10.0.0.2,22,admin,,,,
dev_csv_3,csv-cwmp-1,cwmp,,,,,site=b,202BC1,SER0003
dev_csv_4,csv-bad-port,ssh,10.0.0.4,twenty-two,admin,,,,
dev_csv_5,,ssh,10.0.0.5,22,admin,,,,
dev_csv_6,csv-no-host,ssh,,22,admin,,,,
dev_csv_7,csv-ssh-1,ssh,10.0.0.7,22,admin,,,,
"""

JSON_IMPORT = [
    {
        "id": "dev_json_1",
        "name": "json-ssh-1",
        "protocol": "ssh",
        "connection": {"host": "10.1.0.1", "username": "ops", "private_key": "JSONSECRETkey"},
        "labels": {"site": "c"},
    },
    {"id": "dev_json_2", "name": "json-bad-conn", "protocol": "cwmp", "connection": {"oui": "XYZ"}},
    "not a device",
    {"id": "dev_json_4", "name": "json-cwmp-1", "protocol": "cwmp", "connection": {}},
    {"id": "dev_json_5", "name": "json-bad-field", "protocol": "ssh", "colour": "red"},
]


def test_device_add_import_and_list(server: ServerProcess, tmp_path: Path) -> None:
    code, out, err = cli(
        server,
        "device",
        "add",
        "cli-gw-1",
        "--protocol",
        "cwmp",
        "--id",
        "dev_cli_1",
        "--set",
        "oui=202BC1",
        "--set",
        "serial_number=CLI0001",
        "--label",
        "site=z",
    )
    assert (code, out.strip()) == (0, "dev_cli_1"), err
    code, out, err = cli(server, "device", "add", "cli-bad", "--protocol", "ssh")
    assert code == 1
    assert "connection.host" in err and "connection.username" in err

    csv_file = tmp_path / "devices.csv"
    csv_file.write_text(CSV_IMPORT, encoding="utf-8")
    code, out, err = cli(server, "device", "import", str(csv_file))
    assert code == 1
    assert "imported 2 device(s), 5 row(s) refused" in out
    problems = err.strip().splitlines()
    # The header is row 1; each refused row is named by number and by the field at fault.
    assert problems[0].startswith("row 3: protocol:"), problems
    assert problems[1].startswith("row 5: connection.port:"), problems
    assert problems[2].startswith("row 6: name:"), problems
    assert problems[3].startswith("row 7: connection.host:"), problems
    assert problems[4] == "row 8: name: 'csv-ssh-1' is already taken in this tenant", problems
    assert len(problems) == 5

    json_file = tmp_path / "devices.json"
    json_file.write_text(json.dumps(JSON_IMPORT), encoding="utf-8")
    code, out, err = cli(server, "device", "import", str(json_file))
    assert code == 1
    assert "imported 2 device(s), 3 row(s) refused" in out
    problems = err.strip().splitlines()
    assert problems[0].startswith("item 2: connection.oui:"), problems
    assert problems[1] == "item 3: not an object", problems
    assert problems[2].startswith("item 5: ") and "connection.colour" in problems[2], problems
    assert len(problems) == 3

    added = {"dev_cli_1", "dev_csv_1", "dev_csv_3", "dev_json_1", "dev_json_4"}
    code, out, err = cli(server, "device", "list")
    assert code == 0, err
    listed = set(re.findall(r"\bdev_[a-z]+_\d\b", out))
    assert listed == added
    assert "site=a,role=edge" in out  # CSV labels "k=v;k=v" became two labels
    assert "CSVSECRET" not in out and "JSONSECRET" not in out

    # The running server sees the same inventory (tenant "default", the admin's).
    with server.client() as admin:
        r = admin.get("/api/v1/inventory_device/", params={"limit": 100})
        assert r.status_code == 200, r.text
        by_id = {d["id"]: d for d in r.json()["results"]}
    assert set(by_id) == added
    assert by_id["dev_csv_1"]["connection"] == {
        **by_id["dev_csv_1"]["connection"],
        "host": "10.0.0.1",
        "port": 22,
        "username": "admin",
    }
    assert by_id["dev_csv_1"]["secrets_set"] == ["password"]
    assert by_id["dev_csv_1"]["labels"] == {"site": "a", "role": "edge"}
    assert by_id["dev_json_1"]["secrets_set"] == ["private_key"]
    assert by_id["dev_cli_1"]["connection"]["serial_number"] == "CLI0001"
    assert by_id["dev_cli_1"]["labels"] == {"site": "z"}

    # An operation on a CLI-added device, through the server: the CLI's device is real.
    with server.client() as admin:
        r = admin.post(
            OPS,
            json={
                "device_id": "dev_cli_1",
                "operation_type": "get_parameters",
                "scheduled_at": "2099-01-01T00:00:00Z",
                "parameters": {"names": ["Device.DeviceInfo.SoftwareVersion"]},
            },
        )
        assert r.status_code == 201, r.text
        assert r.json()["device_name"] == "cli-gw-1"
