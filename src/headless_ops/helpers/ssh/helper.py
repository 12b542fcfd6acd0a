"""The ``ssh`` helper: each operation type done the device profile's way."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from headless_ops.artifacts.templates import RenderError, device_facts, render_context
from headless_ops.config import Settings
from headless_ops.domain.devices import DeviceStatus
from headless_ops.domain.operations import OperationType
from headless_ops.helpers.base import (
    DeviceView,
    HelperError,
    OperationContext,
    PermanentError,
    RetryableError,
    StatusReport,
)
from headless_ops.helpers.resources import HelperResources
from headless_ops.helpers.ssh.connections import ConnectionPool, ConnectParams
from headless_ops.helpers.ssh.profiles import (
    FirmwareSpec,
    Profile,
    ProfileError,
    ProfileLibrary,
    Source,
    Step,
)
from headless_ops.helpers.ssh.session import DeviceSession, parse_fact
from headless_ops.timeutil import utcnow

__all__ = ["SshHelper"]


def _filter(text: str, ignore: list[str]) -> str:
    if not ignore:
        return text
    patterns = [re.compile(p) for p in ignore]
    return "\n".join(ln for ln in text.splitlines() if not any(p.search(ln) for p in patterns))


class SshHelper:
    """Routers, switches, firewalls and Linux hosts over SSH, driven by platform profiles."""

    protocol = "ssh"
    supported_operations = frozenset(
        {
            OperationType.FIRMWARE_UPDATE,
            OperationType.CONFIGURATION_SYNC,
            OperationType.BACKUP_CONFIGURATION,
            OperationType.REBOOT,
            OperationType.GET_PARAMETERS,
        }
    )

    def __init__(self) -> None:
        self.resources: HelperResources | None = None
        self.settings = Settings()
        self.pool: ConnectionPool | None = None
        self.profiles = ProfileLibrary()
        #: Host keys pinned by this process (the scheduler's device cache may be older).
        self._pinned: dict[str, str] = {}

    def bind(self, resources: HelperResources) -> None:
        """Take the server's settings and stores."""
        self.resources = resources
        self.settings = resources.settings
        self.profiles = ProfileLibrary(self.settings.profiles_dir)

    def _pool(self) -> ConnectionPool:
        if self.pool is None:
            s = self.settings
            self.pool = ConnectionPool(
                max_connections=s.ssh_max_connections,
                connect_timeout_s=s.ssh_connect_timeout_s,
                keepalive_s=s.ssh_keepalive_s,
                idle_s=s.ssh_idle_s,
            )
        return self.pool

    async def aclose(self) -> None:
        """Close pooled connections."""
        if self.pool is not None:
            await self.pool.aclose()

    # -- connections -------------------------------------------------------------------

    def _params(self, device: DeviceView) -> ConnectParams:
        c = device.connection
        key = f"{device.tenant_id}/{device.id}"
        return ConnectParams(
            key=key,
            host=c["host"],
            port=int(c.get("port", 22)),
            username=c["username"],
            password=c.get("password"),
            private_key=c.get("private_key"),
            passphrase=c.get("private_key_passphrase"),
            host_key=c.get("host_key") or self._pinned.get(key),
            host_key_policy=c.get("host_key_policy", "require"),
        )

    @contextlib.asynccontextmanager
    async def _connection(self, device: DeviceView, *, fresh: bool = False) -> AsyncIterator[Any]:
        params = self._params(device)
        async with self._pool().lease(params, fresh=fresh) as (conn, offered):
            if offered is not None:
                await self._pin(device, params, offered, conn)
            yield conn

    async def _pin(
        self, device: DeviceView, params: ConnectParams, offered: str, conn: Any
    ) -> None:
        pinned: str | None = offered
        if self.resources is not None:
            pinned = await self.resources.devices.pin_host_key(device.tenant_id, device.id, offered)
        if pinned is not None and pinned.split()[:2] != offered.split()[:2]:
            conn.abort()
            raise PermanentError(
                "host_key_mismatch",
                f"{params.host}:{params.port}: the device offered a host key other than the one "
                "pinned meanwhile; refusing to continue",
            )
        self._pinned[params.key] = offered

    def _profile(self, device: DeviceView) -> Profile:
        name = str(device.connection.get("profile", "linux"))
        try:
            return self.profiles.load(name)
        except ProfileError as exc:
            raise PermanentError("profile_error", str(exc)) from None

    @staticmethod
    def _values(profile: Profile, device: DeviceView) -> dict[str, str]:
        return {**profile.vars, **dict(device.connection.get("profile_vars") or {})}

    @contextlib.asynccontextmanager
    async def _session(
        self, device: DeviceView, profile: Profile, *, fresh: bool = False
    ) -> AsyncIterator[DeviceSession]:
        """A session on a pooled connection (``fresh``: a new one, e.g. after a reboot)."""
        async with self._connection(device, fresh=fresh) as conn:
            session = DeviceSession(
                conn, profile, self._values(profile, device), self.settings.ssh_command_timeout_s
            )
            try:
                yield session
            finally:
                await session.close()

    # -- status ------------------------------------------------------------------------

    async def refresh_status(self, device: DeviceView) -> StatusReport:
        """Connect, read the running version; offline with the reason when that fails."""
        try:
            profile = self._profile(device)
            async with self._session(device, profile) as session:
                version = await self._fact(session, "version")
        except HelperError as exc:
            return StatusReport(DeviceStatus.OFFLINE, detail=f"{exc.code}: {exc.message}")
        return StatusReport(
            DeviceStatus.ONLINE,
            seen_at=utcnow(),
            firmware_version=version,
            facts={"profile": profile.name},
        )

    @staticmethod
    async def _fact(session: DeviceSession, name: str) -> str | None:
        fact = session.profile.facts.get(name)
        if fact is None:
            return None
        return parse_fact(fact, await session.run(fact.command))

    # -- operations --------------------------------------------------------------------

    async def execute(self, context: OperationContext) -> dict[str, Any]:
        """Run one attempt of an operation on its device."""
        device = context.device
        profile = self._profile(device)
        op = context.operation_type
        if op not in self.supported_operations or not profile.supports(op.value):
            raise PermanentError(
                "unsupported_by_profile",
                f"profile {profile.name!r} does not define {op.value}",
            )
        handler = {
            OperationType.BACKUP_CONFIGURATION: self._backup,
            OperationType.CONFIGURATION_SYNC: self._sync,
            OperationType.FIRMWARE_UPDATE: self._firmware,
            OperationType.REBOOT: self._reboot,
            OperationType.GET_PARAMETERS: self._get_parameters,
        }[op]
        result = await handler(context, profile)
        result.setdefault("profile", profile.name)
        return result

    def _need_resources(self) -> HelperResources:
        if self.resources is None:
            raise PermanentError(
                "not_configured", "the ssh helper was not given the server's stores"
            )
        return self.resources

    async def _read_source(self, session: DeviceSession, source: Source) -> str:
        if source.fetch is not None:
            data = await session.fetch(session.render(source.fetch, path=True))
            text = (data or b"").decode("utf-8", errors="replace")
        else:
            assert source.command is not None
            text = await session.run(source.command)
        return _filter(text, source.ignore)

    async def _backup(self, context: OperationContext, profile: Profile) -> dict[str, Any]:
        resources = self._need_resources()
        spec = profile.operations.backup_configuration
        assert spec is not None
        params = context.parameters
        async with self._session(context.device, profile) as session:
            if spec.fetch is not None:
                path = session.render(spec.fetch, path=True)
                data = await session.fetch(path)
                if data is None:
                    raise PermanentError("file_not_found", f"{path} does not exist on the device")
                method = "sftp"
            else:
                assert spec.command is not None
                data = _filter(await session.run(spec.command), spec.ignore).encode()
                method = "command"
        saved = await resources.backups.save(
            tenant_id=context.device.tenant_id,
            device_id=context.device.id,
            operation_id=context.operation_id,
            data=data,
            location=str(params["backup_location"]),
            compression=bool(params.get("compression", False)),
            retention_days=params.get("retention_days"),
            method=method,
        )
        return saved

    async def _sync(self, context: OperationContext, profile: Profile) -> dict[str, Any]:
        resources = self._need_resources()
        spec = profile.operations.configuration_sync
        assert spec is not None
        name = str(context.parameters["config_template"])
        template = await resources.templates.get(context.device.tenant_id, name)
        if template is None:
            raise PermanentError("template_not_found", f"no configuration template named {name!r}")
        async with self._session(context.device, profile) as session:
            facts: dict[str, Any] = {}
            for fact_name in profile.facts:
                with contextlib.suppress(HelperError):
                    facts[fact_name] = await self._fact(session, fact_name)
            ctx = render_context(
                device_facts(context.device), facts, dict(context.parameters.get("variables") or {})
            )
            try:
                rendered = template.render_text(ctx)
            except RenderError as exc:
                raise PermanentError("template_error", str(exc)) from None
            before = await self._read_source(session, spec.read)
            if spec.push.upload is not None and before == rendered:
                return {"template": name, "changed": False, "diff": "", "pushed": False}
            if context.cancel.is_set():
                return {"template": name, "changed": False, "pushed": False, "cancelled": True}
            if spec.push.upload is not None:
                await session.put_bytes(
                    session.render(spec.push.upload, path=True), rendered.encode()
                )
            elif spec.push.command is not None:
                await session.run(spec.push.command, stdin=rendered)
            else:
                await session.configure(rendered.splitlines())
            for command in spec.after:
                await session.run(command)
            after = await self._read_source(session, spec.read)
        diff = (
            "".join(
                difflib.unified_diff(
                    before.splitlines(keepends=True),
                    after.splitlines(keepends=True),
                    "before",
                    "after",
                )
            )
            if before != after
            else ""
        )
        added = sum(
            1 for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")
        )
        removed = sum(
            1 for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")
        )
        return {
            "template": name,
            "changed": before != after,
            "diff": diff,
            "lines_added": added,
            "lines_removed": removed,
            "pushed": True,
        }

    async def _firmware(self, context: OperationContext, profile: Profile) -> dict[str, Any]:
        resources = self._need_resources()
        spec = profile.operations.firmware_update
        assert spec is not None
        target = str(context.parameters["firmware_version"])
        force = bool(context.parameters.get("force", False))
        auto_reboot = bool(context.parameters.get("auto_reboot", True))
        device = context.device
        async with self._session(device, profile) as session:
            previous = await self._fact(session, "version")
            if previous is not None:
                context.facts["firmware_version"] = previous
            if previous == target and not force:
                return {
                    "skipped": True,
                    "reason": f"the device already runs {target}",
                    "firmware_version": previous,
                }
            image = await resources.firmware.find(
                device.tenant_id, target, device.connection.get("product_class")
            )
            if image is None:
                pc = device.connection.get("product_class")
                raise PermanentError(
                    "firmware_not_found",
                    f"the firmware repository has no image of version {target}"
                    + (f" for product class {pc}" if pc else ""),
                )
            extra = {"image_name": image.filename, "version": target}
            remote = session.render(spec.upload, extra, path=True)
            extra["image_path"] = remote
            started = time.monotonic()
            await session.put_file(str(image.path), remote)
            upload_s = time.monotonic() - started
            reported = parse_fact(spec.checksum, await session.run(spec.checksum.command, extra))
            if reported is None or reported.lower() != image.sha256:
                raise RetryableError(
                    "checksum_mismatch",
                    f"the device computed SHA-256 {reported or '(none)'} for {remote}, "
                    f"the image's is {image.sha256}",
                )
            if context.cancel.is_set():
                return {
                    "cancelled_before": "install",
                    "uploaded": remote,
                    "previous_version": previous,
                }
            await self._install(session, spec, extra)
            rebooting = spec.reboots_itself
            if auto_reboot and not spec.reboots_itself:
                reboot = profile.operations.reboot
                if reboot is None:
                    raise PermanentError(
                        "unsupported_by_profile", f"profile {profile.name!r} cannot reboot"
                    )
                await session.run(reboot.command, expect_disconnect=True)
                rebooting = True
            if not rebooting:
                version = await self._fact(session, "version")
        result: dict[str, Any] = {
            "previous_version": previous,
            "image_id": image.id,
            "sha256": image.sha256,
            "uploaded_to": remote,
            "upload_s": round(upload_s, 3),
            "rebooted": rebooting,
        }
        if rebooting:
            version, downtime = await self._wait_back(device, profile)
            result["downtime_s"] = round(downtime, 3)
        if version is not None:
            context.facts["firmware_version"] = version
        result["firmware_version"] = version
        if version == target:
            result["version_verified"] = True
            return result
        if not rebooting:
            # Installed; the new version runs after the reboot the operator chose not to do.
            result.update(version_verified=False, pending_reboot=True)
            return result
        raise PermanentError(
            "version_mismatch",
            f"after the update the device reports version {version or '(none)'}, expected {target}",
        )

    @staticmethod
    async def _install(session: DeviceSession, spec: FirmwareSpec, extra: dict[str, str]) -> None:
        for step in spec.install:
            if isinstance(step, str):
                step = Step(command=step)
            if step.config is not None:
                await session.configure([session.render(step.config, extra)])
            elif step.command is not None:
                await session.run(step.command, extra, expect_disconnect=spec.reboots_itself)

    async def _wait_back(self, device: DeviceView, profile: Profile) -> tuple[str | None, float]:
        """After a reboot: wait (bounded) for the device to go away and come back; returns
        the version it then reports and how long it was gone."""
        pool = self._pool()
        key = f"{device.tenant_id}/{device.id}"
        pool.discard(key)
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.settings.ssh_reboot_wait_s
        poll = self.settings.ssh_reboot_poll_s
        went_down = False
        while loop.time() < deadline:
            try:
                async with self._session(device, profile, fresh=True) as session:
                    if went_down:
                        version = await self._fact(session, "version")
                        return version, loop.time() - started
            except RetryableError:
                went_down = True
            await asyncio.sleep(min(poll, max(0.0, deadline - loop.time())))
        raise PermanentError(
            "reboot_timeout",
            f"the device did not come back within {self.settings.ssh_reboot_wait_s:g} s "
            + ("of going down" if went_down else "(it never went down)"),
        )

    async def _reboot(self, context: OperationContext, profile: Profile) -> dict[str, Any]:
        spec = profile.operations.reboot
        assert spec is not None
        async with self._session(context.device, profile) as session:
            previous = await self._fact(session, "version")
            await session.run(spec.command, expect_disconnect=True)
        version, downtime = await self._wait_back(context.device, profile)
        if version is not None:
            context.facts["firmware_version"] = version
        return {
            "rebooted": True,
            "downtime_s": round(downtime, 3),
            "firmware_version": version,
            "previous_version": previous,
        }

    async def _get_parameters(self, context: OperationContext, profile: Profile) -> dict[str, Any]:
        spec = profile.operations.get_parameters
        assert spec is not None
        wanted: list[str] = []
        unknown: list[str] = []
        for name in context.parameters["names"]:
            if name.endswith("."):
                found = [p for p in spec.parameters if p.startswith(name)]
            else:
                found = [name] if name in spec.parameters else []
            if not found:
                unknown.append(name)
            wanted.extend(f for f in found if f not in wanted)
        if unknown:
            raise PermanentError(
                "unknown_parameter",
                f"profile {profile.name!r} has no parameter {', '.join(unknown)}; it has: "
                + ", ".join(sorted(spec.parameters)),
            )
        values: dict[str, str | None] = {}
        outputs: dict[str, str] = {}
        async with self._session(context.device, profile) as session:
            for name in wanted:
                fact = spec.parameters[name]
                if fact.command not in outputs:
                    outputs[fact.command] = await session.run(fact.command)
                values[name] = parse_fact(fact, outputs[fact.command])
        version = values.get("DeviceInfo.SoftwareVersion")
        if version:
            context.facts["firmware_version"] = version
        return {"parameters": values}
