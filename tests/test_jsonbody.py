"""jsonbody answers exactly as the json module would, only faster."""

from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mpsdproxy import jsonbody
from mpsdproxy import model

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.floats(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def _stdlib_compact(value: object) -> bytes | None:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except (ValueError, RecursionError):
        return None


def _same(a: object, b: object) -> bool:
    """Equal, counting NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=300)
@given(JSON_VALUES)
@example(1e-05)
@example(0.00001234)
@example(1e-08)
@example(1e16)
@example(2**64)
@example(-(2**63) - 1)
@example("\ud800")
@example(float("nan"))
def test_is_compact_is_the_json_modules_answer(value):
    """Whether a body is kept as JSON: orjson may only answer faster, never otherwise,
    for the body that is exactly the json module's text and for other spellings of it."""
    exact = _stdlib_compact(value)
    if exact is not None:
        assert jsonbody.is_compact(value, exact)
    for raw in (json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"),
                json.dumps(value, separators=(",", ":")).encode(),
                json.dumps(value, indent=1).encode()):
        assert jsonbody.is_compact(value, raw) == (raw == exact)


@settings(max_examples=300)
@given(JSON_VALUES)
@example(float("nan"))
@example(2**80)
@example("\udcff")
def test_parse_reads_what_the_json_module_reads(value):
    for raw in (json.dumps(value).encode(), json.dumps(value, ensure_ascii=False)
                .encode("utf-8", "surrogatepass")):
        try:
            expected = json.loads(raw)
        except ValueError:
            expected = jsonbody.INVALID
        assert _same(jsonbody.parse(raw), expected)


@given(st.binary(max_size=64))
@example(b"\xef\xbb\xbf{}")
@example(b'{"a":1,"a":2}')
@example(b"NaN")
def test_parse_never_raises_and_agrees_on_junk(raw):
    try:
        expected = json.loads(raw)
    except (ValueError, RecursionError):
        expected = jsonbody.INVALID
    assert _same(jsonbody.parse(raw), expected)


@given(st.lists(st.one_of(st.binary(max_size=8), st.integers(0, 10**25).map(
    lambda n: str(n).encode())), max_size=8).map(b"".join))
@example(b"1" * 18 + b"x" + b"2" * 18)
@example(b"-9223372036854775809")
def test_long_number_finds_every_run_of_nineteen_digits(raw):
    assert jsonbody._long_number(raw) == (re.search(rb"[0-9]{19}", raw) is not None)


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_parse_takes_other_bytes_like_values(kind):
    assert jsonbody.parse(kind(b'{"n":123456789012345678901234}')) == {
        "n": 123456789012345678901234}


def test_a_message_parses_its_body_once():
    raw = b'{"constants":{},"properties":{},"changeNumber":1}'
    response = model.Response(200, "OK", body=raw)
    assert response.json is response.json
    assert response.json == jsonbody.parse(raw)


def test_nesting_is_measured_without_recursion():
    deep: object = 1
    for _ in range(5000):
        deep = [deep]
    assert not jsonbody.nests_at_most(deep, 200)
    assert jsonbody.nests_at_most([[1], {"a": [2]}], 3)
    assert not jsonbody.nests_at_most([[1], {"a": [2]}], 2)
    assert not jsonbody.is_compact(deep, b"")


@settings(max_examples=500)
@given(st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
@example(1e-05, "")
@example(1e-08, "")
@example(-2.5e-12, "x")
def test_where_orjson_spells_a_float_differently_it_says_so(number, key):
    """The safety of the fast path: orjson's text differs from the json module's only
    where `_ambiguous` sends the question to the json module."""
    import orjson

    for value in (number, [number], {key: number}, [number, 1], {key: [number], "z": 1}):
        fast = orjson.dumps(value)
        if fast != json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode():
            assert jsonbody._ambiguous(fast)


def test_guids_are_not_floats():
    assert not jsonbody._ambiguous(b'{"id":"4b1a7c3e-0000-4000-8e-1","n":1}')
    assert jsonbody._ambiguous(b'[1e-8]') and jsonbody._ambiguous(b'{"a":2e-10}')


def test_a_document_is_strict_json_whatever_floats_it_holds() -> None:
    value = {"x": float("inf"), "y": [float("nan"), -float("inf"), 1.5], "z": "é"}
    text = jsonbody.document(value)
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON")) == {
        "x": "Infinity", "y": ["NaN", "-Infinity", 1.5], "z": "é"}
    assert jsonbody.document({"z": "é"}, ensure_ascii=True) == '{\n  "z": "\\u00e9"\n}\n'


def test_all_finite_walks_any_depth() -> None:
    deep: list[object] = [float("inf")]
    for _ in range(5000):
        deep = [deep]
    assert not jsonbody.all_finite(deep)
    assert jsonbody.all_finite({"a": [1, 2.5, {"b": 10**30}]})
