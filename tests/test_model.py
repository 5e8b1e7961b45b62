"""The exchange model: one decoding rule, lossless, and nothing a wire can't carry."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpsdproxy import model
from mpsdproxy.model import Exchange
from mpsdproxy.model import Headers
from mpsdproxy.model import ModelError
from mpsdproxy.model import Request
from mpsdproxy.model import Response

SESSION = "https://sessiondirectory.xboxlive.com/serviceconfigs/s/sessiontemplates/t/sessions/n"


@given(st.binary(max_size=64))
def test_any_bytes_round_trip_through_text(raw: bytes) -> None:
    assert model.to_bytes(model.from_bytes(raw)) == raw


def test_utf8_text_decodes_as_utf8_and_stray_bytes_stay_bytes() -> None:
    assert model.from_bytes("Café Racer".encode()) == "Café Racer"
    text = model.from_bytes(b"caf\xe9")
    assert model.to_bytes(text) == b"caf\xe9"
    assert model.printable(text) == "caf\\xe9"
    assert model.printable("Café") == "Café"


def test_printable_shows_every_lone_surrogate_and_always_encodes() -> None:
    """A JSON text may hold `"\\ud800"`: decoded, no UTF-8 can hold it, and reports of a
    recording holding one crashed on it."""
    assert model.printable("uri \ud800 and \udfff") == "uri \\ud800 and \\udfff"
    assert model.printable(model.from_bytes(b"a\xe9") + "\ud83d") == "a\\xe9\\ud83d"
    assert model.terminal_safe("\x1b\udbff") == "\\x1b\\udbff"


@given(st.text(max_size=32))
def test_printable_text_is_always_utf8(text: str) -> None:
    shown = model.printable(text)
    shown.encode("utf-8")  # raises if a surrogate is left
    assert shown == text or "\\" in shown


@given(st.binary(max_size=64))
def test_printable_shows_bytes_as_backslash_replace_does(raw: bytes) -> None:
    assert model.printable(model.from_bytes(raw)) == raw.decode("utf-8", "backslashreplace")


def test_headers_keep_order_and_repeats_and_fold_like_mitmproxy() -> None:
    headers = Headers([("Via", "a"), ("ETag", '"1"'), ("via", "b")])
    assert headers.get("VIA") == "a, b"
    assert headers.first("via") == "a"
    assert headers.get_all("via") == ["a", "b"]
    assert "etag" in headers and "Missing" not in headers
    assert headers.with_value("Via", "c").pairs() == [["Via", "c"], ["ETag", '"1"']]
    assert headers.without("via").pairs() == [["ETag", '"1"']]


def test_raw_fields_decode_by_the_one_rule() -> None:
    headers = Headers.from_raw([(b"X-Title", "Café".encode()), (b"X-Odd", b"\xff")])
    assert headers.get("x-title") == "Café"
    assert headers.raw() == ((b"X-Title", "Café".encode()), (b"X-Odd", b"\xff"))


@pytest.mark.parametrize("pair", [
    ("X-Evil", "a\r\nSet-Cookie: x=1"),
    ("X-Evil", "a\nb"),
    ("X-Evil", "a\x00b"),
    ("Bad Name", "v"),
    ("", "v"),
    ("X:Y", "v"),
])
def test_a_header_a_wire_cannot_carry_cannot_be_built(pair: tuple[str, str]) -> None:
    with pytest.raises(ModelError):
        Headers([pair])


@pytest.mark.parametrize("status", [0, 99, 600, 99999, True, "200"])
def test_a_status_outside_100_to_599_cannot_be_built(status: object) -> None:
    with pytest.raises(ModelError):
        Response(status)  # type: ignore[arg-type]


def test_a_reason_or_url_with_a_line_break_cannot_be_built() -> None:
    with pytest.raises(ModelError):
        Response(200, "OK\r\nSet-Cookie: x")
    with pytest.raises(ModelError):
        Request("GET", SESSION + "\r\nX: y")
    with pytest.raises(ModelError):
        Request("G ET", SESSION)


def test_a_request_knows_its_resource_and_parses_its_body_once() -> None:
    request = Request("PUT", SESSION + "?x=1", [("Content-Type", "application/json")],
                      b'{"members": {}}')
    assert request.host == "sessiondirectory.xboxlive.com"
    assert request.path.endswith("/sessions/n?x=1")
    assert request.resource.name == "n"
    assert request.json == {"members": {}}
    assert request.json is request.json


def test_an_exchange_says_who_answered_and_how_long_it_took() -> None:
    exchange = Exchange(Request("GET", SESSION), Response(200, "OK"), start=1.0, end=1.25)
    assert exchange.provenance == {"source": "forwarded"}
    assert exchange.status == 200
    assert exchange.duration_ms == 250.0
    assert Exchange(Request("GET", SESSION), error="reset").status is None


def test_a_copy_keeps_what_was_worked_out_from_the_fields_it_shares() -> None:
    request = Request("PUT", SESSION, [("Authorization", "t")], b'{"a": 1}')
    assert request.json == {"a": 1} and request.resource.name == "n"
    same_body = request.replace(headers=Headers([("Authorization", "redacted")]))
    assert same_body.json is request.json  # the same value: not parsed again
    assert same_body.resource is request.resource
    other = request.replace(url=SESSION + "x", body=b"[]")
    assert other.json == [] and other.resource.name == "nx"
    told = Request("GET", SESSION).knowing(json={"b": 2})
    assert told.json == {"b": 2}


_FIELD_BYTES = st.lists(st.sampled_from(
    [b"a", b"Z", b"-", b"~", b" ", b":", b"\r", b"\n", b"\x00", b"\t", b"\xe9", b"\xc3",
     b"\xa9", b"\xe2\x82", b"\xac", b"\xff", b"\xf0\x9f\x98"]), max_size=5).map(b"".join)


@given(st.lists(st.tuples(_FIELD_BYTES, _FIELD_BYTES), max_size=4))
def test_raw_fields_read_all_at_once_as_field_by_field(fields: list[tuple[bytes, bytes]]
                                                        ) -> None:
    """Raw headers are checked and decoded in one pass: the same fields, or the same
    refusal, as decoding and checking each field on its own."""
    def each() -> object:
        try:
            return Headers((model.from_bytes(k), model.from_bytes(v)) for k, v in fields)
        except ModelError as e:
            return str(e)

    try:
        at_once: object = Headers.from_raw(fields)
    except ModelError as e:
        at_once = str(e)
    assert at_once == each()


@given(st.lists(st.tuples(st.sampled_from(["A", "a", "B", "b-c", "B-C"]),
                          st.sampled_from(["", "1", "x y"])), max_size=5),
       st.sampled_from(["a", "A", "b", "B-c", "d"]))
def test_get_folds_repeats_as_a_pass_over_the_fields(fields: list[tuple[str, str]],
                                                     name: str) -> None:
    """`get` answers from the index `first` builds, and still folds repeated fields."""
    values = [v for k, v in fields if k.lower() == name.lower()]
    headers = Headers(fields)
    headers.first("a")  # the index built first or not gives the same answer
    assert headers.get(name, "none") == (", ".join(values) if values else "none")
    assert Headers(fields).get(name) == (", ".join(values) if values else None)


def test_request_user_is_the_redacted_user_of_its_authorization() -> None:
    from mpsdproxy import recording

    auth = "XBL3.0 x=2814600000000001;eyJhbGciOiJSUzI1NiJ9.e30.sig"
    request = Request("GET", "https://h/p", [("authorization", auth)])
    assert request.user == recording.user_of(auth)
    assert Request("GET", "https://h/p").user == ""
    assert Request("GET", "https://h/p", [("Authorization", "")]).user == ""
    other = request.with_headers(Headers([("Authorization", "XBL3.0 x=9;t")]))
    assert other.user == recording.user_of("XBL3.0 x=9;t")


@given(st.lists(st.sampled_from(["h", ":", "@", "[", "]", "1", "x", "65536", "::1"]),
                max_size=6).map("".join))
def test_a_request_refuses_exactly_the_urls_without_a_readable_port(netloc: str) -> None:
    from urllib.parse import urlsplit

    url = f"https://{netloc}/p"
    try:
        urlsplit(url).port  # noqa: B018
        readable = True
    except ValueError:
        readable = False
    try:
        Request("GET", url)
        built = True
    except ModelError:
        built = False
    assert built == readable
