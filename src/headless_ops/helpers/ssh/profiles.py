"""Platform profiles: per device platform, how each operation is done over SSH — as data.

Profiles are YAML. The shipped ones (``linux``, ``openwrt``, ``ios``) live in this
package; users add or override profiles by dropping ``<name>.yaml`` into
``<data_dir>/ssh_profiles/`` — no code. A profile may ``extends`` another and override
parts of it (mappings merge key by key; anything else replaces).

Commands are templates with ``{name}`` placeholders. Values come from the profile's
``vars``, the device's ``profile_vars`` and the operation (``image_path`` …). Every value
is inserted shell-quoted (``shlex.quote``) in ``exec`` mode; in ``cli`` mode, where there
is no shell, a value holding a line break or control character is refused. User input is
never pasted into a command line as it is.
"""

from __future__ import annotations

import re
import shlex
import string
import time
from collections.abc import Callable, Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "CliSettings",
    "Fact",
    "Profile",
    "ProfileError",
    "ProfileLibrary",
    "profile_check",
    "render_command",
]

#: How long the user profile folder's listing is trusted.
FINGERPRINT_TTL_S = 1.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ProfileError(ValueError):
    """A profile is missing, malformed, or cannot render a command."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
    return value


class Fact(_Model):
    """A value read from the device: a command's output, optionally through a regex whose
    group ``value`` (or first group, or whole match) is the value."""

    command: str
    pattern: str | None = None

    _check = field_validator("pattern")(_regex)


class Source(_Model):
    """Where a configuration is read from: a file over SFTP, or a command's output."""

    fetch: str | None = None
    command: str | None = None
    #: Lines matching any of these are left out (volatile lines such as timestamps).
    ignore: list[str] = Field(default_factory=list)


class Push(_Model):
    """How a rendered configuration is applied: ``upload`` (SFTP to a path, atomically),
    ``command`` fed the configuration on stdin, or ``config_lines`` (CLI configuration mode,
    one line at a time)."""

    upload: str | None = None
    command: str | None = None
    config_lines: bool = False


class Step(_Model):
    """One step of an install: a command, or a configuration-mode line (``cli`` mode)."""

    command: str | None = None
    config: str | None = None


class BackupSpec(_Model):
    """``backup_configuration``: fetch a file or capture a command."""

    fetch: str | None = None
    command: str | None = None
    ignore: list[str] = Field(default_factory=list)


class SyncSpec(_Model):
    """``configuration_sync``: read before and after (for the diff), push, then commands."""

    read: Source
    push: Push
    after: list[str] = Field(default_factory=list)


class FirmwareSpec(_Model):
    """``firmware_update``: upload path, checksum command, install steps, reboot."""

    upload: str
    checksum: Fact
    install: list[str | Step]
    #: The install reboots the device itself (``sysupgrade``): no reboot command is sent.
    reboots_itself: bool = False


class RebootSpec(_Model):
    """``reboot``: the command (and ``[confirm]`` handling comes from the CLI settings)."""

    command: str


class ParametersSpec(_Model):
    """``get_parameters``: parameter name → how to read it."""

    parameters: dict[str, Fact]


class Operations(_Model):
    """What the profile can do; an absent entry means the operation is unsupported."""

    backup_configuration: BackupSpec | None = None
    configuration_sync: SyncSpec | None = None
    firmware_update: FirmwareSpec | None = None
    reboot: RebootSpec | None = None
    get_parameters: ParametersSpec | None = None


class CliSettings(_Model):
    """Prompt-driven vendor CLIs: what the prompt looks like and how to enter configuration."""

    prompt: str
    setup: list[str] = Field(default_factory=list)
    config_enter: str = "configure terminal"
    config_exit: str = "end"
    #: Output lines matching this mean the command failed (``% Invalid input``).
    error_pattern: str | None = None
    #: A question the device asks before acting (``[confirm]``), and the answer to send.
    confirm_pattern: str | None = None
    confirm_answer: str = ""

    _check = field_validator("prompt", "error_pattern", "confirm_pattern")(_regex)


class Profile(_Model):
    """One platform profile."""

    name: Annotated[str, Field(pattern=_NAME.pattern)]
    description: str = ""
    extends: str | None = None
    mode: Literal["exec", "cli"] = "exec"
    cli: CliSettings | None = None
    vars: dict[str, str] = Field(default_factory=dict)
    #: ``version`` is the running firmware version (status refresh, firmware checks).
    facts: dict[str, Fact] = Field(default_factory=dict)
    operations: Operations = Field(default_factory=Operations)

    def supports(self, operation: str) -> bool:
        """Whether this profile can perform ``operation``."""
        return getattr(self.operations, operation, None) is not None


def render_command(
    template: str, values: Mapping[str, Any], *, mode: Literal["exec", "cli", "path"] = "exec"
) -> str:
    """Fill ``{name}`` placeholders, each value quoted for the shell (``exec``) or checked to
    be a single line (``cli``, and ``path`` for SFTP paths, which no shell sees). An unknown
    name is a :class:`ProfileError`."""
    out: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ProfileError(f"bad command template {template!r}: {exc}") from None
    for literal, field, spec, conversion in parsed:
        out.append(literal)
        if field is None:
            continue
        if spec or conversion or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", field):
            raise ProfileError(f"bad placeholder {{{field}}} in {template!r}")
        if field not in values:
            raise ProfileError(f"command {template!r} needs the value {field!r}")
        value = str(values[field])
        if mode == "exec":
            out.append(shlex.quote(value))
        else:
            if _CONTROL.search(value):
                raise ProfileError(f"value of {field!r} may not hold control characters")
            out.append(value)
    return "".join(out)


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _merge(base.get(key), value) if key in base else value
        return merged
    return override


class ProfileLibrary:
    """Shipped profiles plus the user's, resolved (``extends``) and validated on load."""

    def __init__(
        self, user_dir: Path | None = None, *, recheck_s: float = FINGERPRINT_TTL_S
    ) -> None:
        self.user_dir = user_dir
        self.recheck_s = recheck_s
        self._checked_at = float("-inf")
        self._last_fingerprint: tuple[tuple[str, float], ...] = ()

    def _raw(self, name: str) -> dict[str, Any]:
        if not _NAME.fullmatch(name):
            raise ProfileError(f"invalid profile name {name!r}")
        text = None
        if self.user_dir is not None:
            path = self.user_dir / f"{name}.yaml"
            if path.is_file():
                text = path.read_text()
        if text is None:
            shipped = resources.files(__package__) / "profiles" / f"{name}.yaml"
            if shipped.is_file():
                text = shipped.read_text()
        if text is None:
            raise ProfileError(f"no SSH profile named {name!r} ({', '.join(self.names())})")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ProfileError(f"profile {name!r} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ProfileError(f"profile {name!r} must be a mapping")
        return data

    def load(self, name: str) -> Profile:
        """The profile ``name`` with what it extends merged in."""
        return _load_cached(self, name, self._fingerprint())

    def _fingerprint(self) -> tuple[tuple[str, float], ...]:
        # User profiles are re-read when a file changes, without restarting the server; the
        # folder is looked at most once a second, not at every operation.
        now = time.monotonic()
        if now - self._checked_at < self.recheck_s:
            return self._last_fingerprint
        self._checked_at = now
        if self.user_dir is None or not self.user_dir.is_dir():
            self._last_fingerprint = ()
        else:
            self._last_fingerprint = tuple(
                sorted((p.name, p.stat().st_mtime) for p in self.user_dir.glob("*.yaml"))
            )
        return self._last_fingerprint

    def resolve(self, name: str) -> Profile:
        """Load without the cache (validation of a new profile)."""
        seen: list[str] = []
        data: dict[str, Any] = {}
        current: str | None = name
        chain: list[dict[str, Any]] = []
        while current is not None:
            if current in seen:
                raise ProfileError(f"profile {name!r}: 'extends' loops through {current!r}")
            seen.append(current)
            raw = self._raw(current)
            chain.append(raw)
            parent = raw.get("extends")
            current = parent if isinstance(parent, str) else None
        for raw in reversed(chain):
            data = _merge(data, raw)
        data["name"] = name
        data["extends"] = chain[0].get("extends")
        try:
            return Profile.model_validate(data)
        except ValidationError as exc:
            raise ProfileError(f"profile {name!r} is invalid: {exc}") from None

    def names(self) -> list[str]:
        """Every profile name available."""
        names = {
            p.name.removesuffix(".yaml")
            for p in (resources.files(__package__) / "profiles").iterdir()
            if p.name.endswith(".yaml")
        }
        if self.user_dir is not None and self.user_dir.is_dir():
            names |= {p.stem for p in self.user_dir.glob("*.yaml")}
        return sorted(names)


@lru_cache(maxsize=256)
def _load_cached(
    library: ProfileLibrary, name: str, fingerprint: tuple[tuple[str, float], ...]
) -> Profile:
    return library.resolve(name)


def profile_check(library: ProfileLibrary) -> Callable[[dict[str, Any]], None]:
    """A device-connection check: the named profile exists and is valid (a 400 otherwise)."""

    def check(connection: dict[str, Any]) -> None:
        from headless_ops.errors import FieldError, InvalidInput

        try:
            library.load(str(connection.get("profile", "linux")))
        except ProfileError as exc:
            raise InvalidInput(
                "invalid connection for protocol ssh", [FieldError("connection.profile", str(exc))]
            ) from None

    return check
