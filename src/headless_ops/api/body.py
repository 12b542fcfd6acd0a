"""Request bodies: strict JSON and the three forms of the operation POST.

Strict JSON refuses what Python's ``json`` would let through: duplicate keys, ``NaN`` and
``Infinity``, integers outside the signed 64-bit range, floats that overflow.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

from headless_ops.errors import FieldError, InvalidInput, UnsupportedMediaType

__all__ = [
    "JSON_TYPES",
    "loads_strict",
    "read_json_object",
    "read_operation_body",
    "refuse_nul",
]

_INT64 = (-(2**63), 2**63 - 1)
JSON_TYPES = ("application/json",)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class _Refused(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"duplicate key {key!r}")
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not a number JSON allows")


def _int(text: str) -> int:
    value = int(text)
    if not _INT64[0] <= value <= _INT64[1]:
        raise _Refused(f"integer {text[:30]} is outside the signed 64-bit range")
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"number {text[:30]} is too large")
    return value


def loads_strict(raw: bytes | str, what: str = "body") -> Any:
    """Decode JSON strictly; :class:`InvalidInput` (400) says what is wrong and where."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise InvalidInput(
            f"malformed JSON: the {what} is not UTF-8", [FieldError(what, "not UTF-8")]
        ) from None
    if not text.strip():
        raise InvalidInput(
            f"the {what} is empty: a JSON object is expected", [FieldError(what, "empty")]
        )
    try:
        return json.loads(
            text,
            object_pairs_hook=_pairs,
            parse_constant=_constant,
            parse_int=_int,
            parse_float=_float,
        )
    except _Refused as exc:
        raise InvalidInput(f"malformed JSON: {exc}", [FieldError(what, str(exc))]) from None
    except json.JSONDecodeError as exc:
        msg = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        raise InvalidInput(f"malformed JSON: {msg}", [FieldError(what, msg)]) from None
    except (ValueError, RecursionError) as exc:
        msg = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise InvalidInput(f"malformed JSON: {msg}", [FieldError(what, msg)]) from None


def refuse_nul(value: Any) -> Any:
    """``value`` unchanged, or :class:`InvalidInput` naming each string that holds U+0000.

    PostgreSQL stores U+0000 neither in text nor in JSONB; refusing it here keeps both engines
    alike and turns what would be a database error into a 400 naming the field.
    """
    bad: list[str] = []
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:  # iterative: a decoded body may be nested hundreds of levels deep
        path, item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                bad.append(path)
        elif isinstance(item, dict):
            for key, sub in item.items():
                sub_path = f"{path}.{key}" if path else key
                if "\x00" in key:
                    bad.append(sub_path.replace("\x00", "\\u0000"))
                else:
                    stack.append((sub_path, sub))
        elif isinstance(item, list):
            stack.extend((f"{path}.{i}" if path else str(i), sub) for i, sub in enumerate(item))
    if bad:
        raise InvalidInput(
            "strings may not contain the NUL character (U+0000)",
            [FieldError(path, "contains U+0000") for path in sorted(bad)[:20]],
        )
    return value


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_json_object(request: Request) -> Any:
    """The body of an ``application/json`` request, strictly decoded; 415 for another type."""
    media = _media_type(request)
    if media not in JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {media or '(none)'} is not supported: send application/json"
        )
    return refuse_nul(loads_strict(await request.body()))


async def read_operation_body(request: Request) -> Any:
    """The operation from any of the three forms the contract accepts.

    (a) the operation as a JSON object; (b) ``{"data": "<operation as a JSON string>"}``;
    (c) a form (urlencoded or multipart) whose field ``data`` is the operation as JSON.
    """
    return refuse_nul(await _operation_payload(request))


async def _operation_payload(request: Request) -> Any:
    media = _media_type(request)
    if media in JSON_TYPES:
        payload = loads_strict(await request.body())
        if isinstance(payload, dict) and set(payload) == {"data"}:
            data = payload["data"]
            if isinstance(data, str):
                return loads_strict(data, "data")
            if isinstance(data, dict):
                return data
            raise InvalidInput(
                "data must be the operation as a JSON string",
                [FieldError("data", "expected a string containing a JSON object")],
            )
        return payload
    if media in FORM_TYPES:
        try:
            form = await request.form(max_files=1, max_fields=16)
        except Exception as exc:  # python-multipart raises several types for bad input
            raise InvalidInput(
                f"malformed form body: {type(exc).__name__}", [FieldError("", "malformed form")]
            ) from None
        try:
            extra = sorted(k for k in form if k != "data")
            if extra:
                raise InvalidInput(
                    "unexpected form fields",
                    [FieldError(k, "only 'data' is accepted") for k in extra],
                )
            values = form.getlist("data")
            if len(values) != 1:
                raise InvalidInput(
                    "the form needs exactly one field 'data'",
                    [FieldError("data", "required once: the operation as a JSON string")],
                )
            value = values[0]
            if isinstance(value, UploadFile):
                raw: bytes | str = await value.read()
            else:
                raw = value
            return loads_strict(raw, "data")
        finally:
            await form.close()
    raise UnsupportedMediaType(
        f"Content-Type {media or '(none)'} is not supported: send application/json, "
        "application/x-www-form-urlencoded or multipart/form-data"
    )
