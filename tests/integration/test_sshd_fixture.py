"""The sshd fixture really is OpenSSH's sshd: key and password logins, SFTP, host key pinning,
and a teardown that leaves no process, user or file behind."""

from __future__ import annotations

import asyncio
import os
import pwd
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.support.sshd import SSHD, Sshd, SshdDevice

pytestmark = pytest.mark.skipif(not SSHD.exists(), reason=f"{SSHD} is absent")


def pinned(host_key: str) -> tuple[list[Any], list[Any], list[Any]]:
    """known_hosts trusting exactly ``host_key`` (no CAs, nothing revoked)."""
    return ([asyncssh.import_public_key(host_key)], [], [])


async def connect(dev: SshdDevice, **options: Any) -> asyncssh.SSHClientConnection:
    """A client that uses only what it is given: no ~/.ssh keys, no agent, pinned host key."""
    options.setdefault("client_keys", [asyncssh.import_private_key(dev.private_key)])
    options.setdefault("known_hosts", pinned(dev.host_key))
    return await asyncssh.connect(
        dev.host, dev.port, username=dev.username, agent_path=None, **options
    )


async def test_key_login_reads_a_file_placed_in_home(
    sshd_device: SshdDevice,
) -> None:
    sshd_device.write("etc/version", "1.2.3\n")
    async with await connect(sshd_device) as conn:
        result = await conn.run(f"cat {sshd_device.path('etc', 'version')}", check=True)
        assert result.stdout == "1.2.3\n"
        result = await conn.run("id -un", check=True)
        assert result.stdout == f"{sshd_device.username}\n"
        # The device's user can change the files the test gave it.
        await conn.run(f"echo 2.0.0 > {sshd_device.path('etc', 'version')}", check=True)
    assert sshd_device.path("etc", "version").read_text() == "2.0.0\n"
    assert "Accepted publickey for" in sshd_device.log()


async def test_unknown_client_key_is_refused(sshd_device: SshdDevice) -> None:
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        await connect(sshd_device, client_keys=[stranger])


async def test_password_login(sshd_device: SshdDevice) -> None:
    if sshd_device.password is None:
        pytest.skip("password logins need root (a throwaway user with a password)")
    async with await connect(sshd_device, client_keys=None, password=sshd_device.password) as conn:
        result = await conn.run("pwd", check=True)
        assert result.stdout == f"{sshd_device.home}\n"
    with pytest.raises(asyncssh.PermissionDenied):
        await connect(sshd_device, client_keys=None, password=sshd_device.password + "x")


async def test_sftp_put_lands_in_home(sshd_device: SshdDevice, tmp_path: Path) -> None:
    upload = sshd_device.mkdir("upload")
    local = tmp_path / "firmware.bin"
    payload = os.urandom(256 * 1024)
    local.write_bytes(payload)
    async with await connect(sshd_device) as conn, conn.start_sftp_client() as sftp:
        await sftp.put(str(local), str(upload / "firmware.bin"))
    stored = upload / "firmware.bin"
    assert stored.read_bytes() == payload
    assert stored.stat().st_uid == sshd_device.uid


async def test_wrong_pinned_host_key_is_not_verifiable(
    sshd_device: SshdDevice,
) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await connect(sshd_device, known_hosts=pinned(other))


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _account_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


async def test_stop_ends_open_sessions_and_removes_everything() -> None:
    sshd = Sshd()
    dev = await asyncio.to_thread(sshd.start)
    state = dev.home.parent
    try:
        conn = await connect(dev)
        try:
            process = await conn.create_process("echo $$; exec sleep 300")
            # The remote shell's pid, printed before it becomes `sleep`: once read, it runs.
            sleeper = int(await process.stdout.readline())
            assert _running(sleeper)
            await asyncio.to_thread(sshd.stop)
            # Bounded: if stop() left the session's processes alive, this would hang forever.
            async with asyncio.timeout(30):
                await process.wait_closed()
            assert not _running(sleeper)
        finally:
            conn.close()
            await conn.wait_closed()
    finally:
        await asyncio.to_thread(sshd.stop)
    assert not state.exists()
    if os.geteuid() == 0:
        assert not _account_exists(dev.username)
    with pytest.raises(OSError):
        await connect(dev)


def test_user_is_removed_when_the_test_fails() -> None:
    with pytest.raises(RuntimeError, match="test failed"), Sshd() as dev:
        name, state = dev.username, dev.home.parent
        raise RuntimeError("test failed")
    assert not state.exists()
    if os.geteuid() == 0:
        assert not _account_exists(name)
