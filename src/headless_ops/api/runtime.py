"""Everything a running server holds: settings, database, keys, helpers and services."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

import structlog

from headless_ops.artifacts.backups import BackupStore
from headless_ops.artifacts.firmware import FirmwareRepository
from headless_ops.artifacts.templates import TemplateStore
from headless_ops.config import Settings
from headless_ops.crypto import SecretBox, TokenHasher, load_keys
from headless_ops.helpers.base import Helper
from headless_ops.helpers.registry import HelperRegistry
from headless_ops.helpers.resources import BindableHelper, HelperResources
from headless_ops.helpers.ssh.profiles import ProfileLibrary, profile_check
from headless_ops.services.devices import DeviceService
from headless_ops.services.operations import OperationService
from headless_ops.services.windows import WindowService
from headless_ops.store.db import Database

if TYPE_CHECKING:
    from headless_ops.scheduler.worker import Scheduler

__all__ = ["Runtime"]

log = structlog.get_logger(__name__)


@dataclass
class Runtime:
    """The process's shared objects, built once from settings."""

    settings: Settings
    db: Database
    box: SecretBox
    hasher: TokenHasher
    registry: HelperRegistry
    operations: OperationService = field(init=False)
    devices: DeviceService = field(init=False)
    windows: WindowService = field(init=False)
    firmware: FirmwareRepository = field(init=False)
    templates: TemplateStore = field(init=False)
    backups: BackupStore = field(init=False)
    resources: HelperResources = field(init=False)

    def __post_init__(self) -> None:
        self.operations = OperationService(self.db, self.registry, self.settings)
        self.devices = DeviceService(self.db, self.box)
        self.devices.connection_checks["ssh"] = profile_check(
            ProfileLibrary(self.settings.profiles_dir)
        )
        self.windows = WindowService(
            self.db, margin=timedelta(seconds=self.settings.window_margin_s)
        )
        self.firmware = FirmwareRepository(
            self.db, self.settings.firmware_dir, self.settings.firmware_max_bytes
        )
        self.templates = TemplateStore(self.db)
        self.backups = BackupStore(self.db, self.settings)
        self.resources = HelperResources(
            self.settings,
            self.firmware,
            self.templates,
            self.backups,
            self.devices,
            self.db,
            self.box,
            self.hasher,
        )
        for helper in self.registry:
            if isinstance(helper, BindableHelper):
                helper.bind(self.resources)

    def add_helper(self, helper: Helper) -> None:
        """Register a helper after start-up (tests, embedding), lending it the resources."""
        self.registry.register(helper)
        if isinstance(helper, BindableHelper):
            helper.bind(self.resources)

    def make_scheduler(self) -> Scheduler:
        """A scheduler on this runtime, woken by this process's API changes."""
        from headless_ops.scheduler.worker import Scheduler

        scheduler = Scheduler(self.db, self.registry, self.box, self.settings)
        self.operations.listeners.append(scheduler.wake)
        self.operations.cancel_listeners.append(scheduler.request_cancel)
        self.windows.listeners.append(scheduler.wake)
        return scheduler

    @classmethod
    def from_settings(cls, settings: Settings, registry: HelperRegistry | None = None) -> Runtime:
        """Open the database and keys; load helpers from entry points and configuration."""
        if registry is None:
            # Helpers named in the configuration first: they replace the shipped helper of
            # their protocol (said in the log), which is how a site swaps in its own.
            registry = HelperRegistry()
            registry.load_specs(settings.helpers)
            for protocol in registry.load_entry_points(keep_registered=True):
                log.info("helper_replaced", protocol=protocol, by=settings.helpers)
        box, hasher = load_keys(settings)
        return cls(settings, Database(settings), box, hasher, registry)

    async def close(self) -> None:
        """Release the helpers' connections, then the database."""
        for helper in self.registry:
            closer = getattr(helper, "aclose", None)
            if closer is not None:
                await closer()
        self.backups.close()
        await self.db.dispose()
