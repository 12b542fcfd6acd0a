"""Structured logging (structlog) with secrets redacted from every event."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["REDACTED", "configure_logging", "redact"]

REDACTED = "***"
_SECRET_KEY = re.compile(
    r"(pass(word|phrase)?|secret|private_key|token|authorization|api_key|credential)", re.I
)
_BEARER = re.compile(r"(Bearer\s+)\S+", re.I)
_TOKEN = re.compile(r"tok_[0-9a-z]+\.[A-Za-z0-9_-]{20,}")


def redact(value: Any, key: str = "") -> Any:
    """``value`` with secret-looking keys masked and bearer tokens removed from strings."""
    if key and _SECRET_KEY.search(key) and key not in ("token_id",):
        return REDACTED if value not in (None, "") else value
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, tuple):
        # A named tuple (the scheduler's records) is rebuilt field by field, as its own type.
        items = [redact(v) for v in value]
        return value._make(items) if hasattr(value, "_make") else tuple(items)
    if isinstance(value, str):
        return _TOKEN.sub(REDACTED, _BEARER.sub(r"\1" + REDACTED, value))
    return value


def _redactor(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event):
        event[key] = redact(event[key], key if key != "event" else "")
    return event


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    """Route structlog and the standard library through one redacting pipeline on stderr."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        # The default (rich) exception formatter prints every frame's local variables,
        # which hold request bodies and decrypted device secrets.
        else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redactor,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=False,
    )
    # JSON has no traceback of its own (the console renderer formats exc_info): render it
    # as "exception" text, and redact that text too.
    tracebacks: list[Any] = (
        [structlog.processors.format_exc_info, _redactor] if fmt == "json" else []
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *tracebacks,
                renderer,
            ],
            # ExtraAdder first: ``extra={...}`` fields of stdlib records must pass the redactor.
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared[1:]],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # SQL echo at DEBUG would print bound parameters; keep the engine at WARNING.
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # One line per HTTP request of the CPE simulator and of connection requests: noise.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
