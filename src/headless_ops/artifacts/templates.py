"""Configuration templates for ``configuration_sync``.

A template is either ``text`` — a configuration file or CLI lines, for SSH devices — or
``parameters`` — TR-069 parameter paths to values, for CWMP devices. Both are Jinja2,
rendered in a sandbox with undefined names as errors (a typo must fail the operation, not
push an empty value to a thousand devices) over the device's facts and the operation's
variables.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from headless_ops.domain.devices import CONNECTION_MODELS, Protocol
from headless_ops.domain.operations import XSD_TYPES, field_errors
from headless_ops.errors import Conflict, FieldError, InvalidInput, NotFound
from headless_ops.helpers.base import DeviceView
from headless_ops.store.db import Database
from headless_ops.store.schema import config_templates
from headless_ops.timeutil import iso, utcnow

__all__ = [
    "ConfigTemplate",
    "NewTemplate",
    "RenderError",
    "TemplateStore",
    "TemplateUpdate",
    "device_facts",
    "render_context",
]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_PATH = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*(\.([A-Za-z0-9_-]+|\{i\}))*\.?$")
_XSD_TYPES = tuple(XSD_TYPES)

#: Largest number or string an expression may build: a configuration value, not a way to
#: keep the server busy (``{{ 9**9**9**9 }}``, ``{{ 'x' * 10**10 }}``).
MAX_VALUE_DIGITS = 4096
MAX_STRING = 1024 * 1024


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with arithmetic that cannot build huge numbers or strings."""

    intercepted_binops = frozenset({"**", "*", "<<"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        ints = isinstance(left, int) and isinstance(right, int)
        if (
            operator == "**"
            and ints
            and right > 0
            and abs(left) > 1
            and right * abs(left).bit_length() > MAX_VALUE_DIGITS * 4
        ):
            raise SecurityError(f"{left} ** {right} is too large for a template")
        if operator == "<<" and ints and right > MAX_VALUE_DIGITS * 4:
            raise SecurityError("shift too large for a template")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(times, int)
                    and len(seq) * times > MAX_STRING
                ):
                    raise SecurityError("a repeated string or list is too large for a template")
        return super().call_binop(context, operator, left, right)


#: Numbers ``range()`` may still produce in one rendering: nested loops stay bounded.
RANGE_BUDGET = 100_000
_budget: contextvars.ContextVar[list[int]] = contextvars.ContextVar("template_range_budget")


def _bounded_range(*args: int) -> range:
    """``range`` drawing from the rendering's budget."""
    result = range(*args)
    budget = _budget.get(None)
    if budget is None:
        budget = [RANGE_BUDGET]
        _budget.set(budget)
    budget[0] -= len(result)
    if budget[0] < 0:
        raise SecurityError(f"templates may loop over at most {RANGE_BUDGET} numbers in all")
    return result


def _render(template: str, context: Mapping[str, Any]) -> str:
    token = _budget.set([RANGE_BUDGET])
    try:
        compiled = _ENV.from_string(template)
        compiled.globals["range"] = _bounded_range
        return compiled.render(context)
    except (
        TemplateError,
        ArithmeticError,
        MemoryError,
        RecursionError,
        TypeError,
        ValueError,
    ) as exc:
        raise RenderError(f"{type(exc).__name__}: {exc}") from None
    finally:
        _budget.reset(token)


#: One environment for every template: sandboxed (templates come from API users), values
#: never HTML-escaped (this is configuration, not a page), trailing newline kept.
_ENV = _BoundedSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)

ParamValue = StrictStr | StrictBool | StrictInt


class TypedValue(BaseModel):
    """``{"value": "{{ vars.ntp }}", "type": "string"}``"""

    model_config = ConfigDict(extra="forbid", strict=True)

    value: ParamValue
    type: Literal[_XSD_TYPES] = "string"  # type: ignore[valid-type]


class NewTemplate(BaseModel):
    """``{"name": "edge-base", "format": "text", "content": "hostname {{ device.name }}\\n"}``
    or ``{"name": "ntp", "format": "parameters", "parameters": {"Device.Time.NTPServer1": "{{ vars.ntp }}"}}``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Annotated[StrictStr, Field(pattern=_NAME)]
    format: Literal["text", "parameters"] = "text"
    content: Annotated[StrictStr, Field(max_length=262144)] | None = None
    parameters: (
        Annotated[dict[StrictStr, ParamValue | TypedValue], Field(max_length=5000)] | None
    ) = None
    description: Annotated[StrictStr, Field(max_length=4096)] | None = None


class TemplateUpdate(BaseModel):
    """Replace a template's body (every field of :class:`NewTemplate` but ``name``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    format: Literal["text", "parameters"] = "text"
    content: Annotated[StrictStr, Field(max_length=262144)] | None = None
    parameters: (
        Annotated[dict[StrictStr, ParamValue | TypedValue], Field(max_length=5000)] | None
    ) = None
    description: Annotated[StrictStr, Field(max_length=4096)] | None = None


class RenderError(Exception):
    """The template could not be rendered for this device (undefined name, bad value)."""


@dataclass(frozen=True, slots=True)
class ConfigTemplate:
    """A stored template, ready to render."""

    name: str
    format: str
    content: str | None
    parameters: dict[str, Any] | None

    def render_text(self, context: Mapping[str, Any]) -> str:
        """The rendered text of a ``text`` template."""
        if self.format != "text" or self.content is None:
            raise RenderError(f"template {self.name!r} is a {self.format} template, not text")
        try:
            return _render(self.content, context)
        except RenderError as exc:
            raise RenderError(f"template {self.name!r}: {exc}") from None

    def render_parameters(self, context: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``[{"name", "value", "type"}]`` of a ``parameters`` template; strings rendered."""
        if self.format != "parameters" or self.parameters is None:
            raise RenderError(f"template {self.name!r} is a {self.format} template, not parameters")
        out = []
        for path, spec in self.parameters.items():
            value, xsd = (spec["value"], spec["type"]) if isinstance(spec, dict) else (spec, None)
            if xsd is None:
                xsd = (
                    "boolean"
                    if isinstance(value, bool)
                    else "int"
                    if isinstance(value, int)
                    else "string"
                )
            if isinstance(value, str):
                try:
                    value = _render(value, context)
                except RenderError as exc:
                    raise RenderError(f"template {self.name!r}, {path}: {exc}") from None
            out.append({"name": path, "value": value, "type": xsd})
        return out


def device_facts(device: DeviceView) -> dict[str, Any]:
    """The ``device`` a template sees: identity, labels, version and the connection's
    public fields — never a secret."""
    secret = frozenset[str]()
    with contextlib.suppress(ValueError):
        secret = CONNECTION_MODELS[Protocol(device.protocol)].SECRET_FIELDS
    return {
        "id": device.id,
        "name": device.name,
        "protocol": device.protocol,
        "labels": dict(device.labels),
        "firmware_version": device.firmware_version,
        "connection": {k: v for k, v in device.connection.items() if k not in secret},
    }


def render_context(
    device: Mapping[str, Any], facts: Mapping[str, Any], variables: Mapping[str, Any]
) -> dict[str, Any]:
    """What a template sees: ``device``, ``facts``, ``vars``, and each variable by name."""
    context: dict[str, Any] = dict(variables)
    context.update({"device": dict(device), "facts": dict(facts), "vars": dict(variables)})
    return context


def _check_body(body: NewTemplate | TemplateUpdate) -> dict[str, Any]:
    errors: list[FieldError] = []
    if body.format == "text":
        if body.content is None:
            errors.append(FieldError("content", "a text template needs content"))
        if body.parameters is not None:
            errors.append(FieldError("parameters", "only for format 'parameters'"))
    else:
        if not body.parameters:
            errors.append(FieldError("parameters", "a parameters template needs parameters"))
        if body.content is not None:
            errors.append(FieldError("content", "only for format 'text'"))
    if errors:
        raise InvalidInput("invalid template", errors)
    sources: list[tuple[str, str]] = []
    parameters: dict[str, Any] | None = None
    if body.format == "text":
        assert body.content is not None
        sources.append(("content", body.content))
    else:
        assert body.parameters is not None
        parameters = {}
        for path, spec in body.parameters.items():
            if not _PATH.fullmatch(path) or path.endswith(".") or len(path) > 256:
                errors.append(FieldError(f"parameters.{path}", "must be a full parameter path"))
            value = spec.value if isinstance(spec, TypedValue) else spec
            if isinstance(value, str):
                sources.append((f"parameters.{path}", value))
            parameters[path] = spec.model_dump() if isinstance(spec, TypedValue) else spec
    for field, source in sources:
        try:
            _ENV.parse(source)
        except TemplateSyntaxError as exc:
            errors.append(
                FieldError(field, f"Jinja2 syntax error on line {exc.lineno}: {exc.message}")
            )
    if errors:
        raise InvalidInput("invalid template", errors)
    return {
        "format": body.format,
        "content": body.content,
        "parameters": parameters,
        "description": body.description,
    }


class TemplateStore:
    """CRUD of templates, and lookup for helpers."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def parse(model: type[NewTemplate] | type[TemplateUpdate], payload: object) -> Any:
        """Validate a request body."""
        if not isinstance(payload, dict):
            raise InvalidInput("expected a JSON object", [FieldError("", "expected an object")])
        try:
            return model.model_validate(payload)
        except ValidationError as exc:
            raise InvalidInput("invalid template", field_errors(exc)) from None

    @staticmethod
    def render(row: Any) -> dict[str, Any]:
        """The API's JSON of a template."""
        return {
            "name": row.name,
            "format": row.format,
            "content": row.content,
            "parameters": row.parameters,
            "description": row.description,
            "created_at": iso(row.created_at),
            "updated_at": iso(row.updated_at),
        }

    async def create(self, tenant_id: str, body: NewTemplate) -> Any:
        """Store a template; 409 when the name is taken."""
        values = _check_body(body)
        now = utcnow()
        async with self.db.write() as conn:
            taken = Conflict(f"a configuration template named {body.name!r} already exists")
            if await self._row(conn, tenant_id, body.name) is not None:
                raise taken
            try:
                await conn.execute(
                    insert(config_templates).values(
                        tenant_id=tenant_id,
                        name=body.name,
                        created_at=now,
                        updated_at=now,
                        **values,
                    )
                )
            except IntegrityError:
                # On PostgreSQL a concurrent create of the same name can commit between the
                # check and the insert; the primary key refuses the second: still a 409.
                raise taken from None
        return await self.get_row(tenant_id, body.name)

    async def update(self, tenant_id: str, name: str, body: TemplateUpdate) -> Any:
        """Replace a template's body."""
        values = _check_body(body)
        async with self.db.write() as conn:
            result = await conn.execute(
                update(config_templates)
                .where(config_templates.c.tenant_id == tenant_id, config_templates.c.name == name)
                .values(updated_at=utcnow(), **values)
            )
            if result.rowcount == 0:
                raise NotFound(f"configuration template {name!r} not found")
        return await self.get_row(tenant_id, name)

    async def delete(self, tenant_id: str, name: str) -> None:
        """Remove a template (operations naming it later fail with ``template_not_found``)."""
        async with self.db.write() as conn:
            result = await conn.execute(
                delete(config_templates).where(
                    config_templates.c.tenant_id == tenant_id, config_templates.c.name == name
                )
            )
            if result.rowcount == 0:
                raise NotFound(f"configuration template {name!r} not found")

    @staticmethod
    async def _row(conn: Any, tenant_id: str, name: str) -> Any:
        return (
            await conn.execute(
                select(config_templates).where(
                    config_templates.c.tenant_id == tenant_id, config_templates.c.name == name
                )
            )
        ).first()

    async def get_row(self, tenant_id: str, name: str) -> Any:
        """A template's row; NotFound otherwise."""
        async with self.db.read() as conn:
            row = await self._row(conn, tenant_id, name)
        if row is None:
            raise NotFound(f"configuration template {name!r} not found")
        return row

    async def get(self, tenant_id: str, name: str) -> ConfigTemplate | None:
        """A template to render, or ``None``."""
        async with self.db.read() as conn:
            row = await self._row(conn, tenant_id, name)
        if row is None:
            return None
        return ConfigTemplate(row.name, row.format, row.content, row.parameters)

    async def list(self, tenant_id: str, limit: int, offset: int) -> tuple[int, list[Any]]:
        """A page of templates by name."""
        cond = config_templates.c.tenant_id == tenant_id
        async with self.db.read() as conn:
            count = (
                await conn.execute(select(func.count()).select_from(config_templates).where(cond))
            ).scalar_one()
            rows = (
                await conn.execute(
                    select(config_templates)
                    .where(cond)
                    .order_by(config_templates.c.name)
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
        return count, list(rows)
