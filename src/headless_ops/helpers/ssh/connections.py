"""SSH connections to devices: pinned host keys, timeouts, a cap, and reuse.

Host keys are checked during key exchange — before any password or key is offered — by
a client object that knows the pinned key. With nothing pinned and the device's policy
``pin_on_first_use``, the key offered is accepted and handed back to be pinned; with
``require``, connecting without a pinned key is refused.

At most ``max_connections`` connections are open at once across every device. A
connection is kept ``idle_s`` seconds after use for the next operation on the same
device; when the cap is reached, idle connections of other devices are closed first.
Nothing is read from ``~/.ssh`` (config, keys, known_hosts) and no agent is used or
forwarded: a server must behave the same whoever runs it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from headless_ops.helpers.base import HelperError, PermanentError, RetryableError

__all__ = ["ConnectParams", "ConnectionPool", "classify", "fingerprint"]


@dataclass(frozen=True, slots=True)
class ConnectParams:
    """Everything needed to open one device's connection (secrets included: never log)."""

    key: str  # tenant/device: the pool key
    host: str
    port: int
    username: str
    password: str | None = field(default=None, repr=False)
    private_key: str | None = field(default=None, repr=False)
    passphrase: str | None = field(default=None, repr=False)
    host_key: str | None = None
    host_key_policy: str = "require"

    @property
    def identity(self) -> tuple[object, ...]:
        """What must match for a pooled connection to be reused."""
        return (self.host, self.port, self.username, self.password, self.private_key, self.host_key)


def fingerprint(key_text: str) -> str:
    """SHA256 fingerprint of an OpenSSH public key text, as ``ssh-keygen -l`` prints it."""
    try:
        return str(asyncssh.import_public_key(key_text).get_fingerprint("sha256"))
    except (asyncssh.KeyImportError, ValueError):
        return "(unreadable key)"


class _PinningClient(asyncssh.SSHClient):
    """Accepts exactly the pinned host key, or (nothing pinned) records the one offered."""

    def __init__(self, pinned: Any) -> None:
        self.pinned = pinned
        self.offered: Any = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: Any) -> bool:
        self.offered = key
        if self.pinned is None:
            return True
        return bool(key == self.pinned)


def classify(exc: BaseException, what: str) -> HelperError:
    """An SSH or network failure as a typed operation error (secrets never in messages)."""
    if isinstance(exc, HelperError):
        return exc
    if isinstance(exc, asyncssh.PermissionDenied):
        return PermanentError("authentication_failed", f"{what}: authentication failed")
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return PermanentError("host_key_mismatch", f"{what}: host key not accepted")
    if isinstance(exc, asyncssh.KeyImportError):
        return PermanentError("bad_private_key", f"{what}: the private key cannot be read")
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return RetryableError("timeout", f"{what}: timed out")
    if isinstance(exc, ConnectionRefusedError):
        return RetryableError("connection_refused", f"{what}: connection refused")
    if isinstance(exc, asyncssh.ConnectionLost | asyncssh.DisconnectError | ConnectionError):
        return RetryableError("connection_lost", f"{what}: connection lost ({type(exc).__name__})")
    if isinstance(exc, asyncssh.ChannelOpenError):
        return RetryableError("channel_refused", f"{what}: the device refused a session")
    if isinstance(exc, OSError):
        return RetryableError("unreachable", f"{what}: {exc.strerror or type(exc).__name__}")
    if isinstance(exc, asyncssh.Error):
        return RetryableError("ssh_error", f"{what}: {type(exc).__name__}")
    return RetryableError("ssh_error", f"{what}: {type(exc).__name__}")


@dataclass
class _Idle:
    conn: Any
    identity: tuple[object, ...]
    since: float


class ConnectionPool:
    """Open, lend and reuse device connections under a global cap."""

    def __init__(
        self,
        *,
        max_connections: int,
        connect_timeout_s: float,
        keepalive_s: float,
        idle_s: float,
    ) -> None:
        self.max_connections = max_connections
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self.idle_s = idle_s
        self._open = 0
        self._idle: dict[str, list[_Idle]] = {}
        #: Operations waiting for a slot, first come first served (one wake-up per slot).
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._reaper: asyncio.Task[None] | None = None
        #: Connections opened so far (the benchmark compares reuse with none).
        self.opened = 0

    async def connect(self, params: ConnectParams) -> tuple[Any, str | None]:
        """A new connection, outside the pool; returns it and the host key offered when
        nothing was pinned (to be pinned by the caller)."""
        if params.host_key is None and params.host_key_policy == "require":
            raise PermanentError(
                "host_key_required",
                f"{params.host}:{params.port}: no host key is pinned and the device's "
                "policy requires one (set connection.host_key)",
            )
        pinned = None
        if params.host_key:
            try:
                pinned = asyncssh.import_public_key(params.host_key)
            except (asyncssh.KeyImportError, ValueError):
                raise PermanentError("bad_host_key", "the pinned host key cannot be read") from None
        client_keys: Any = None
        if params.private_key:
            try:
                client_keys = [asyncssh.import_private_key(params.private_key, params.passphrase)]
            except (asyncssh.KeyImportError, ValueError):
                raise PermanentError("bad_private_key", "the private key cannot be read") from None
        client = _PinningClient(pinned)
        what = f"ssh {params.username}@{params.host}:{params.port}"
        try:
            conn, _ = await asyncio.wait_for(
                asyncssh.create_connection(
                    lambda: client,
                    params.host,
                    params.port,
                    username=params.username,
                    password=params.password,
                    client_keys=client_keys,
                    passphrase=None,
                    known_hosts=([], [], []),  # every key goes through _PinningClient
                    config=None,
                    agent_path=None,
                    agent_forwarding=False,
                    preferred_auth="publickey,password,keyboard-interactive"
                    if client_keys
                    else "password,keyboard-interactive",
                    keepalive_interval=self.keepalive_s or None,
                    keepalive_count_max=3,
                    connect_timeout=self.connect_timeout_s,
                    login_timeout=self.connect_timeout_s,
                ),
                self.connect_timeout_s * 2,
            )
        except asyncssh.HostKeyNotVerifiable:
            offered = client.offered
            got = offered.get_fingerprint("sha256") if offered is not None else "unknown"
            raise PermanentError(
                "host_key_mismatch",
                f"{what}: host key mismatch — the device offered {got}, "
                f"pinned is {fingerprint(params.host_key or '')}; refusing to connect",
            ) from None
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise classify(exc, what) from None
        self.opened += 1
        offered_text = None
        if pinned is None and client.offered is not None:
            # "<type> <base64>" without the comment or the newline.
            exported = client.offered.export_public_key("openssh").decode()
            offered_text = " ".join(exported.split()[:2])
        return conn, offered_text

    @contextlib.asynccontextmanager
    async def lease(
        self, params: ConnectParams, *, fresh: bool = False
    ) -> AsyncIterator[tuple[Any, str | None]]:
        """A connection for one operation, from the pool when one is idle; returned to the
        pool afterwards unless the block failed or the pool keeps nothing."""
        conn = None if fresh else self._take(params)
        offered = None
        if conn is None:
            await self._reserve()
            try:
                conn, offered = await self.connect(params)
            except BaseException:
                await self._release_slot()
                raise
        ok = False
        try:
            yield conn, offered
            ok = True
        finally:
            if ok and self.idle_s > 0 and not _closing(conn):
                self._idle.setdefault(params.key, []).append(
                    _Idle(conn, params.identity, time.monotonic())
                )
                self._ensure_reaper()
                self._wake_one()  # a waiter may now evict this idle connection
            else:
                conn.abort() if not ok else conn.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.wait_closed(), 5)
                await self._release_slot()

    def _take(self, params: ConnectParams) -> Any:
        idle = self._idle.get(params.key)
        while idle:
            entry = idle.pop()
            if entry.identity == params.identity and not _closing(entry.conn):
                return entry.conn
            entry.conn.close()
            self._open -= 1
        return None

    async def _reserve(self) -> None:
        while self._open >= self.max_connections and not self._evict_one():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # pass on the wake-up this task will not use
                raise
        self._open += 1

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _evict_one(self) -> bool:
        oldest: tuple[float, str] | None = None
        for key, entries in self._idle.items():
            if entries and (oldest is None or entries[0].since < oldest[0]):
                oldest = (entries[0].since, key)
        if oldest is None:
            return False
        entry = self._idle[oldest[1]].pop(0)
        entry.conn.close()
        self._open -= 1
        return True

    async def _release_slot(self) -> None:
        self._open -= 1
        self._wake_one()

    def discard(self, key: str) -> None:
        """Forget (close) a device's idle connections: after a reboot or a failure."""
        for entry in self._idle.pop(key, []):
            entry.conn.close()
            self._open -= 1
            self._wake_one()

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        while any(self._idle.values()):
            await asyncio.sleep(max(0.05, self.idle_s / 4))
            cutoff = time.monotonic() - self.idle_s
            for key in list(self._idle):
                keep = []
                for entry in self._idle[key]:
                    if entry.since < cutoff or _closing(entry.conn):
                        entry.conn.close()
                        self._open -= 1
                    else:
                        keep.append(entry)
                if keep:
                    self._idle[key] = keep
                else:
                    del self._idle[key]
            for _ in range(self.max_connections - self._open):
                self._wake_one()

    async def aclose(self) -> None:
        """Close every idle connection and stop the reaper."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        conns = [e.conn for entries in self._idle.values() for e in entries]
        self._idle.clear()
        for conn in conns:
            conn.close()
            self._open -= 1
        for conn in conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 5)

    @property
    def open_connections(self) -> int:
        """Connections open now (in use and idle)."""
        return self._open


def _closing(conn: Any) -> bool:
    transport = getattr(conn, "_transport", None)
    return transport is None or transport.is_closing()
