"""What the server lends its helpers: settings and the stores shared by every protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from headless_ops.artifacts.backups import BackupStore
    from headless_ops.artifacts.firmware import FirmwareRepository
    from headless_ops.artifacts.templates import TemplateStore
    from headless_ops.config import Settings
    from headless_ops.crypto import SecretBox, TokenHasher
    from headless_ops.services.devices import DeviceService
    from headless_ops.store.db import Database

__all__ = ["BindableHelper", "HelperResources"]


@dataclass(frozen=True)
class HelperResources:
    """Shared stores a helper may use while executing operations."""

    settings: Settings
    firmware: FirmwareRepository
    templates: TemplateStore
    backups: BackupStore
    devices: DeviceService
    db: Database
    box: SecretBox
    hasher: TokenHasher


@runtime_checkable
class BindableHelper(Protocol):
    """A helper that wants the server's resources: ``bind`` is called once, before use."""

    def bind(self, resources: HelperResources) -> None:
        """Receive the resources."""
        ...
