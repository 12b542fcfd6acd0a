"""Strict JSON decoding of request bodies (api/body.py ``loads_strict``).

Everything Python's ``json`` would let through but the contract refuses — duplicate keys,
NaN/Infinity, integers beyond signed 64 bits, overflowing floats, invalid UTF-8, an empty
body, pathological nesting — is an InvalidInput (400) with a message saying what is wrong.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headless_ops.api.body import loads_strict
from headless_ops.errors import InvalidInput

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def refused(raw: bytes | str, what: str = "body") -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        loads_strict(raw, what)
    exc = info.value
    assert exc.status_code == 400
    # One error, on the part of the request that was being decoded.
    assert [e.field for e in exc.errors] == [what]
    assert exc.message
    return exc


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"a": 1, "b": [true, null, "x"]}', {"a": 1, "b": [True, None, "x"]}),
        ('{"a": 1.5e3}', {"a": 1500.0}),
        ("  [1]\n", [1]),
        (str(INT64_MAX), INT64_MAX),
        (str(INT64_MIN), INT64_MIN),
        ('"caf\\u00e9"', "café"),
        ("caf\u00e9".join(['"', '"']).encode(), "café"),
        # The same key in two different objects is not a duplicate.
        ('[{"a": 1}, {"a": 2}]', [{"a": 1}, {"a": 2}]),
        ("1e-400", 0.0),
    ],
)
def test_valid_json_decodes(raw: bytes | str, expected: object) -> None:
    assert loads_strict(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ['{"a": 1, "a": 1}', '{"a": 1, "a": 2}', '{"x": {"b": 1, "b": 2}}', '[{"k": 0, "k": 0}]'],
)
def test_duplicate_keys_refused(raw: str) -> None:
    exc = refused(raw)
    assert "duplicate key" in exc.message


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("NaN", "NaN"),
        ('{"v": NaN}', "NaN"),
        ("[Infinity]", "Infinity"),
        ('{"v": -Infinity}', "-Infinity"),
    ],
)
def test_non_finite_constants_refused(raw: str, name: str) -> None:
    exc = refused(raw)
    assert f"{name} is not a number JSON allows" in exc.message


@pytest.mark.parametrize("number", [INT64_MAX + 1, INT64_MIN - 1, 2**64, 10**30, -(10**30)])
def test_integers_beyond_signed_64_bit_refused(number: int) -> None:
    exc = refused(f'{{"retention_days": {number}}}')
    assert "outside the signed 64-bit range" in exc.message


def test_integer_with_thousands_of_digits_refused_quickly() -> None:
    # Python's own int() limit (4300 digits) surfaces as a 400, not a 500.
    exc = refused("9" * 5000)
    assert "malformed JSON" in exc.message


@pytest.mark.parametrize("raw", ["1e400", "-1e400", '{"x": 1.8e308}', "[123456789e999]"])
def test_overflowing_floats_refused(raw: str) -> None:
    exc = refused(raw)
    assert "too large" in exc.message


@pytest.mark.parametrize(
    "raw",
    [b'{"a": "\xff"}', b"\xc3\x28", b'{"a": "\xed\xa0\x80"}', "é".encode("latin-1")],
)
def test_invalid_utf8_refused(raw: bytes) -> None:
    exc = refused(raw)
    assert "not UTF-8" in exc.message


@pytest.mark.parametrize("raw", [b"", "", "   ", b"\n\t \r\n"])
def test_empty_body_refused(raw: bytes | str) -> None:
    exc = refused(raw)
    assert "empty" in exc.message


@pytest.mark.parametrize(
    "raw",
    ["[" * 100_000, "[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000],
    ids=["open-brackets", "balanced-brackets", "nested-objects"],
)
def test_deep_nesting_refused(raw: str) -> None:
    exc = refused(raw)
    assert "nested too deeply" in exc.message


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ('{"a": 1', "line 1"),
        ('{"a": 1} trailing', "Extra data"),
        ("{'a': 1}", "property name"),
        ('{"a": 1,}', "line 1"),
        (b"\xef\xbb\xbf{}", "BOM"),
        ("\x00", "Expecting value"),
        ('{"a":\n  tru}', "line 2"),
    ],
)
def test_syntax_errors_say_where(raw: bytes | str, fragment: str) -> None:
    exc = refused(raw)
    assert exc.message.startswith("malformed JSON")
    assert fragment in exc.message


def test_field_names_the_part_that_was_decoded() -> None:
    # The form-encoded and {"data": "..."} bodies decode their ``data`` field.
    exc = refused('{"a": 1, "a": 2}', what="data")
    assert "duplicate key" in exc.errors[0].message


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_anything_json_dumps_makes_round_trips(value: object) -> None:
    # Strictness must not refuse well-formed JSON: whatever json.dumps writes (finite,
    # 64-bit, unique keys) decodes to the same value.
    text = json.dumps(value)
    assert loads_strict(text) == value
    assert loads_strict(text.encode()) == value


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=INT64_MAX + 1) | st.integers(max_value=INT64_MIN - 1))
def test_any_integer_outside_64_bits_refused(number: int) -> None:
    refused(json.dumps({"n": number}))
