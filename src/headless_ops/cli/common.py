"""Shared CLI plumbing: settings from options, a runtime for one command."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from headless_ops.api.runtime import Runtime
from headless_ops.config import Settings

__all__ = ["make_settings", "run_with_runtime"]

T = TypeVar("T")


def make_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the options actually given on top."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(given.get("data_dir"), str):
        given["data_dir"] = Path(given["data_dir"])
    return Settings(**given)


def run_with_runtime(settings: Settings, work: Callable[[Runtime], Awaitable[T]]) -> T:
    """Run ``work`` with a runtime on ``settings`` (migrated first on SQLite), then close it."""
    from headless_ops.store.migrate import upgrade

    if settings.is_sqlite:
        upgrade(settings)

    async def main() -> T:
        runtime = Runtime.from_settings(settings)
        try:
            return await work(runtime)
        finally:
            await runtime.close()

    return asyncio.run(main())
