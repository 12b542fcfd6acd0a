"""One working session on a device: commands (one channel each, or one interactive CLI),
configuration mode, and files over SFTP — all through the device's profile."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import asyncssh

from headless_ops.helpers.base import PermanentError, RetryableError
from headless_ops.helpers.ssh.connections import classify
from headless_ops.helpers.ssh.profiles import Fact, Profile, ProfileError, render_command

__all__ = ["DeviceSession", "parse_fact"]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def parse_fact(fact: Fact, output: str) -> str | None:
    """The value of ``fact`` in a command's output (``None`` when the pattern is absent)."""
    if fact.pattern is None:
        return output.strip()
    match = re.search(fact.pattern, output, re.MULTILINE)
    if match is None:
        return None
    if "value" in match.groupdict():
        return match.group("value").strip()
    return (match.group(1) if match.groups() else match.group(0)).strip()


class DeviceSession:
    """Run a profile's commands on one connection."""

    def __init__(
        self, conn: Any, profile: Profile, values: dict[str, str], command_timeout_s: float
    ) -> None:
        self.conn = conn
        self.profile = profile
        self.values = values
        self.timeout = command_timeout_s
        self._process: Any = None
        self._buffer = ""
        self._prompt = re.compile(profile.cli.prompt) if profile.cli else None
        self._error = (
            re.compile(profile.cli.error_pattern, re.MULTILINE)
            if profile.cli and profile.cli.error_pattern
            else None
        )
        self._confirm = (
            re.compile(profile.cli.confirm_pattern)
            if profile.cli and profile.cli.confirm_pattern
            else None
        )

    # -- rendering ---------------------------------------------------------------------

    def render(
        self, template: str, extra: dict[str, str] | None = None, *, path: bool = False
    ) -> str:
        """A command (or path) from a profile template, values quoted for this mode."""
        values = {**self.values, **(extra or {})}
        mode = "path" if path else self.profile.mode
        try:
            return render_command(template, values, mode=mode)
        except ProfileError as exc:
            raise PermanentError("profile_error", f"profile {self.profile.name}: {exc}") from None

    # -- commands ----------------------------------------------------------------------

    async def run(
        self,
        template: str,
        extra: dict[str, str] | None = None,
        *,
        stdin: str | None = None,
        expect_disconnect: bool = False,
    ) -> str:
        """Run one command; its output. A failing command is a permanent error naming it and
        its exit status; a lost session is retryable unless ``expect_disconnect``."""
        command = self.render(template, extra)
        try:
            if self.profile.mode == "cli":
                return await self._cli(command, expect_disconnect=expect_disconnect)
            result = await self.conn.run(command, input=stdin, check=False, timeout=self.timeout)
        except (asyncssh.TimeoutError, TimeoutError):
            raise RetryableError(
                "command_timeout", f"`{command}` did not finish in {self.timeout:g} s"
            ) from None
        except asyncssh.ProcessError as exc:  # pragma: no cover - check=False never raises it
            raise PermanentError("command_failed", f"`{command}` failed: {exc}") from None
        except (asyncssh.Error, OSError) as exc:
            if expect_disconnect:
                return ""
            raise classify(exc, f"`{command}`") from None
        status = result.exit_status
        if status is None and expect_disconnect:
            return str(result.stdout or "")
        if status != 0:
            detail = (str(result.stderr or "").strip().splitlines() or [""])[-1][:300]
            if status is None and result.exit_signal is None:
                raise RetryableError(
                    "connection_lost", f"`{command}`: session closed before it finished"
                )
            raise PermanentError(
                "command_failed",
                f"`{command}` exited with status {status}" + (f": {detail}" if detail else ""),
            )
        return str(result.stdout or "")

    async def configure(self, lines: list[str]) -> str:
        """Enter configuration mode, send ``lines`` one by one, leave it (``cli`` mode)."""
        assert self.profile.cli is not None
        out = [await self._cli(self.profile.cli.config_enter)]
        try:
            for line in lines:
                if line.strip() and not line.lstrip().startswith("!"):
                    out.append(await self._cli(self.render_line(line)))
        finally:
            if self._process is not None:
                out.append(await self._cli(self.profile.cli.config_exit))
        return "\n".join(o for o in out if o)

    def render_line(self, line: str) -> str:
        """A configuration line as it will be sent: one line, no control characters."""
        if re.search(r"[\x00-\x08\x0a-\x1f\x7f]", line):
            raise PermanentError(
                "invalid_configuration", "a configuration line holds control characters"
            )
        return line.rstrip()

    # -- interactive CLI ---------------------------------------------------------------

    async def _open_cli(self) -> None:
        assert self.profile.cli is not None
        self._process = await self.conn.create_process(
            term_type="vt100", term_size=(511, 24), encoding="utf-8", errors="replace"
        )
        await self._read_until_prompt("the first prompt")
        for line in self.profile.cli.setup:
            await self._cli(line)

    async def _read_until_prompt(self, what: str, expect_disconnect: bool = False) -> str:
        assert self._prompt is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            text = _ANSI.sub("", self._buffer).replace("\r", "")
            last = text.rsplit("\n", 1)[-1]
            if self._prompt.search(last):
                self._buffer = ""
                return text[: len(text) - len(last)]
            if self._confirm is not None and self._confirm.search(last):
                assert self.profile.cli is not None
                self._buffer = ""
                self._process.stdin.write(self.profile.cli.confirm_answer + "\n")
                if expect_disconnect:
                    # The device acts on the answer and drops the session (reload).
                    await self._drain_until_closed(deadline)
                    return text
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RetryableError(
                    "command_timeout", f"{what}: no prompt within {self.timeout:g} s"
                )
            try:
                chunk = await asyncio.wait_for(self._process.stdout.read(4096), remaining)
            except (asyncssh.Error, OSError, TimeoutError) as exc:
                if expect_disconnect:
                    return text
                if isinstance(exc, TimeoutError):
                    raise RetryableError(
                        "command_timeout", f"{what}: no prompt within {self.timeout:g} s"
                    ) from None
                raise classify(exc, what) from None
            if not chunk:
                if expect_disconnect:
                    return text
                raise RetryableError("connection_lost", f"{what}: the device closed the session")
            self._buffer += chunk

    async def _drain_until_closed(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            try:
                chunk = await asyncio.wait_for(
                    self._process.stdout.read(4096), deadline - loop.time()
                )
            except (asyncssh.Error, OSError, TimeoutError):
                return
            if not chunk:
                return

    async def _cli(self, command: str, *, expect_disconnect: bool = False) -> str:
        if self._process is None:
            await self._open_cli()
        self._process.stdin.write(command + "\n")
        raw = await self._read_until_prompt(f"`{command}`", expect_disconnect)
        lines = raw.split("\n")
        # Drop the echo of the command itself.
        if lines and lines[0].strip().endswith(command.strip()):
            lines = lines[1:]
        output = "\n".join(lines).strip("\n")
        if self._error is not None and self._error.search(output) and not expect_disconnect:
            first = next(ln for ln in output.splitlines() if self._error.search(ln))
            raise PermanentError(
                "command_failed", f"`{command}` was refused: {first.strip()[:300]}"
            )
        return output

    # -- files -------------------------------------------------------------------------

    async def fetch(self, path: str) -> bytes | None:
        """A file's bytes over SFTP (``None`` when it does not exist)."""
        try:
            async with self.conn.start_sftp_client() as sftp:
                try:
                    async with sftp.open(path, "rb") as remote:
                        return bytes(await remote.read())
                except asyncssh.SFTPNoSuchFile:
                    return None
        except asyncssh.SFTPError as exc:
            raise PermanentError("sftp_failed", f"reading {path}: {exc.reason}") from None
        except (asyncssh.Error, OSError) as exc:
            raise classify(exc, f"reading {path}") from None

    async def put_bytes(self, path: str, data: bytes) -> None:
        """Write a file atomically over SFTP: a temporary file beside it, then a rename."""
        tmp = f"{path}.headless-ops.tmp"
        try:
            async with self.conn.start_sftp_client() as sftp:
                async with sftp.open(tmp, "wb") as remote:
                    await remote.write(data)
                try:
                    await sftp.posix_rename(tmp, path)
                except asyncssh.SFTPOpUnsupported:
                    await sftp.remove(path)
                    await sftp.rename(tmp, path)
        except asyncssh.SFTPError as exc:
            raise PermanentError("sftp_failed", f"writing {path}: {exc.reason}") from None
        except (asyncssh.Error, OSError) as exc:
            raise classify(exc, f"writing {path}") from None

    async def put_file(self, local: str, path: str) -> None:
        """Upload a local file over SFTP."""
        try:
            async with self.conn.start_sftp_client() as sftp:
                await sftp.put(local, path)
        except asyncssh.SFTPError as exc:
            raise PermanentError("sftp_failed", f"uploading to {path}: {exc.reason}") from None
        except (asyncssh.Error, OSError) as exc:
            raise classify(exc, f"uploading to {path}") from None

    async def close(self) -> None:
        """End the interactive CLI, if one was opened (the connection stays)."""
        if self._process is not None:
            self._process.close()
            self._process = None
