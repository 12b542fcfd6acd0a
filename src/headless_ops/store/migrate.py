"""Apply Alembic migrations programmatically (``headless-ops migrate``, ``serve`` on SQLite)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from headless_ops.config import Settings

__all__ = ["alembic_config", "sync_url", "upgrade"]

_HERE = Path(__file__).parent / "migrations"


def sync_url(async_url: str) -> str:
    """The synchronous-driver URL for the same database (migrations run synchronously)."""
    if async_url.startswith("sqlite+aiosqlite://"):
        return "sqlite://" + async_url[len("sqlite+aiosqlite://") :]
    return async_url  # postgresql+psycopg serves sync and async alike


def alembic_config(settings: Settings) -> Config:
    """An Alembic config pointing at the packaged migrations and ``settings``' database."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    cfg.set_main_option("sqlalchemy.url", sync_url(settings.effective_database_url))
    cfg.attributes["sqlite_synchronous"] = settings.sqlite_synchronous
    return cfg


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Bring the database up to ``revision``."""
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings), revision)
