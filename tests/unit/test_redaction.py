"""Secrets never reach the logs (logs.py).

``redact()`` masks secret-looking keys at any depth and removes bearer tokens from strings;
``configure_logging`` at DEBUG, writing to a captured stream, never prints a planted secret —
whether it arrives as a structlog field, a stdlib ``extra``, a formatted message, or a local
variable of a frame in a logged traceback.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Callable, Iterator

import pytest
import structlog

from headless_ops.domain.lifecycle import Status
from headless_ops.domain.retry import Decision
from headless_ops.logs import REDACTED, configure_logging, redact

SECRET = "hunter2-Planted-S3cret"
TOKEN = "tok_0a1b2c3d4e5f.Zm9vYmFyYmF6cXV4cXV1eC1zZWNyZXQ"


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "Password",
        "ssh_password",
        "passphrase",
        "private_key",
        "private_key_passphrase",
        "token",
        "access_token",
        "authorization",
        "Authorization",
        "api_key",
        "client_secret",
        "credentials",
    ],
)
def test_secret_keys_masked(key: str) -> None:
    assert redact({key: SECRET, "username": "admin"}) == {key: REDACTED, "username": "admin"}


def test_secret_keys_masked_at_any_depth() -> None:
    event = {
        "device": {
            "connection": {"host": "10.0.0.1", "password": SECRET},
            "keys": [{"private_key": SECRET}, ("x", {"token": SECRET})],
        },
        "headers": [{"authorization": f"Bearer {SECRET}"}],
    }
    assert redact(event) == {
        "device": {
            "connection": {"host": "10.0.0.1", "password": REDACTED},
            "keys": [{"private_key": REDACTED}, ("x", {"token": REDACTED})],
        },
        "headers": [{"authorization": REDACTED}],
    }


def test_a_secret_key_masks_a_whole_structure() -> None:
    # {"credentials": {...}} hides everything below it, not only string leaves.
    assert redact({"credentials": {"user": "u", "pin": 1234}}) == {"credentials": REDACTED}


def test_token_id_is_not_a_secret() -> None:
    # The id half of a token is how operators find it in the logs.
    assert redact({"token_id": "tok_abc"}) == {"token_id": "tok_abc"}


def test_empty_secret_values_stay_visible() -> None:
    # "no password set" is useful to see and reveals nothing.
    assert redact({"password": None, "token": ""}) == {"password": None, "token": ""}


@pytest.mark.parametrize(
    "text",
    [
        f"Authorization: Bearer {SECRET}",
        f"authorization: bearer {SECRET}",
        f"curl -H 'Authorization: Bearer {TOKEN}' http://x/",
        f"retrying with {TOKEN} after 401",
    ],
)
def test_bearer_tokens_removed_from_strings(text: str) -> None:
    out = redact(text)
    assert SECRET not in out
    assert TOKEN.split(".")[1] not in out
    assert REDACTED in out


def test_named_tuples_keep_their_type_and_lists_and_tuples_their_kind() -> None:
    # The scheduler's records are named tuples: logging one must neither fail nor turn it
    # into something else.
    decision = Decision(
        Status.FAILED, error_code="x", message="Bearer tok_ab12.secretsecretsecretsecret"
    )
    masked = redact(decision)
    assert type(masked) is Decision and masked.status == Status.FAILED
    assert masked.message == f"Bearer {REDACTED}"
    assert redact(("a", ["b", ("c",)])) == ("a", ["b", ("c",)])
    assert type(redact(["x"])) is list and type(redact(("x",))) is tuple


def test_strings_without_secrets_unchanged() -> None:
    text = "device dev_1 status online; token_id=tok_abc"
    assert redact(text) == text
    assert redact({"event": 3, "n": [1, 2.5, None]}) == {"event": 3, "n": [1, 2.5, None]}


# --- the configured pipeline, end to end ------------------------------------------------


Configure = Callable[..., io.StringIO]


@pytest.fixture
def configure() -> Iterator[Configure]:
    """``configure(level, fmt)``: ``configure_logging`` writing to a returned StringIO.

    sys.stderr is swapped only while ``configure_logging`` runs (its handler keeps the
    stream); pytest's own capture re-binds sys.stderr between phases. The logging setup is
    restored afterwards.
    """
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    quiet = ("sqlalchemy", "aiosqlite", "alembic")
    saved_levels = {name: logging.getLogger(name).level for name in quiet}

    def _configure(level: str = "DEBUG", fmt: str = "console") -> io.StringIO:
        stream = io.StringIO()
        real, sys.stderr = sys.stderr, stream
        try:
            configure_logging(level, fmt)
        finally:
            sys.stderr = real
        return stream

    yield _configure
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    for name, level in saved_levels.items():
        logging.getLogger(name).setLevel(level)
    structlog.reset_defaults()


def _raise_with_secret_in_locals(connection: dict[str, str]) -> None:
    password = connection["password"]
    raise RuntimeError(f"connection refused for user {connection['username']} ({len(password)})")


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_planted_secret_never_printed_at_debug(configure: Configure, fmt: str) -> None:
    log_stream = configure("DEBUG", fmt)
    log = structlog.get_logger("headless_ops.test")
    stdlog = logging.getLogger("headless_ops.test.stdlib")

    log.debug("debug-marker", password=SECRET)
    log.info(
        "device-created",
        device={"id": "dev_1", "connection": {"username": "admin", "password": SECRET}},
        keys=[{"private_key": SECRET}],
    )
    log.warning("request-failed", headers={"Authorization": f"Bearer {TOKEN}"})
    log.info(f"outgoing Authorization: Bearer {SECRET}")
    log.info("token-used", detail=f"client sent {TOKEN}")
    stdlog.info("stdlib-extra", extra={"password": SECRET, "device_id": "dev_1"})
    stdlog.info("stdlib-args Authorization: Bearer %s", SECRET)
    try:
        _raise_with_secret_in_locals({"username": "admin", "password": SECRET})
    except RuntimeError:
        # Tracebacks are logged on unhandled errors; frame locals hold request data.
        log.exception("unhandled-error")
        stdlog.exception("stdlib-unhandled")

    out = log_stream.getvalue()
    # Every line reached the stream (so the absence below means something) …
    for marker in (
        "debug-marker",
        "device-created",
        "request-failed",
        "outgoing Authorization",
        "token-used",
        "stdlib-extra",
        "stdlib-args",
        "unhandled-error",
        "stdlib-unhandled",
        "dev_1",
        "admin",
    ):
        assert marker in out, marker
    # … with the secrets masked.
    assert SECRET not in out
    assert TOKEN not in out
    assert TOKEN.split(".")[1] not in out
    assert REDACTED in out


def test_console_tracebacks_are_kept(configure: Configure) -> None:
    # Hiding frame locals must not hide the traceback itself.
    log_stream = configure("DEBUG", "console")
    try:
        _raise_with_secret_in_locals({"username": "admin", "password": SECRET})
    except RuntimeError:
        structlog.get_logger("t").exception("boom")
    out = log_stream.getvalue()
    assert "Traceback" in out
    assert "_raise_with_secret_in_locals" in out
    assert "RuntimeError: connection refused for user admin" in out
    assert SECRET not in out


def test_level_filters_debug(configure: Configure) -> None:
    log_stream = configure("INFO")
    log = structlog.get_logger("t")
    log.debug("hidden-debug")
    log.info("shown-info")
    out = log_stream.getvalue()
    assert "shown-info" in out
    assert "hidden-debug" not in out
