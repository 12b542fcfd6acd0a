"""OpenSSH's real ``sshd`` as a throwaway "Linux device" for SSH tests.

:class:`Sshd` writes an ``sshd_config`` into a fresh temp dir, generates an ed25519 host key
with ``ssh-keygen`` and runs ``/usr/sbin/sshd -D -e -f <config>`` on a free loopback port.

* As root (CI): a throwaway user ``hoptest<pid>x<n>`` is created with ``useradd`` (home = a temp
  dir, shell ``/bin/sh``), given a random password with ``chpasswd``, and deleted with
  ``userdel`` on :meth:`Sshd.stop` — also when the test failed. Password and key logins work.
* Not root: sshd runs unprivileged as the current user, which is the only one it can log in;
  key login only. The login directory is then the user's real home, not :attr:`SshdDevice.home`
  (SFTP still starts there): use absolute paths (:meth:`SshdDevice.path`).

sshd's output (``-e``, ``LogLevel VERBOSE``) goes to a file, never a pipe — so a chatty test can
not fill a pipe and stall sshd — readable with :meth:`SshdDevice.log`.

Use the fixture by importing it into a test module (``tests/conftest.py`` does not register it)::

    from tests.support.sshd import SshdDevice, sshd_device  # noqa: F401

    async def test_x(sshd_device: SshdDevice) -> None:  # noqa: F811
        ...
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["SSHD", "Sshd", "SshdDevice", "sshd_device"]

#: Debian's openssh-server binary. sshd refuses to re-exec itself from a relative path.
SSHD = Path("/usr/sbin/sshd")
#: sshd's privilege separation directory (Debian's build), needed when it runs as root.
PRIVSEP_DIR = Path("/run/sshd")

_USER_PREFIX = "hoptest"
_USER_RE = re.compile(rf"^{_USER_PREFIX}(\d+)x\d+$")
_STATE_PREFIX = "hop-sshd-"
_counter = itertools.count()


@dataclass
class SshdDevice:
    """How to reach a running :class:`Sshd`, and the files the device "owns"."""

    host: str
    port: int
    username: str
    #: Set when the fixture could give the user a password (root only).
    password: str | None
    #: OpenSSH private key text (ed25519, unencrypted) that logs in as ``username``.
    private_key: str
    public_key: str
    #: The server's public host key, ``"ssh-ed25519 AAAA…"`` without comment.
    host_key: str
    #: The user's home: a temp dir holding the device's files (configs, version, uploads).
    home: Path
    uid: int = field(default_factory=os.geteuid)
    gid: int = field(default_factory=os.getegid)
    log_file: Path | None = None

    def path(self, *parts: str) -> Path:
        """``home / parts``."""
        return self.home.joinpath(*parts)

    def mkdir(self, rel_path: str) -> Path:
        """Create ``home/rel_path`` (and missing parents) owned by the device's user."""
        target = self._inside(rel_path)
        missing = [p for p in (target, *target.parents) if not p.exists()]
        for directory in reversed(missing):
            directory.mkdir(mode=0o755)
            self._chown(directory)
        return target

    def write(self, rel_path: str, data: str | bytes, mode: int = 0o644) -> Path:
        """Write ``home/rel_path`` as a file the device's user owns (parents created too)."""
        target = self._inside(rel_path)
        if target.parent != self.home:
            self.mkdir(str(target.parent.relative_to(self.home)))
        if isinstance(data, str):
            target.write_text(data, encoding="utf-8")
        else:
            target.write_bytes(data)
        target.chmod(mode)
        self._chown(target)
        return target

    def log(self) -> str:
        """Everything sshd (and its per-connection children) logged so far."""
        if self.log_file is None or not self.log_file.exists():
            return ""
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    def _inside(self, rel_path: str) -> Path:
        rel = PurePosixPath(rel_path)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ValueError(f"{rel_path!r} is not a relative path inside the device's home")
        return self.home.joinpath(*rel.parts)

    def _chown(self, target: Path) -> None:
        # Root writes the test's files; the device's user must own them to change them.
        if os.geteuid() == 0:
            os.chown(target, self.uid, self.gid)


class Sshd:
    """A private sshd: ``start()``/``stop()``, or ``with Sshd() as dev:``.

    ``tmp_dir`` is where the throwaway directory (config, keys, log, home) is made; default the
    system temp dir. As root it must be traversable by others (the user reads its home and
    ``authorized_keys`` through it), which pytest's ``tmp_path`` (under a 0700 dir) is not.
    """

    def __init__(self, tmp_dir: Path | None = None, *, start_timeout: float = 20.0) -> None:
        self.tmp_dir = tmp_dir
        self.start_timeout = start_timeout
        self.as_root = os.geteuid() == 0
        self.state: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.username: str | None = None
        self._created_user = False
        self._device: SshdDevice | None = None

    @property
    def device(self) -> SshdDevice:
        """The running device; raises if :meth:`start` has not succeeded."""
        if self._device is None:
            raise RuntimeError("sshd is not running")
        return self._device

    def __enter__(self) -> SshdDevice:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> SshdDevice:
        """Create the user (as root), keys and config, start sshd and wait until it listens."""
        if self._device is not None:
            raise RuntimeError("sshd already started")
        if not SSHD.exists():
            raise RuntimeError(f"{SSHD} not found (install Debian's openssh-server)")
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> SshdDevice:
        state = Path(tempfile.mkdtemp(prefix=_STATE_PREFIX, dir=self.tmp_dir)).resolve()
        self.state = state
        if re.search(r"\s", str(state)):
            # sshd_config's Subsystem/AuthorizedKeysFile values are split on whitespace.
            raise ValueError(f"sshd state dir {state} contains whitespace")
        # 0755: the login user (not root) opens authorized_keys and reaches home through it.
        state.chmod(0o755)
        if self.as_root:
            _check_traversable(state)
        home = state / "home"
        home.mkdir(mode=0o700)

        host_key = _generate_host_key(state / "ssh_host_ed25519_key")
        private_key, public_key = _generate_client_key()
        authorized_keys = state / "authorized_keys"
        authorized_keys.write_text(public_key + "\n", encoding="utf-8")
        authorized_keys.chmod(0o644)

        password: str | None = None
        if self.as_root:
            _reap_stale_users()
            self.username = f"{_USER_PREFIX}{os.getpid()}x{next(_counter)}"
            password = secrets.token_urlsafe(18)
            self._create_user(self.username, home, password)
            entry = pwd.getpwnam(self.username)
            os.chown(home, entry.pw_uid, entry.pw_gid)
            PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        else:
            entry = pwd.getpwuid(os.geteuid())
            self.username = entry.pw_name

        log_file = state / "sshd.log"
        last_error = ""
        # A free port can be taken between probing and sshd's bind: then retry with another.
        for _ in range(3):
            port = _free_port()
            config = state / "sshd_config"
            config.write_text(self._config(state, home, port, self.username), encoding="utf-8")
            with log_file.open("ab") as log:
                self.process = subprocess.Popen(
                    [str(SSHD), "-D", "-e", "-f", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            last_error = self._wait_listening(port, log_file)
            if not last_error:
                self._device = SshdDevice(
                    host="127.0.0.1",
                    port=port,
                    username=self.username,
                    password=password,
                    private_key=private_key,
                    public_key=public_key,
                    host_key=host_key,
                    home=home,
                    uid=entry.pw_uid,
                    gid=entry.pw_gid,
                    log_file=log_file,
                )
                return self._device
            self._stop_process()
            if "Address already in use" not in last_error:
                break
        raise RuntimeError(last_error)

    def _config(self, state: Path, home: Path, port: int, username: str) -> str:
        # As root, home is the user's passwd home already; unprivileged, the login directory is
        # the real home, so at least SFTP's relative paths start in the device's home.
        sftp = "internal-sftp" if self.as_root else f"internal-sftp -d {home}"
        lines = [
            f"ListenAddress 127.0.0.1:{port}",
            f"HostKey {state / 'ssh_host_ed25519_key'}",
            f"PidFile {state / 'sshd.pid'}",
            "UsePAM no",
            "StrictModes no",
            f"PasswordAuthentication {'yes' if self.as_root else 'no'}",
            "PermitEmptyPasswords no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            f"AuthorizedKeysFile {state / 'authorized_keys'}",
            "AllowAgentForwarding no",
            "AllowTcpForwarding no",
            "X11Forwarding no",
            "PermitTunnel no",
            f"Subsystem sftp {sftp}",
            "PermitRootLogin no",
            f"AllowUsers {username}",
            "LogLevel VERBOSE",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
        ]
        return "\n".join(lines) + "\n"

    def _wait_listening(self, port: int, log_file: Path) -> str:
        """Empty once sshd logged that it listens and the port accepts; else why it does not."""
        assert self.process is not None
        marker = f"Server listening on 127.0.0.1 port {port}"
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            log = log_file.read_text(encoding="utf-8", errors="replace")
            if self.process.poll() is not None:
                return (
                    f"sshd exited with status {self.process.returncode} before listening "
                    f"on port {port}; its output:\n{log}"
                )
            if marker in log:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        return ""
                except OSError:
                    pass
            time.sleep(0.02)
        log = log_file.read_text(encoding="utf-8", errors="replace")
        return (
            f"sshd did not listen on 127.0.0.1:{port} within {self.start_timeout} s; "
            f"its output:\n{log}"
        )

    def _create_user(self, name: str, home: Path, password: str) -> None:
        _run(
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            str(home),
            "--shell",
            "/bin/sh",
            "--comment",
            "headless-ops test device",
            name,
        )
        self._created_user = True
        # A useradd'd account is locked ("!"), and with UsePAM no sshd refuses every login to
        # a locked account, keys included: the password unlocks it.
        _run("chpasswd", stdin=f"{name}:{password}\n")

    def stop(self) -> None:
        """Stop sshd and every connection it serves, delete the user (root) and the files."""
        try:
            self._stop_process()
        finally:
            try:
                if self._created_user and self.username is not None:
                    _delete_user(self.username)
                    self._created_user = False
            finally:
                if self.state is not None:
                    shutil.rmtree(self.state, ignore_errors=True)
                    self.state = None
                self._device = None

    def _stop_process(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        # Each connection is served by a forked child in its own session: collect them before
        # the listener dies (they are then re-parented) so none outlives the test.
        victims = _children(process.pid)
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if self._created_user and self.username is not None:
            with contextlib.suppress(KeyError):
                victims |= _processes_of(pwd.getpwnam(self.username).pw_uid)
        _terminate(victims)


@pytest.fixture
def sshd_device() -> Iterator[SshdDevice]:
    """A fresh sshd, user and home per test (starting one takes a fraction of a second)."""
    if not SSHD.exists():
        pytest.skip(f"{SSHD} is absent (Debian's openssh-server is not installed)")
    with Sshd() as device:
        yield device


def _run(*cmd: str, stdin: str | None = None) -> None:
    result = subprocess.run(
        list(cmd), input=stdin, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed with status {result.returncode}: "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _check_traversable(path: Path) -> None:
    for directory in path.parents:
        if not directory.stat().st_mode & 0o001:
            raise ValueError(
                f"{directory} is not traversable by others, so the test user could not reach "
                f"its home under {path}: pass a tmp_dir like /tmp (or none)"
            )


def _generate_host_key(path: Path) -> str:
    """A fresh ed25519 host key from ssh-keygen; returns its public half without comment."""
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise RuntimeError("ssh-keygen not found (install Debian's openssh-client)")
    _run(keygen, "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path))
    algorithm, blob = path.with_name(path.name + ".pub").read_text(encoding="utf-8").split()[:2]
    return f"{algorithm} {blob}"


def _generate_client_key() -> tuple[str, str]:
    """(OpenSSH private key text, ``ssh-ed25519 AAAA…`` public key) of a new ed25519 key."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return private, public


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is parenthesised and may itself contain spaces or ")".
    return text[text.rindex(")") + 2 :].split()


def _pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def _children(pid: int) -> set[int]:
    found = set()
    for candidate in _pids():
        fields = _stat_fields(candidate)
        if fields is not None and int(fields[1]) == pid:
            found.add(candidate)
    return found


def _processes_of(uid: int) -> set[int]:
    found = set()
    for candidate in _pids():
        with contextlib.suppress(OSError):
            if os.stat(f"/proc/{candidate}").st_uid == uid:
                found.add(candidate)
    return found


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    # A zombie is dead: outside its parent (re-parented to init, maybe a container's init
    # that never reaps) nobody here can wait for it.
    return fields is not None and fields[0] not in ("Z", "X")


def _terminate(pids: set[int], timeout: float = 10.0) -> None:
    """SIGTERM ``pids`` (all started by this sshd), then SIGKILL whatever is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = {pid for pid in pids if _alive(pid)}
            if not pids:
                return
            time.sleep(0.02)


def _delete_user(name: str) -> None:
    """userdel ``name`` (and its group), retrying while its last processes exit."""
    deadline = time.monotonic() + 10
    while True:
        try:
            _run("userdel", name)
            break
        except RuntimeError:
            if time.monotonic() > deadline:
                # Still "used by process": remove it anyway rather than leak the account.
                _run("userdel", "--force", name)
                break
            time.sleep(0.1)
    # userdel removes the user's own group only when USERGROUPS_ENAB is set (Debian's default).
    if subprocess.run(["getent", "group", name], capture_output=True, check=False).returncode == 0:
        _run("groupdel", name)


def _reap_stale_users() -> None:
    """Delete users left by a test process that was killed (its pid no longer exists)."""
    for entry in pwd.getpwall():
        match = _USER_RE.match(entry.pw_name)
        if match is None or Path(f"/proc/{match.group(1)}").exists():
            continue
        with contextlib.suppress(RuntimeError):
            _run("userdel", "--force", entry.pw_name)
        with contextlib.suppress(RuntimeError):
            _run("groupdel", entry.pw_name)
        state = Path(entry.pw_dir).parent
        if state.name.startswith(_STATE_PREFIX):
            shutil.rmtree(state, ignore_errors=True)
