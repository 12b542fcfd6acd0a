"""The simulated SSH device (src/headless_ops/simulator/ssh_device.py) behaves as documented.

Every test talks to the device over a real loopback socket with a plain asyncssh client.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from headless_ops.simulator.ssh_device import (
    DEFAULT_PASSWORD,
    IOS_INVALID_INPUT,
    FakeDevice,
    _LineSplitter,
    running_device,
)

# Whatever a client may see when the device drops or refuses it.
LOST = (OSError, asyncssh.Error)


def connect(dev: FakeDevice, **kwargs: Any) -> asyncssh.SSHClientConnection:
    """A client pinned to the device's host key; nothing from the user's ~/.ssh."""
    options: dict[str, Any] = {
        "username": "admin",
        "password": DEFAULT_PASSWORD,
        "known_hosts": ([asyncssh.import_public_key(dev.host_key_openssh)], [], []),
        "client_keys": None,
        "agent_path": None,
        "config": None,
        "connect_timeout": 10,
    }
    options.update(kwargs)
    return asyncssh.connect(dev.host, dev.port, **options)


async def connect_eventually(dev: FakeDevice) -> asyncssh.SSHClientConnection:
    """Retry until the device (rebooting) accepts again."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        try:
            return await connect(dev)
        except LOST:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)


async def refused_now(dev: FakeDevice) -> bool:
    """Whether a connection attempt right now fails (closing it if it did not)."""
    try:
        conn = await connect(dev)
    except LOST:
        return True
    conn.close()
    await conn.wait_closed()
    return False


async def read_until(proc: asyncssh.SSHClientProcess[str], end: str) -> str:
    """Read the CLI's output until it ends with ``end`` (a prompt)."""
    buf = ""
    async with asyncio.timeout(10):
        while not buf.endswith(end):
            chunk = await proc.stdout.read(4096)
            if not chunk:
                raise EOFError(buf)
            buf += chunk
    return buf


async def cli(proc: asyncssh.SSHClientProcess[str], line: str, end: str = "edge-1#") -> str:
    """Send one line, return everything up to the next prompt ``end``."""
    proc.stdin.write(line + "\n")
    return await read_until(proc, end)


# --- shell device --------------------------------------------------------------------------


async def test_shell_exec_runs_real_commands(tmp_path: Path) -> None:
    async with running_device(tmp_path / "dev", version="1.2.3") as dev, connect(dev) as conn:
        result = await conn.run("cat etc/version")
        assert (result.exit_status, result.stdout) == (0, "1.2.3\n")

        result = await conn.run('echo "$DEVICE_ROOT"; cat >&2; exit 3', input="to stderr")
        assert result.exit_status == 3
        assert result.stdout == f"{dev.root}\n"
        assert result.stderr == "to stderr"

        assert dev.version == "1.2.3"
        assert dev.commands == ["cat etc/version", 'echo "$DEVICE_ROOT"; cat >&2; exit 3']
        assert dev.connections_accepted == 1


async def test_shell_refuses_interactive_sessions(tmp_path: Path) -> None:
    async with running_device(tmp_path / "dev") as dev, connect(dev) as conn:
        result = await conn.run()
        assert result.exit_status == 1


async def test_uci_export_import_round_trip(tmp_path: Path) -> None:
    async with running_device(tmp_path / "dev", hostname="ap-7") as dev, connect(dev) as conn:
        exported = (await conn.run("uci export", check=True)).stdout
        assert exported.startswith("package network\n\nconfig interface 'loopback'\n")
        assert "package system\n\nconfig system\n\toption hostname 'ap-7'\n" in exported

        changed = exported.replace("'ap-7'", "'ap-8'")
        await conn.run("uci import && uci commit", input=changed, check=True)
        assert (await conn.run("uci export", check=True)).stdout == changed
        assert "option hostname 'ap-8'" in (dev.root / "etc/config/system").read_text()

        bad = await conn.run("uci import", input="package ../escape\n\nconfig x\n")
        assert bad.exit_status == 1
        assert not (dev.root / "etc/escape").exists()
        assert (await conn.run("uci export", check=True)).stdout == changed


async def test_sysupgrade_reboots_into_the_new_version(tmp_path: Path) -> None:
    async with running_device(tmp_path / "dev", reboot_s=0.5) as dev:
        image = dev.root / "tmp" / "fw.bin"
        async with connect(dev) as conn:
            async with conn.start_sftp_client() as sftp, sftp.open(str(image), "w") as f:
                await f.write("VERSION=2.0.0\nrest of the image\n")
            result = await conn.run(f"sysupgrade -n {image}")
            assert result.exit_status == 0
            assert "2.0.0" in result.stdout
            assert dev.rebooting
            assert await refused_now(dev) or dev.boots == 1
            async with asyncio.timeout(10):
                await conn.wait_closed()  # the device dropped us

        async with await connect_eventually(dev) as conn:
            assert (await conn.run("cat etc/version")).stdout == "2.0.0\n"
        assert (dev.boots, dev.version, dev.connections_accepted) == (1, "2.0.0", 2)
        assert not (dev.root / ".reboot-requested").exists()
        assert not (dev.root / "etc/pending_version").exists()


async def test_shell_sftp_uses_real_paths(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 500
    (tmp_path / "up.bin").write_bytes(payload)
    async with (
        running_device(tmp_path / "dev") as dev,
        connect(dev) as conn,
        conn.start_sftp_client() as sftp,
    ):
        remote = str(dev.root / "tmp" / "up.bin")
        await sftp.put(str(tmp_path / "up.bin"), remote)
        assert (dev.root / "tmp" / "up.bin").read_bytes() == payload
        await sftp.get(remote, str(tmp_path / "down.bin"))
        assert (tmp_path / "down.bin").read_bytes() == payload
        digest = (await conn.run(f"sha256sum {remote}", check=True)).stdout.split()[0]
        assert digest == hashlib.sha256(payload).hexdigest()


async def test_close_ends_running_commands(tmp_path: Path) -> None:
    dev = FakeDevice(tmp_path / "dev")
    await dev.start()
    conn = await connect(dev)
    try:
        proc = await conn.create_process("echo started; sleep 60")
        async with asyncio.timeout(10):
            assert await proc.stdout.readline() == "started\n"
        assert dev._procs
        await dev.close()
        async with asyncio.timeout(10):
            await proc.wait_closed()
            await conn.wait_closed()
        assert not dev._procs and not dev._tasks and not dev._conns
        assert await refused_now(dev)  # nothing listens any more
    finally:
        conn.close()
        await conn.wait_closed()
        await dev.close()


# --- ios device ----------------------------------------------------------------------------


async def test_ios_show_version_interactive_and_exec(tmp_path: Path) -> None:
    async with (
        running_device(tmp_path / "dev", kind="ios", version="15.7(3)M8") as dev,
        connect(dev) as conn,
    ):
        proc = await conn.create_process(term_type="vt100")
        banner = await read_until(proc, "\nedge-1#")
        assert banner.strip() != "edge-1#"
        assert await cli(proc, "terminal length 0") == "terminal length 0\nedge-1#"
        out = await cli(proc, "show version")
        assert out.startswith("show version\nCisco IOS Software, C2900 Software")
        assert "Version 15.7(3)M8, RELEASE SOFTWARE (fc2)\n" in out
        assert "edge-1 uptime is 1 hour, 2 minutes\n" in out
        assert 'System image file is "flash:c2900-universalk9-mz.SPA.15.7(3)M8.bin"\n' in out
        assert await cli(proc, "show bogus") == f"show bogus\n{IOS_INVALID_INPUT}\nedge-1#"
        proc.stdin.write("exit\n")
        async with asyncio.timeout(10):
            await proc.wait_closed()

        result = await conn.run("show version")  # exec request: no echo, no prompt
        assert result.exit_status == 0
        assert result.stdout.startswith("Cisco IOS Software")
        assert "#" not in result.stdout
        assert dev.commands[-1] == "show version"


async def test_ios_configure_terminal(tmp_path: Path) -> None:
    async with running_device(tmp_path / "dev", kind="ios") as dev, connect(dev) as conn:
        proc = await conn.create_process()  # no PTY: same CLI
        await read_until(proc, "edge-1#")
        out = await cli(proc, "configure terminal", "edge-1(config)#")
        assert "Enter configuration commands, one per line.  End with CNTL/Z." in out
        await cli(proc, "ntp server 192.0.2.1", "edge-1(config)#")
        await cli(proc, "no ip address 10.0.0.1 255.255.255.0", "edge-1(config)#")
        out = await cli(proc, "no ntp server 203.0.113.9", "edge-1(config)#")
        assert "% No such line" in out
        await cli(proc, "hostname core-9", "core-9(config)#")
        await cli(proc, "end", "core-9#")

        out = await cli(proc, "show running-config", "core-9#")
        assert out.startswith(
            "show running-config\nBuilding configuration...\n\nCurrent configuration : "
        )
        assert out.endswith(
            "hostname core-9\ninterface GigabitEthernet0/0\nntp server 10.0.0.254\n"
            "snmp-server community public RO\nntp server 192.0.2.1\n!\nend\ncore-9#"
        )
        assert "ntp server 192.0.2.1" not in await cli(proc, "show startup-config", "core-9#")
        assert "[OK]" in await cli(proc, "write memory", "core-9#")
        assert dev.startup_config == dev.running_config
        assert "ntp server 192.0.2.1" in dev.running_config


async def test_ios_verify_sha256_and_sftp_chroot(tmp_path: Path) -> None:
    payload = b"VERSION=15.9(3)M4\n" + bytes(range(256)) * 100
    (tmp_path / "image.bin").write_bytes(payload)
    async with running_device(tmp_path / "dev", kind="ios") as dev, connect(dev) as conn:
        async with conn.start_sftp_client() as sftp:
            await sftp.put(str(tmp_path / "image.bin"), "/image.bin")
            assert "image.bin" in await sftp.listdir("/")
        assert (dev.flash / "image.bin").read_bytes() == payload

        digest = hashlib.sha256(payload).hexdigest()
        for spelling in ("flash:image.bin", "flash:/image.bin"):
            result = await conn.run(f"verify /sha256 {spelling}")
            assert result.stdout == f"verify /sha256 (flash:image.bin) = {digest}\n"
        result = await conn.run("verify /sha256 flash:missing.bin")
        assert result.stdout == "%Error opening flash:missing.bin (No such file or directory)\n"
        assert "image.bin" in (await conn.run("dir flash:")).stdout


async def test_ios_reload_boots_the_configured_image(tmp_path: Path) -> None:
    async with running_device(tmp_path / "dev", kind="ios", reboot_s=0.3) as dev:
        (dev.flash / "c2900-new.bin").write_text("VERSION=15.9(3)M4\n")
        async with connect(dev) as conn:
            proc = await conn.create_process(term_type="vt100")
            await read_until(proc, "edge-1#")
            await cli(proc, "configure terminal", "edge-1(config)#")
            await cli(proc, "boot system flash:c2900-new.bin", "edge-1(config)#")
            await cli(proc, "ntp server 192.0.2.99", "edge-1(config)#")  # never saved
            await cli(proc, "end")
            await cli(proc, "copy running-config startup-config")
            await cli(proc, "no-such-command")
            await cli(proc, "configure terminal", "edge-1(config)#")
            await cli(proc, "logging host 192.0.2.5", "edge-1(config)#")  # never saved either
            await cli(proc, "end")

            assert (
                await cli(proc, "reload", "[confirm]") == "reload\nProceed with reload? [confirm]"
            )
            assert await cli(proc, "n") == "n\nedge-1#"  # cancelled
            await cli(proc, "reload", "[confirm]")
            proc.stdin.write("\r\n")
            async with asyncio.timeout(10):
                await conn.wait_closed()
        assert dev.rebooting or dev.boots == 1

        async with await connect_eventually(dev) as conn:
            out = (await conn.run("show version")).stdout
        assert "Version 15.9(3)M4," in out
        assert 'System image file is "flash:c2900-new.bin"' in out
        assert dev.boots == 1
        assert dev.running_config == dev.startup_config
        assert "boot system flash:c2900-new.bin" in dev.running_config
        assert "logging host 192.0.2.5" not in dev.running_config


def test_line_splitter_accepts_every_line_ending() -> None:
    splitter = _LineSplitter()
    assert splitter.feed("a\nb\r\nc\rd") == ["a", "b", "c"]
    assert splitter.feed("\r") == ["d"]
    assert splitter.feed("\ne\n") == ["e"]  # the "\n" of a "\r\n" split across reads


# --- faults and authentication -------------------------------------------------------------


async def test_delay_holds_the_answer_back(tmp_path: Path) -> None:
    async with running_device(tmp_path / "dev") as dev, connect(dev) as conn:
        loop = asyncio.get_running_loop()
        dev.faults.delay_s = 0.3
        started = loop.time()
        result = await conn.run("echo late")
        assert loop.time() - started >= 0.3
        assert result.stdout == "late\n"


async def test_disconnect_on_aborts_the_connection(tmp_path: Path) -> None:
    async with running_device(tmp_path / "dev") as dev:
        dev.faults.disconnect_on = "boom"
        async with connect(dev) as conn:
            assert (await conn.run("echo fine")).stdout == "fine\n"
            # asyncssh does not raise here: a channel lost with its connection completes with
            # no exit status (even with check=True); the connection is gone though.
            lost = await conn.run("echo boom")
            assert (lost.exit_status, lost.exit_signal, lost.stdout) == (None, None, "")
            async with asyncio.timeout(10):
                await conn.wait_closed()
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.run("echo again")
        assert dev.commands == ["echo fine", "echo boom"]


async def test_disconnect_on_aborts_an_ios_cli_session(tmp_path: Path) -> None:
    async with running_device(tmp_path / "dev", kind="ios") as dev, connect(dev) as conn:
        dev.faults.disconnect_on = "reload"
        proc = await conn.create_process(term_type="vt100")
        await read_until(proc, "edge-1#")
        with pytest.raises((EOFError, *LOST)):
            await cli(proc, "reload")
        async with asyncio.timeout(10):
            await conn.wait_closed()
        assert dev.boots == 0 and not dev.rebooting


async def test_reject_all_auth(tmp_path: Path) -> None:
    async with running_device(tmp_path / "dev") as dev:
        dev.faults.reject_all_auth = True
        with pytest.raises(asyncssh.PermissionDenied):
            await connect(dev)
        dev.faults.reject_all_auth = False
        with pytest.raises(asyncssh.PermissionDenied):
            await connect(dev, password="wrong")
        with pytest.raises(asyncssh.PermissionDenied):
            await connect(dev, username="root")
        async with connect(dev):
            pass
        assert dev.connections_accepted == 1


async def test_public_key_auth(tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    other = asyncssh.generate_private_key("ssh-ed25519")
    async with running_device(
        tmp_path / "dev", password=None, client_public_key=key.export_public_key().decode()
    ) as dev:
        async with connect(dev, password=None, client_keys=[key]) as conn:
            assert (await conn.run("echo hi")).stdout == "hi\n"
        with pytest.raises(asyncssh.PermissionDenied):
            await connect(dev, password=None, client_keys=[other])
        with pytest.raises(asyncssh.PermissionDenied):
            await connect(dev, password=DEFAULT_PASSWORD)


async def test_host_key_is_presented_as_given(tmp_path: Path) -> None:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    async with running_device(tmp_path / "dev", host_key=host_key) as dev:
        assert dev.host_key_openssh == " ".join(host_key.export_public_key().decode().split()[:2])
        assert dev.host_key_openssh.startswith("ssh-ed25519 AAAA")
        stranger = asyncssh.generate_private_key("ssh-ed25519").convert_to_public()
        with pytest.raises(asyncssh.HostKeyNotVerifiable):
            await connect(dev, known_hosts=([stranger], [], []))
        async with connect(dev):
            pass


async def test_refuse_connections(tmp_path: Path) -> None:
    async with running_device(tmp_path / "dev") as dev:
        dev.faults.refuse_connections = True
        assert await refused_now(dev)
        assert dev.connections_accepted == 0
        dev.faults.refuse_connections = False
        assert not await refused_now(dev)
        assert dev.connections_accepted == 1


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "example.invalid"])
async def test_shell_device_refuses_to_listen_beyond_loopback(tmp_path: Path, host: str) -> None:
    # A shell device runs what it is sent: it must never be reachable from elsewhere.
    device = FakeDevice(tmp_path / "dev", kind="shell")
    with pytest.raises(ValueError, match="loopback address only"):
        await device.start(host, 0)
    assert device.port == 0


async def test_allowed_listening_addresses(tmp_path: Path) -> None:
    # The IOS kind has no shell: any address (here every interface, closed at once); a shell
    # device any loopback address, IPv6's too.
    async with running_device(tmp_path / "dev", kind="ios", host="0.0.0.0") as dev:
        assert dev.port > 0
    if not _has_ipv6_loopback():
        return
    async with running_device(tmp_path / "dev6", kind="shell", host="::1") as dev:
        assert dev.host == "::1"


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True
