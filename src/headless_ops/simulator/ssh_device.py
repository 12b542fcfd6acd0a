"""A simulated SSH device, served in-process by asyncssh, with fault injection: for the
tests, the benchmarks and the demo router of ``serve --demo`` (an ``"ios"`` one).

Two kinds of device:

* ``"shell"`` — a Linux/OpenWrt box. Exec requests really run ``/bin/sh -c <command>`` in
  the device's root directory, with fake ``uci``, ``sysupgrade`` and ``reboot`` tools first on
  ``PATH``; SFTP sees the real file system (absolute paths, no chroot), like the shell does.
* ``"ios"`` — a prompt-driven, IOS-like CLI (``edge-1#``), reached through an interactive
  shell (with or without a PTY) or a one-shot exec request; SFTP is chrooted to ``root/flash``.

Both kinds simulate reboots (connections dropped, new ones refused for ``reboot_s``, then the
staged firmware becomes the running version) and honour :class:`Faults`, which a test may change
at any time while the device runs.

Usage::

    async with running_device(tmp_path / "dev", kind="ios") as dev:
        async with asyncssh.connect(dev.host, dev.port, username="admin",
                                    password="device-password", known_hosts=None) as conn:
            result = await conn.run("show version")

Everything runs on the caller's event loop: one listening socket per device, no threads; only
an exec command of a shell device costs a subprocess while it runs. The ``"shell"`` kind runs
what it is sent as real commands, so it listens on loopback only; only the ``"ios"`` kind (no
shell) is ever served by the demo.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import os
import re
import signal
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import asyncssh

__all__ = [
    "DEFAULT_PASSWORD",
    "IOS_INVALID_INPUT",
    "FakeDevice",
    "Faults",
    "image_version",
    "running_device",
]

#: The password of ``username`` unless a device is given another one.
DEFAULT_PASSWORD = "device-password"  # noqa: S105 - a simulator's documented test password

#: What the IOS-like CLI answers to a command it does not know.
IOS_INVALID_INPUT = "% Invalid input detected at '^' marker."

# How long after the reply to a reboot-triggering command the device drops its connections:
# long enough for the reply (exit status, echo) to reach the client first.
_REBOOT_GRACE_S = 0.05

_FLASH_SIZE = 256_000_000
_CHUNK = 65536


@dataclass
class Faults:
    """Mutable at any time while the server runs; read on every new connection/command."""

    #: Sleep this long before answering each command (exec request or CLI line).
    delay_s: float = 0.0
    #: When a command (exec or CLI line) contains this substring, abort the TCP connection
    #: (``conn.abort()``) instead of answering.
    disconnect_on: str | None = None
    #: Every authentication attempt fails.
    reject_all_auth: bool = False
    #: New TCP connections are closed at once, before the SSH handshake.
    refuse_connections: bool = False


# --- fake tools of the shell device ---------------------------------------------------------

_UCI = r"""#!/bin/sh
# Fake OpenWrt uci: export / import / commit over $DEVICE_ROOT/etc/config (one file a package).
dir="$DEVICE_ROOT/etc/config"
case "$1" in
export)
    if [ -n "$2" ]; then
        [ -f "$dir/$2" ] || { echo "uci: Entry not found" >&2; exit 1; }
        set -- "$dir/$2"
    else
        set -- "$dir"/*
    fi
    for f in "$@"; do
        [ -f "$f" ] || continue
        printf 'package %s\n\n' "${f##*/}"
        cat "$f"
        printf '\n'
    done
    ;;
import)
    # Staged in a scratch directory first, so a malformed stream changes nothing.
    tmp="$DEVICE_ROOT/tmp/.uci-import.$$"
    rm -rf "$tmp" && mkdir -p "$tmp" || exit 1
    if ! awk -v dir="$tmp" '
        function flush(   i, first, last, out) {
            if (name == "") return
            first = 1
            if (n >= 1 && buf[1] == "") first = 2
            last = n
            while (last >= first && buf[last] == "") last--
            out = dir "/" name
            printf "" > out
            for (i = first; i <= last; i++) print buf[i] > out
            close(out)
            count++
        }
        /^package[ \t]/ {
            flush()
            name = $2
            gsub(/\047/, "", name)
            if (name !~ /^[A-Za-z0-9_-]+$/) { bad = 1; exit 1 }
            n = 0
            next
        }
        name != "" { buf[++n] = $0 }
        END { if (bad) exit 1; flush(); if (count == 0) exit 1 }
    '; then
        rm -rf "$tmp"
        echo "uci: Parse error (invalid import stream)" >&2
        exit 1
    fi
    for f in "$tmp"/*; do mv "$f" "$dir/"; done
    rm -rf "$tmp"
    ;;
commit)
    ;;
*)
    echo "usage: uci export [<package>] | import | commit [<package>]" >&2
    exit 1
    ;;
esac
"""

_SYSUPGRADE = r"""#!/bin/sh
# Fake sysupgrade: the image is a text file whose first line is VERSION=<v>. Stages <v> in
# $DEVICE_ROOT/etc/pending_version (the device boots it) and reboots.
while [ $# -gt 0 ]; do
    case "$1" in
    -*) shift ;;   # -n (do not keep config) and friends: accepted, not modelled
    *) break ;;
    esac
done
img="$1"
if [ -z "$img" ] || [ ! -f "$img" ]; then
    echo "sysupgrade: image file not found: $img" >&2
    exit 1
fi
first=$(head -n 1 "$img" | tr -d '\r')
case "$first" in
VERSION=?*) version="${first#VERSION=}" ;;
*) echo "Image check failed." >&2; exit 1 ;;
esac
printf '%s\n' "$version" > "$DEVICE_ROOT/etc/pending_version"
echo "Commencing upgrade to $version. Closing all shell sessions."
exec "$DEVICE_ROOT/bin/reboot"
"""

_REBOOT = r"""#!/bin/sh
# Fake reboot: the SSH server notices the flag once the current command has finished.
touch "$DEVICE_ROOT/.reboot-requested"
"""

_UCI_SYSTEM = """\
config system
\toption hostname '{hostname}'
\toption timezone 'UTC'
\toption log_size '64'

config timeserver 'ntp'
\toption enabled '1'
\tlist server '0.openwrt.pool.ntp.org'
\tlist server '1.openwrt.pool.ntp.org'
"""

_UCI_NETWORK = """\
config interface 'loopback'
\toption device 'lo'
\toption proto 'static'
\toption ipaddr '127.0.0.1'
\toption netmask '255.0.0.0'

config interface 'lan'
\toption device 'br-lan'
\toption proto 'static'
\toption ipaddr '192.168.1.1'
\toption netmask '255.255.255.0'

config interface 'wan'
\toption device 'eth1'
\toption proto 'dhcp'
"""


def _write(path: Path, text: str, mode: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mode is not None:
        path.chmod(mode)


def image_version(path: Path) -> str | None:
    """The ``<v>`` of a firmware image whose first line is ``VERSION=<v>``, else None."""
    try:
        with path.open("rb") as f:
            first = f.readline(4096)
    except OSError:
        return None
    line = first.decode("latin-1").strip()
    if line.startswith("VERSION=") and len(line) > len("VERSION="):
        return line[len("VERSION=") :]
    return None


# --- IOS-like CLI -----------------------------------------------------------------------------


@dataclass
class _Reply:
    text: str = ""
    #: Whether ``text`` is a whole line (ends with a newline when written).
    newline: bool = True
    #: Whether the prompt follows.
    prompt: bool = True
    action: Literal["reload", "logout"] | None = None


# Abbreviations every IOS user (and many automation scripts) types; the canonical forms are
# the ones documented in the brief.
_IOS_ALIASES = {
    "show run": "show running-config",
    "sh run": "show running-config",
    "show start": "show startup-config",
    "sh start": "show startup-config",
    "sh ver": "show version",
    "show ver": "show version",
    "conf t": "configure terminal",
    "wr": "write memory",
    "wr mem": "write memory",
    "write": "write memory",
    "copy run start": "copy running-config startup-config",
}

_VERIFY = re.compile(r"verify\s+/sha256\s+flash:/?(\S+)")
_BOOT_SYSTEM = re.compile(r"boot\s+system\s+flash:/?(\S+)")
_TERMINAL = re.compile(r"terminal\s+(length|width)\s+\d+")


def _config_text(lines: list[str]) -> str:
    body = "!\n" + "\n".join(lines) + "\n!\nend"
    return f"Building configuration...\n\nCurrent configuration : {len(body)} bytes\n{body}"


class _IosSession:
    """One CLI session: its mode is its own, the configuration is the device's."""

    def __init__(self, device: FakeDevice) -> None:
        self.device = device
        self.config_mode = False
        self.confirming_reload = False

    def prompt(self) -> str:
        host = self.device.ios_hostname
        return f"{host}(config)#" if self.config_mode else f"{host}#"

    def handle(self, line: str) -> _Reply:
        if self.confirming_reload:
            self.confirming_reload = False
            if line.strip().lower() in ("", "y", "yes"):
                return _Reply(prompt=False, action="reload")
            return _Reply()
        command = " ".join(line.split())
        if self.config_mode:
            return self._configure(command)
        return self._exec(_IOS_ALIASES.get(command, command))

    def _exec(self, command: str) -> _Reply:
        dev = self.device
        if not command or _TERMINAL.fullmatch(command):
            return _Reply()
        if command == "show version":
            return _Reply(dev.ios_show_version())
        if command == "show running-config":
            return _Reply(_config_text(dev.running_config))
        if command == "show startup-config":
            return _Reply(_config_text(dev.startup_config))
        if command == "configure terminal":
            self.config_mode = True
            return _Reply("Enter configuration commands, one per line.  End with CNTL/Z.")
        if command in ("copy running-config startup-config", "write memory"):
            dev.startup_config = list(dev.running_config)
            return _Reply("Building configuration...\n[OK]")
        if m := _VERIFY.fullmatch(command):
            return _Reply(dev.ios_verify(m.group(1)))
        if command in ("dir", "dir flash:", "dir flash:/"):
            return _Reply(dev.ios_dir())
        if command == "reload":
            self.confirming_reload = True
            return _Reply("Proceed with reload? [confirm]", newline=False, prompt=False)
        if command in ("exit", "logout", "quit"):
            return _Reply(prompt=False, action="logout")
        return _Reply(IOS_INVALID_INPUT)

    def _configure(self, command: str) -> _Reply:
        dev = self.device
        running = dev.running_config
        if not command:
            return _Reply()
        if command in ("end", "exit", "\x1a"):
            self.config_mode = False
            return _Reply()
        if command.startswith("no "):
            rest = command[3:].strip()
            for i, existing in enumerate(running):
                # Sub-lines are stored indented (" ip address …") but typed without the indent.
                if existing.strip() == rest:
                    del running[i]
                    return _Reply()
            return _Reply("% No such line")
        if command.startswith("hostname "):
            new = f"hostname {command.split(None, 1)[1]}"
            for i, existing in enumerate(running):
                if existing.startswith("hostname "):
                    running[i] = new
                    break
            else:
                running.insert(0, new)
            return _Reply()
        if m := _BOOT_SYSTEM.fullmatch(command):
            dev.boot_image = m.group(1)
        if command not in running:
            running.append(command)
        return _Reply()


class _LineSplitter:
    """Splits a byte stream into lines ended by ``\\n``, ``\\r\\n`` or ``\\r`` (as typed on a PTY)."""

    def __init__(self) -> None:
        self._buf = ""
        # A line ended by "\r" at the end of a chunk: a "\n" opening the next chunk belongs to it.
        self._skip_lf = False

    def feed(self, text: str) -> list[str]:
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = False
        self._buf += text
        lines: list[str] = []
        while m := re.search(r"\r\n|\r|\n", self._buf):
            lines.append(self._buf[: m.start()])
            self._buf = self._buf[m.end() :]
            if m.group() == "\r" and not self._buf:
                self._skip_lf = True
        return lines


# --- asyncssh plumbing -------------------------------------------------------------------------


class _Refuse(asyncio.Protocol):
    """A TCP connection the device does not want: closed before the SSH handshake starts."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.abort()


class _Listener:
    """The TCP listener of a device, handed to ``asyncssh.listen`` as its ``tunnel``.

    asyncssh accepts any object with ``create_server`` as the listener to accept SSH
    connections on; being that object lets the device choose per TCP connection, before
    asyncssh sees it, whether to refuse it (a rebooting device, a refusing fault).
    """

    def __init__(self, device: FakeDevice) -> None:
        self._device = device
        self.server: asyncio.Server | None = None

    async def create_server(
        self, session_factory: Callable[[str, int], Any], listen_host: str, listen_port: int
    ) -> asyncio.Server:
        def protocol_factory() -> asyncio.BaseProtocol:
            if self._device.refusing:
                return _Refuse()
            return session_factory("", 0)  # type: ignore[no-any-return]

        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(protocol_factory, listen_host, listen_port)
        return self.server

    def close(self) -> None:
        """Part of asyncssh's tunnel protocol; the device closes the server itself."""

    async def wait_closed(self) -> None:
        """Part of asyncssh's tunnel protocol; nothing to wait for."""


class _Server(asyncssh.SSHServer):
    """Authentication and connection bookkeeping for one SSH connection."""

    def __init__(self, device: FakeDevice) -> None:
        self._device = device
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._device._conns.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._device._conns.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return self._device.password is not None

    def validate_password(self, username: str, password: str) -> bool:
        dev = self._device
        if dev.faults.reject_all_auth or dev.password is None or username != dev.username:
            return False
        return hmac.compare_digest(password.encode(), dev.password.encode())

    def public_key_auth_supported(self) -> bool:
        return self._device._client_key is not None

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        dev = self._device
        if dev.faults.reject_all_auth or dev._client_key is None or username != dev.username:
            return False
        return bool(key.public_data == dev._client_key.public_data)

    def auth_completed(self) -> None:
        self._device.connections_accepted += 1


# --- the device --------------------------------------------------------------------------------


class FakeDevice:
    """A simulated SSH device rooted at a directory; see the module docstring.

    Constructing it (re)populates ``root``: a device always starts from factory state.
    """

    def __init__(
        self,
        root: Path,
        *,
        kind: Literal["shell", "ios"] = "shell",
        username: str = "admin",
        password: str | None = DEFAULT_PASSWORD,
        client_public_key: str | None = None,
        host_key: asyncssh.SSHKey | None = None,
        version: str = "1.0.0",
        hostname: str = "edge-1",
        reboot_s: float = 0.5,
        newline: str = "\n",
    ) -> None:
        """``client_public_key``: OpenSSH public key text accepted for ``username``.
        ``host_key``: private host key (default: a fresh ed25519 key).
        ``newline``: what ends the IOS CLI's output lines (``"\\r\\n"`` like a real PTY)."""
        if kind not in ("shell", "ios"):
            raise ValueError(f"unknown device kind {kind!r}")
        self.root = Path(root).resolve()
        self.kind = kind
        self.username = username
        self.password = password
        self._client_key = (
            asyncssh.import_public_key(client_public_key) if client_public_key else None
        )
        self._host_key = host_key or asyncssh.generate_private_key("ssh-ed25519")
        self.host_key_openssh = " ".join(
            self._host_key.export_public_key("openssh").decode().split()[:2]
        )
        self.hostname = hostname
        self.reboot_s = reboot_s
        self.newline = newline
        self.faults = Faults()
        self.commands: list[str] = []
        self.connections_accepted = 0
        self.boots = 0
        self.host = ""
        self.port = 0
        #: IOS state (unused by shell devices); the flash directory is ``root/flash``.
        self.running_config: list[str] = []
        self.startup_config: list[str] = []
        self.boot_image = ""

        self._env = {
            "PATH": f"{self.root}/bin:/usr/bin:/bin",
            "HOME": str(self.root),
            "DEVICE_ROOT": str(self.root),
            "LANG": "C",
        }
        self._listener = _Listener(self)
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._conns: set[asyncssh.SSHServerConnection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._procs: set[asyncio.subprocess.Process] = set()
        self._rebooting = False
        self._populate(version)

    # -- state --------------------------------------------------------------------------------

    @property
    def version(self) -> str:
        """The currently running version (``root/etc/version``)."""
        return (self.root / "etc" / "version").read_text().strip()

    @property
    def flash(self) -> Path:
        """The IOS device's ``flash:`` (its SFTP root)."""
        return self.root / "flash"

    @property
    def rebooting(self) -> bool:
        """True from the reboot-triggering reply until the device has booted again."""
        return self._rebooting

    @property
    def refusing(self) -> bool:
        """Whether a new TCP connection would be closed at once right now."""
        return self._rebooting or self.faults.refuse_connections

    @property
    def ios_hostname(self) -> str:
        """The hostname of the IOS running configuration (its prompt)."""
        for line in self.running_config:
            if line.startswith("hostname "):
                return line.split(None, 1)[1]
        return "Router"

    def _populate(self, version: str) -> None:
        root = self.root
        root.mkdir(parents=True, exist_ok=True)
        _write(root / "etc" / "version", f"{version}\n")
        (root / "tmp").mkdir(exist_ok=True)
        for stale in (root / ".reboot-requested", root / "etc" / "pending_version"):
            stale.unlink(missing_ok=True)
        if self.kind == "shell":
            _write(root / "etc" / "config" / "system", _UCI_SYSTEM.format(hostname=self.hostname))
            _write(root / "etc" / "config" / "network", _UCI_NETWORK)
            _write(root / "bin" / "uci", _UCI, 0o755)
            _write(root / "bin" / "sysupgrade", _SYSUPGRADE, 0o755)
            _write(root / "bin" / "reboot", _REBOOT, 0o755)
            return
        self.flash.mkdir(exist_ok=True)
        self.boot_image = f"c2900-universalk9-mz.SPA.{version}.bin"
        _write(self.flash / self.boot_image, f"VERSION={version}\nfake IOS image\n")
        self.running_config = [
            f"hostname {self.hostname}",
            "interface GigabitEthernet0/0",
            " ip address 10.0.0.1 255.255.255.0",
            "ntp server 10.0.0.254",
            "snmp-server community public RO",
        ]
        self.startup_config = list(self.running_config)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host``:``port`` (0: the OS picks; see :attr:`port`).

        A ``"shell"`` device listens on loopback only: it runs what an authenticated client
        sends as real commands on this machine."""
        if self._acceptor is not None:
            raise RuntimeError("device already started")
        if self.kind == "shell" and not _is_loopback(host):
            raise ValueError(
                f"a shell device runs what it is sent as real commands: it listens on a "
                f"loopback address only, not {host!r}"
            )
        sftp_factory: Any = True
        if self.kind == "ios":
            flash = os.fsencode(self.flash)

            def sftp_factory(chan: asyncssh.SSHServerChannel[bytes]) -> asyncssh.SFTPServer:
                return asyncssh.SFTPServer(chan, chroot=flash)

        self._acceptor = await asyncssh.listen(
            host,
            port,
            tunnel=self._listener,
            server_factory=lambda: _Server(self),
            server_host_keys=[self._host_key],
            process_factory=self._handle_process,
            sftp_factory=sftp_factory,
            # Bytes in, bytes out: the shell relays raw data, the CLI decodes itself.
            encoding=None,
            # The CLI echoes by itself, as the brief's device does; asyncssh's editor would too.
            line_editor=False,
        )
        assert self._listener.server is not None
        self.host, self.port = self._listener.server.sockets[0].getsockname()[:2]

    async def close(self) -> None:
        """Close the listener and every live connection; end every command and reboot."""
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
        if self._listener.server is not None:
            self._listener.server.close()
            await self._listener.server.wait_closed()
        conns = list(self._conns)
        for conn in conns:
            conn.abort()
        for conn in conns:
            await conn.wait_closed()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for proc in list(self._procs):
            await self._reap(proc)
        # asyncssh finishes its own per-channel tasks on the loop's next turns.
        for _ in range(3):
            await asyncio.sleep(0)

    async def __aenter__(self) -> FakeDevice:
        if self._acceptor is None:
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- sessions -----------------------------------------------------------------------------

    async def _handle_process(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            if self.kind == "shell":
                await self._shell_exec(process)
            elif process.command is None:
                await self._ios_interactive(process)
            else:
                await self._ios_exec(process)
        except (OSError, asyncssh.Error):
            pass  # the client (or a simulated reboot) went away mid-answer
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _before_answer(self, process: asyncssh.SSHServerProcess[bytes], cmd: str) -> bool:
        """Record ``cmd`` and apply faults; False when the connection was aborted instead."""
        self.commands.append(cmd)
        trigger = self.faults.disconnect_on
        if trigger is not None and trigger in cmd:
            process.channel.get_connection().abort()
            return False
        if self.faults.delay_s > 0:
            await asyncio.sleep(self.faults.delay_s)
        return True

    async def _shell_exec(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        command = process.command
        if command is None:
            process.stderr.write(b"interactive shells are not supported; send a command\n")
            process.exit(1)
            return
        if not await self._before_answer(process, command):
            return
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.root,
            env=self._env,
            # Its own process group, so a kill reaches what the command started too.
            start_new_session=True,
        )
        self._procs.add(proc)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        feed = asyncio.ensure_future(_pump_stdin(process, proc.stdin))
        work = asyncio.ensure_future(
            asyncio.gather(
                _pump_out(proc.stdout, process.stdout),
                _pump_out(proc.stderr, process.stderr),
                proc.wait(),
            )
        )
        closed = asyncio.ensure_future(process.channel.wait_closed())
        try:
            either: set[asyncio.Future[Any]] = {work, closed}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                return  # the client left: the finally below kills the command
            status = work.result()[2]
            if (self.root / ".reboot-requested").exists():
                (self.root / ".reboot-requested").unlink()
                self._begin_reboot(self._boot_shell)
            process.exit(status)
        finally:
            for t in (feed, work, closed):
                t.cancel()
            await asyncio.gather(feed, work, closed, return_exceptions=True)
            await self._reap(proc)

    async def _reap(self, proc: asyncio.subprocess.Process) -> None:
        """Kill ``proc`` (and its group) if still running and release its pipes."""
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        # communicate() drains and closes the pipes, which lets asyncio close the transport.
        with contextlib.suppress(OSError, ValueError):
            await proc.communicate()
        self._procs.discard(proc)

    async def _ios_exec(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        session = _IosSession(self)
        out: list[str] = []
        reload = False
        for line in (process.command or "").splitlines():
            if not await self._before_answer(process, line):
                return
            reply = session.handle(line)
            if reply.text:
                out.append(reply.text + "\n")
            reload = reload or reply.action == "reload"
        if out:
            process.stdout.write("".join(out).replace("\n", self.newline).encode())
        if reload:
            self._begin_reboot(self._boot_ios)
        process.exit(0)

    async def _ios_interactive(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        session = _IosSession(self)
        nl = self.newline

        def send(text: str) -> None:
            process.stdout.write(text.replace("\n", nl).encode())

        send(f"\n{self.ios_hostname} - simulated IOS device, authorized access only\n")
        send(session.prompt())
        splitter = _LineSplitter()
        while True:
            try:
                data = await process.stdin.read(_CHUNK)
            except (asyncssh.TerminalSizeChanged, asyncssh.BreakReceived, asyncssh.SignalReceived):
                continue
            if not data:
                process.exit(0)
                return
            for line in splitter.feed(data.decode("utf-8", "replace")):
                if not await self._before_answer(process, line):
                    return
                send(line + "\n")
                reply = session.handle(line)
                if reply.text:
                    send(reply.text + ("\n" if reply.newline else ""))
                if reply.action == "reload":
                    # The device goes down: no prompt; the reboot drops this connection.
                    self._begin_reboot(self._boot_ios)
                    return
                if reply.action == "logout":
                    process.exit(0)
                    return
                if reply.prompt:
                    send(session.prompt())
            await process.stdout.drain()

    # -- IOS command output -------------------------------------------------------------------

    def ios_show_version(self) -> str:
        """The ``show version`` text."""
        host = self.ios_hostname
        return textwrap.dedent(
            f"""\
            Cisco IOS Software, C2900 Software (C2900-UNIVERSALK9-M), Version {self.version}, RELEASE SOFTWARE (fc2)
            Technical Support: http://www.cisco.com/techsupport
            Copyright (c) 1986-2024 by Cisco Systems, Inc.

            ROM: System Bootstrap, Version 15.0(1r)M16, RELEASE SOFTWARE (fc1)

            {host} uptime is 1 hour, 2 minutes
            System returned to ROM by reload
            System image file is "flash:{self.boot_image}"

            Cisco CISCO2911/K9 (revision 1.0) with 479232K/45056K bytes of memory.
            Configuration register is 0x2102"""
        )

    def _flash_file(self, name: str) -> Path | None:
        path = (self.flash / name).resolve()
        if path.parent != self.flash.resolve() or not path.is_file():
            return None
        return path

    def ios_verify(self, name: str) -> str:
        """The ``verify /sha256 flash:<name>`` text."""
        path = self._flash_file(name)
        if path is None:
            return f"%Error opening flash:{name} (No such file or directory)"
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return f"verify /sha256 (flash:{name}) = {digest.hexdigest()}"

    def ios_dir(self) -> str:
        """The ``dir flash:`` text."""
        lines = ["Directory of flash:/", ""]
        used = 0
        for i, path in enumerate(sorted(self.flash.iterdir()), start=1):
            st = path.stat()
            used += st.st_size
            kind = "drw-" if path.is_dir() else "-rw-"
            stamp = time.strftime("%b %d %Y %H:%M:%S +00:00", time.gmtime(st.st_mtime))
            lines.append(f"{i:5d}  {kind} {st.st_size:>12d}  {stamp}  {path.name}")
        lines += ["", f"{_FLASH_SIZE} bytes total ({max(_FLASH_SIZE - used, 0)} bytes free)"]
        return "\n".join(lines)

    # -- reboots ------------------------------------------------------------------------------

    def _begin_reboot(self, boot: Callable[[], None]) -> None:
        if self._rebooting:
            return
        # Refuse from now on, so a client reconnecting right after the reply never reaches the
        # old system.
        self._rebooting = True
        task = asyncio.get_running_loop().create_task(self._reboot(boot))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reboot(self, boot: Callable[[], None]) -> None:
        try:
            await asyncio.sleep(_REBOOT_GRACE_S)
            for conn in list(self._conns):
                conn.abort()
            await asyncio.sleep(self.reboot_s)
            boot()
            self.boots += 1
        finally:
            self._rebooting = False

    def _boot_shell(self) -> None:
        pending = self.root / "etc" / "pending_version"
        if pending.exists():
            pending.replace(self.root / "etc" / "version")

    def _boot_ios(self) -> None:
        new = image_version(self.flash / self.boot_image) if self.boot_image else None
        if new is not None:
            (self.root / "etc" / "version").write_text(f"{new}\n")
        self.running_config = list(self.startup_config)


async def _pump_out(source: asyncio.StreamReader, sink: asyncssh.SSHWriter[bytes]) -> None:
    while data := await source.read(_CHUNK):
        sink.write(data)
        await sink.drain()


async def _pump_stdin(
    process: asyncssh.SSHServerProcess[bytes], sink: asyncio.StreamWriter
) -> None:
    try:
        while True:
            try:
                data = await process.stdin.read(_CHUNK)
            except (asyncssh.TerminalSizeChanged, asyncssh.BreakReceived, asyncssh.SignalReceived):
                continue  # out-of-band events of a PTY: not input
            if not data:
                break
            sink.write(data)
            await sink.drain()
    except (OSError, asyncssh.Error):
        pass  # the command stopped reading, or the client left
    finally:
        sink.close()


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) names this machine's loopback only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost, or "" (every interface)
        return False


@contextlib.asynccontextmanager
async def running_device(
    root: Path, *, host: str = "127.0.0.1", port: int = 0, **kwargs: Any
) -> AsyncIterator[FakeDevice]:
    """A started :class:`FakeDevice` rooted at ``root`` (``kwargs`` go to its constructor),
    closed on exit."""
    device = FakeDevice(root, **kwargs)
    await device.start(host, port)
    try:
        yield device
    finally:
        await device.close()
