"""The recording format: bodies, redaction, the append-and-flush writer and the streaming reader."""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Iterable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mpsdproxy import jsonbody
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import secrets
from mpsdproxy.recording import ReadIssue
from mpsdproxy.recording import RecordError
from mpsdproxy.recording import writer as writer_module

TOKEN = "XBL3.0 x=2533274800000002;eyJ0eXAiOiJtcHNkcHJveHktdGVzdCIsImFsZyI6Im5vbmUifQ"
OTHER_TOKEN = "XBL3.0 x=2533274800000001;eyJ0eXAiOiJtcHNkcHJveHktdGVzdCIsImFsZyI6Im5vbmUiffQ"
SIGNATURE = "AAAAAQHS7hcmPq0WEhCbZ0M7aQ2W1b3i0F2oQdJ4CjW+4Rtt9sKm5fFQWw=="


def record(method: str = "GET", url: str = "https://sessiondirectory.xboxlive.com/handles",
           **extra: object) -> dict[str, object]:
    return {"request": {"method": method, "url": url, "headers": [], "body": None},
            "response": {"status": 200, "reason": "OK", "headers": [], "body": None}, **extra}


def line(seq: int, **extra: object) -> str:
    return json.dumps({"seq": seq, **record(**extra)}) + "\n"


# --- bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, encoded",
    [
        (None, None),
        (b"", None),
        (b'{"a":1,"b":[true,null]}', {"json": {"a": 1, "b": [True, None]}}),
        (b"[1,2]", {"json": [1, 2]}),
        (b"{}", {"json": {}}),
        ('{"n":"Zoë"}'.encode(), {"json": {"n": "Zoë"}}),
        (b'{"a":1.0}', {"json": {"a": 1.0}}),
        # JSON, but not in its compact form: kept as the text that was on the wire
        (b'{"a": 1}', {"text": '{"a": 1}'}),
        (b'{"n":"Zo\\u00eb"}', {"text": '{"n":"Zo\\u00eb"}'}),
        (b'{"a":1e5}', {"text": '{"a":1e5}'}),
        (b'{"a":1,"a":2}', {"text": '{"a":1,"a":2}'}),
        (b'{"a":1}\n', {"text": '{"a":1}\n'}),
        # not JSON at all (NaN is not JSON; a record must stay strict JSON for other tools)
        (b"[NaN]", {"text": "[NaN]"}),
        (b'{"x":Infinity}', {"text": '{"x":Infinity}'}),
        (b'"just a string"', {"text": '"just a string"'}),
        (b"42", {"text": "42"}),
        (b"{not json", {"text": "{not json"}),
        (b"[" * 100_000, {"text": "[" * 100_000}),
        (b"The requested session wasn't found", {"text": "The requested session wasn't found"}),
        (b"\xff\xfe\x00\x01", {"base64": "//4AAQ=="}),
        (b"\xc3", {"base64": "ww=="}),
    ],
)
def test_encode_body(raw, encoded):
    assert recording.encode_body(raw) == encoded
    assert recording.decode_body(encoded) == (raw or b"")


def test_decode_body_rejects_unknown_kinds():
    with pytest.raises(ValueError, match=r"one of json, text, base64, not \['yaml'\]"):
        recording.decode_body({"yaml": "a: 1"})


def _through_a_line(body: dict[str, object] | None) -> dict[str, object] | None:
    """What a reader gets back after the writer put `body` on a line."""
    return json.loads(json.dumps({"body": body}, ensure_ascii=False, allow_nan=False))["body"]


@settings(max_examples=300)
@given(st.binary())
@example(b"[NaN]")
@example(b'[1e400]')
@example(b"[-0.0]")
@example('{"\u2028":"\ud7ff"}'.encode())
def test_body_round_trips_any_bytes(raw):
    encoded = recording.encode_body(raw)
    assert recording.decode_body(_through_a_line(encoded)) == raw


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200)
@given(st.one_of(st.lists(JSON_VALUES, max_size=4),
                 st.dictionaries(st.text(), JSON_VALUES, max_size=4)))
def test_compact_json_stays_json(value):
    raw = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    encoded = recording.encode_body(raw)
    assert encoded is not None and "json" in encoded
    assert recording.decode_body(_through_a_line(encoded)) == raw


@settings(max_examples=200)
@given(st.dictionaries(st.text(), JSON_VALUES, max_size=4), st.text())
def test_a_line_is_utf8_json_that_reads_back_as_the_record(body, text):
    """Whatever a record holds (a header that was not UTF-8 becomes lone surrogates),
    its line is valid UTF-8 JSON on one line and reads back as the same record."""
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    record = {"seq": 1, "request": {"url": text, "body": recording.encode_body(raw)},
              "response": {"status": 200, "headers": [["X", text], ["Y", "\udcff"]]},
              "big": 2**70}
    line = jsonbody.dumps_line(record)
    assert b"\n" not in line
    assert json.loads(line.decode("utf-8")) == record


# --- redaction ---------------------------------------------------------------------------


def test_redacts_the_default_secrets():
    pairs = [
        ("Authorization", TOKEN),
        ("Signature", SIGNATURE),
        ("Cookie", "session=abc"),
        ("Set-Cookie", "session=def; Secure"),
        ("Content-Type", "application/json; charset=utf-8"),
        ("x-xbl-contract-version", "107"),
    ]
    out = recording.Redactor().headers(pairs)
    assert [name for name, _ in out] == [name for name, _ in pairs]
    for (name, value), (_, raw) in zip(out[1:4], pairs[1:4], strict=True):
        assert value == "redacted:" + hashlib.sha256(raw.encode()).hexdigest()[:12], name
    # An XBL authorization keeps its shape: the user hash and the token hashed apart.
    user, token = TOKEN.removeprefix("XBL3.0 x=").split(";", 1)
    assert out[0][1] == ("XBL3.0 x=redacted:" + hashlib.sha256(user.encode()).hexdigest()[:12]
                         + ";redacted:" + hashlib.sha256(token.encode()).hexdigest()[:12])
    assert out[4:] == [list(p) for p in pairs[4:]]
    text = json.dumps(out)
    for secret in (TOKEN, "eyJ", SIGNATURE, "session=abc", "session=def"):
        assert secret not in text


@pytest.mark.parametrize("name", ["authorization", "AUTHORIZATION", "signature", "cOOKIE",
                                  "set-cookie"])
def test_redaction_ignores_name_case(name):
    ((_, value),) = recording.Redactor().headers([(name, TOKEN)])
    assert secrets.is_redacted(value) and "2533274800000002" not in value


def test_extra_names():
    redactor = recording.Redactor((*recording.DEFAULT_REDACT, "X-Xbl-Debug", "x-secret"))
    out = dict(redactor.headers([("x-xbl-debug", "node=7"), ("X-SECRET", "s"), ("ETag", '"e"'),
                                 ("Authorization", TOKEN)]))
    assert out["x-xbl-debug"].startswith("redacted:")
    assert out["X-SECRET"].startswith("redacted:")
    assert secrets.is_redacted(out["Authorization"])
    assert out["ETag"] == '"e"'


def test_redaction_is_stable_and_keeps_users_apart():
    assert recording.redact_value(TOKEN) == recording.redact_value(TOKEN)
    assert recording.redact_value(TOKEN) != recording.redact_value(OTHER_TOKEN)
    assert len(recording.redact_value("a token")) == len("redacted:") + 12


def test_a_user_keeps_one_identity_across_token_refreshes():
    refreshed = TOKEN.rsplit(";", 1)[0] + ";eyJhbm90aGVyIHRva2VuIGZvciB0aGUgc2FtZSB1c2VyIn0"
    assert recording.redact_value(TOKEN) != recording.redact_value(refreshed)
    assert recording.user_of(TOKEN) == recording.user_of(refreshed)
    assert recording.user_of(recording.redact_value(TOKEN)) == recording.user_of(TOKEN)
    assert recording.user_of(TOKEN) != recording.user_of(OTHER_TOKEN)
    assert "2533274800000002" not in recording.user_of(TOKEN)
    # Without an XBL user hash, the redacted value is the user.
    assert recording.user_of("Bearer abc") == recording.redact_value("Bearer abc")


def test_redaction_is_idempotent():
    once = recording.redact_value(TOKEN)
    assert recording.redact_value(once) == once
    redactor = recording.Redactor()
    first = redactor.headers([("Authorization", TOKEN), ("Accept", "*/*")])
    assert redactor.headers([tuple(p) for p in first]) == first


def test_repeated_headers_keep_order():
    out = recording.Redactor().headers([("Set-Cookie", "a=1"), ("X", "y"), ("Set-Cookie", "b=2")])
    assert [n for n, _ in out] == ["Set-Cookie", "X", "Set-Cookie"]
    assert out[0][1] != out[2][1]


def test_disabled_redactor_writes_raw():
    pairs = [("Authorization", TOKEN), ("Signature", SIGNATURE)]
    assert recording.Redactor(enabled=False).headers(pairs) == [list(p) for p in pairs]


def _afresh(fields: Iterable[Sequence[bytes]], names: frozenset[str],
            enabled: bool) -> list[list[str]]:
    """What `Redactor.headers` gives for raw fields, each field decoded anew."""
    out = []
    for k, v in fields:
        name, value = model.from_bytes(k), model.from_bytes(v)
        named = name.lower() in names or any(
            word in name.lower() for word in recording.redact.SECRET_WORDS)
        # a value with a credential shape (TOKEN) goes whatever its name
        out.append([name, recording.redact_value(value) if enabled and named
                    else recording.Redactor(enabled=enabled).text(value)])
    return out


HEADER_NAMES = st.sampled_from([b"Authorization", b"signature", b"COOKIE", b"Set-Cookie",
                                b"Accept", b"x-secret", b"X-\xff", "\u212a".encode()]) | st.binary(
    max_size=6)
HEADER_VALUES = st.sampled_from([b"a", TOKEN.encode(), b"\xff\xfe"]) | st.binary(max_size=6)
HEADER_FIELDS = st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=8).map(tuple)


@settings(max_examples=300)
@given(st.lists(HEADER_FIELDS, min_size=1, max_size=6), st.booleans(),
       st.sampled_from([recording.DEFAULT_REDACT, ("x-secret", "k"), ()]))
def test_redacting_decoded_fields_is_what_decoding_each_afresh_gives(batches, enabled, names):
    """Fields decoded by the one rule and redacted read as decoding each field anew,
    and each call gets lists of its own."""
    redactor = recording.Redactor(names, enabled=enabled)
    for fields in batches:
        expected = _afresh(fields, redactor.names, enabled)
        decoded = [(model.from_bytes(k), model.from_bytes(v)) for k, v in fields]
        first = redactor.headers(decoded)
        assert first == expected
        for pair in first:
            pair[1] = "changed"
        assert redactor.headers(decoded) == expected


# --- times -------------------------------------------------------------------------------


def test_timestamps():
    assert recording.timestamp(None) is None
    assert recording.timestamp(946684800.25) == "2000-01-01T00:00:00.250000Z"
    assert recording.parse_timestamp("2000-01-01T00:00:00.250000Z") == 946684800.25


@given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
@example(1764063464.9999996)  # rounds up into the next second
@example(1764063464.0000005)
def test_timestamp_is_what_datetime_writes(epoch):
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    assert recording.timestamp(epoch) == moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@given(st.lists(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False)
                | st.sampled_from([946681200.0, 946681203.5, 1764063464.9999996]),
                min_size=1, max_size=200))
def test_remembered_seconds_are_what_datetime_writes(epochs):
    """Times from many seconds in any order, more than are remembered at once."""
    for epoch in epochs:
        moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
        assert recording.timestamp(epoch) == moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
def test_timestamp_round_trip(epoch):
    assert recording.parse_timestamp(recording.timestamp(epoch)) == pytest.approx(epoch,
                                                                                  abs=1e-6)


# --- writer ------------------------------------------------------------------------------


def written(path: Path) -> list[dict[str, Any]]:
    """Every line of a recording, as JSON (the format's header line included)."""
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_writer_numbers_and_flushes_each_line(tmp_path: Path):
    path = tmp_path / "run.jsonl"
    with recording.Writer(path) as writer:
        assert writer.write(record()) == 1
        # Read through another handle while the writer is still open.
        header, *lines = written(path)
        assert header == {"format": "mpsdproxy-recording", "version": 2}
        assert [x["seq"] for x in lines] == [1]
        assert writer.write(record("PUT")) == 2
        lines = written(path)[1:]
        assert [x["seq"] for x in lines] == [1, 2]
        assert path.read_text().endswith("\n")
    first = lines[0]
    assert next(iter(first)) == "seq"
    assert first == {"seq": 1, **record()}
    assert [r["seq"] for r in recording.read(path, strict=True)] == [1, 2]


def test_writer_keeps_unicode_readable(tmp_path: Path):
    path = tmp_path / "run.jsonl"
    with recording.Writer(path) as writer:
        writer.write(record(url="https://h/handles/Zoë"))
    assert "Zoë" in path.read_text(encoding="utf-8")


def test_writer_continues_an_existing_recording(tmp_path: Path):
    path = tmp_path / "run.jsonl"
    with recording.Writer(path) as writer:
        writer.write(record())
        writer.write(record())
    with recording.Writer(path) as writer:
        assert writer.seq == 2
        assert writer.write(record()) == 3
    assert [r["seq"] for r in recording.read(path, strict=True)] == [1, 2, 3]


def test_writer_continues_after_the_highest_seq(tmp_path: Path):
    path = tmp_path / "run.jsonl"
    path.write_text(line(4) + line(9) + "garbage\n" + line(7))
    with recording.Writer(path) as writer:
        assert writer.write(record()) == 10


def test_writer_after_a_killed_writer_loses_nothing_new(tmp_path: Path):
    path = tmp_path / "run.jsonl"
    path.write_text(line(1) + line(2) + line(3)[:25])  # the third record was cut mid-line
    with recording.Writer(path) as writer:
        assert writer.write(record("DELETE")) == 3
    issues: list[ReadIssue] = []
    records = list(recording.read(path, issues=issues))
    assert [(r["seq"], r["request"]["method"]) for r in records] == [
        (1, "GET"), (2, "GET"), (3, "DELETE"),
    ]
    assert [issue.line for issue in issues] == [3]


class _Trickle:
    """A file that takes at most `step` bytes a write, as a nearly full disk might."""

    def __init__(self, step: int) -> None:
        self.data = bytearray()
        self.step = step
        self.closed = False

    def tell(self) -> int:
        return len(self.data)

    def write(self, data) -> int:
        taken = bytes(data[:self.step])
        self.data += taken
        return len(taken)

    def close(self) -> None:
        self.closed = True


def test_writer_finishes_a_short_write_and_fails_loudly_on_none(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch):
    disk = _Trickle(7)
    monkeypatch.setattr(writer_module, "open", lambda *args, **kwargs: disk, raising=False)
    writer = recording.Writer(tmp_path / "run.jsonl")
    writer.write(record())
    header, first = disk.data.splitlines()
    assert json.loads(first) == {"seq": 1, **record()}
    assert disk.data.endswith(b"\n")
    disk.step = 0
    with pytest.raises(OSError, match="could not write"):
        writer.write(record())
    writer.close()
    assert disk.closed


def test_writer_on_an_empty_file(tmp_path: Path):
    path = tmp_path / "run.jsonl"
    path.write_text("")
    with recording.Writer(path) as writer:
        assert writer.write(record()) == 1
    assert [x.get("seq") for x in written(path)] == [None, 1]


# --- reader ------------------------------------------------------------------------------


def test_reader_streams(tmp_path: Path):
    path = tmp_path / "run.jsonl"
    path.write_text(line(1))
    records = recording.read(path)
    assert next(records)["seq"] == 1
    # A line appended after reading began is still seen: nothing was slurped up front.
    with path.open("a") as f:
        f.write(line(2))
    assert [r["seq"] for r in records] == [2]


def test_reader_names_a_truncated_last_line(tmp_path: Path):
    path = tmp_path / "run.jsonl"
    path.write_text(line(1) + line(2) + line(3)[:-20])
    issues: list[ReadIssue] = []
    assert [r["seq"] for r in recording.read(path, issues=issues)] == [1, 2]
    (issue,) = issues
    assert issue.truncated
    assert issue.line == 3
    assert str(issue) == f"{path}:3: truncated last line (writer stopped mid-record)"


def test_a_complete_last_line_without_newline_is_a_record(tmp_path: Path):
    path = tmp_path / "run.jsonl"
    path.write_text(line(1) + line(2).rstrip("\n"))
    assert [r["seq"] for r in recording.read(path, strict=True)] == [1, 2]


def test_strict_raises_with_file_and_line(tmp_path: Path):
    path = tmp_path / "run.jsonl"
    path.write_text(line(1) + "{oops\n" + line(3))
    with pytest.raises(RecordError, match=rf"^{path}:2: not valid JSON") as e:
        list(recording.read(path, strict=True))
    assert (e.value.path, e.value.line) == (str(path), 2)
    assert isinstance(e.value, ValueError)


def test_strict_raises_on_a_truncated_last_line(tmp_path: Path):
    path = tmp_path / "run.jsonl"
    path.write_text(line(1) + line(2)[:10])
    with pytest.raises(RecordError, match=r":2: truncated last line"):
        list(recording.read(path, strict=True))


def _good(seq: int) -> dict[str, object]:
    return {"seq": seq, **record()}


def _with(seq: int, /, **changes: object) -> str:
    item = _good(seq)
    for dotted, value in changes.items():
        target = item
        *parents, leaf = dotted.split("__")
        for parent in parents:
            target = target[parent]  # type: ignore[assignment,index]
        if value is KeyError:
            del target[leaf]  # type: ignore[attr-defined]
        else:
            target[leaf] = value  # type: ignore[index]
    return json.dumps(item) + "\n"


# (the bad line, the problem it must be reported with)
MALFORMED = [
    ("{not json}\n", "not valid JSON"),
    ("[1, 2, 3]\n", "a record should be a JSON object, not list"),
    ('"a string"\n', "a record should be a JSON object, not str"),
    (_with(0, seq=KeyError), "missing 'seq', or not a whole number"),
    (_with(0, seq="7"), "missing 'seq', or not a whole number"),
    (_with(0, seq=True), "missing 'seq', or not a whole number"),
    (_with(0, seq=-4), "missing 'seq', or not a whole number"),
    (_with(0, seq=2**63), "missing 'seq', or not a whole number"),
    (_with(0, request=KeyError), "missing 'request' with 'method' and 'url'"),
    (_with(0, request__method=7), "missing 'request' with 'method' and 'url'"),
    (_with(0, request__url=None), "missing 'request' with 'method' and 'url'"),
    (_with(0, response__status="200"), "'response' should be null or an object"),
    (_with(0, response=[]), "'response' should be null or an object"),
    (_with(0, response__status=True), "'response' should be null or an object"),
    (_with(0, request__body="raw"), "'request.body' should be null or one of"),
    (_with(0, response__body={"text": "a", "json": 1}), "'response.body' should be null or one of"),
    (_with(0, response__body={"hex": "00"}), "'response.body' should be null or one of"),
    (_with(0, response__body={"base64": "not base64!"}), "'response.body' is not valid base64"),
    (_with(0, request__body={"base64": "é"}), "'request.body' is not valid base64"),
    (_with(0, request__body={"base64": 12}), "'request.body' should hold its text or base64 as"),
    (_with(0, request__body={"text": None}), "'request.body' should hold its text or base64 as"),
    (_with(0, request__headers=5), "'request.headers' should be a list of [name, value] pairs"),
    (_with(0, request__headers=[["Host"]]), "'request.headers' should be a list of [name, value]"),
    (_with(0, response__headers=[["Age", 1]]), "'response.headers' should be a list of [name,"),
    (_with(0, response__headers=["Age: 1"]), "'response.headers' should be a list of [name,"),
    (_with(0, response__reason=200), "'response.reason' should be a string or null, not a number"),
    (_with(0, response__truncated=[]), "'response.truncated' should be an object or null, not an"),
    (_with(0, provenance=True), "'provenance' should be an object or null, not a boolean"),
    (_with(0, classification="200.ok"), "'classification' should be an object or null, not a"),
    (_with(0, resource=[]), "'resource' should be an object or null, not an array"),
    (_with(0, error={"msg": "x"}), "'error' should be a string or null, not an object"),
    (_with(0, provenance={"source": ["injected"]}), "'provenance.source' should be a string"),
    (_with(0, provenance={"source": "replayed", "record": "3"}), "'provenance.record' should be a"),
    (_with(0, classification={"id": 200}), "'classification.id' should be a string or null"),
    (_with(0, classification={"id": "200.ok", "anomalies": [1]}), "'classification.anomalies'"),
    (_with(0, resource={"kind": "session", "template": 1.5}), "'resource.template' should be a"),
    ("[" * 100_000 + "\n", "not valid JSON"),
]


@pytest.mark.parametrize("bad, problem", MALFORMED, ids=[p for _, p in MALFORMED])
def test_malformed_lines_are_reported_with_their_line(tmp_path: Path, bad, problem):
    path = tmp_path / "run.jsonl"
    path.write_text(line(1) + "\n" + bad + line(4), encoding="utf-8")
    issues: list[ReadIssue] = []
    assert [r["seq"] for r in recording.read(path, issues=issues)] == [1, 4]
    (issue,) = issues
    assert issue.line == 3
    assert problem in issue.problem
    assert not issue.truncated
    with pytest.raises(RecordError, match=rf":3: .*{problem[:12]}"):
        list(recording.read(path, strict=True))


def test_nothing_is_silently_dropped(tmp_path: Path):
    path = tmp_path / "run.jsonl"
    bad = [b for b, _ in MALFORMED]
    path.write_text("".join(line(i) + b for i, b in enumerate(bad, start=1)))
    issues: list[ReadIssue] = []
    records = list(recording.read(path, issues=issues))
    assert len(records) == len(bad)
    assert [i.line for i in issues] == list(range(2, 2 * len(bad) + 1, 2))


@pytest.mark.parametrize("changes", [{"client": 1.5}, {"start": 1480000000},
                                     {"end": ["x"]}, {"duration_ms": "12"},
                                     {"duration_ms": True}])
def test_when_and_from_where_of_another_type_read_as_unknown(tmp_path: Path,
                                                             changes: dict[str, object]) -> None:
    """A time or a peer that cannot be read is unknown, as in a record without it: the
    exchange itself is still read (and replayed, reported, exported)."""
    path = tmp_path / "run.jsonl"
    path.write_text(_with(1, **changes))
    exchange = recording.to_exchange(next(recording.read(path, strict=True)))
    assert exchange.request.method == "GET"
    assert exchange.client is None or "client" not in changes
    assert exchange.start is None or "start" not in changes
    assert exchange.end is None or "end" not in changes


def test_a_response_may_be_null(tmp_path: Path):
    path = tmp_path / "run.jsonl"
    path.write_text(_with(1, response=None))
    assert next(recording.read(path, strict=True))["response"] is None


def test_iter_records_yields_issues_in_place(tmp_path: Path):
    path = tmp_path / "run.jsonl"
    path.write_text(line(1) + "x\n" + line(3))
    items = list(recording.iter_records(path))
    assert [type(i).__name__ for i in items] == ["dict", "ReadIssue", "dict"]


@settings(max_examples=200, deadline=None)
@given(st.one_of(
    st.binary(max_size=300),
    st.lists(st.one_of(st.sampled_from([line(1), line(2).rstrip("\n"), "\n", "{", "[]\n",
                                        _with(3, request__body={"base64": "ü"})]),
                       st.text(max_size=40)), max_size=6).map(lambda x: "".join(x).encode()),
))
@example(b"[" * 50_000)
@example(b'{"seq":1,"request":{"method":"GET","url":"/","body":{"base64":"\xc3\xa9"}}}\n')
@example(b"\r\r\n\x00\xff")
def test_reader_raises_nothing_but_record_error(tmp_path_factory, content):
    path = tmp_path_factory.getbasetemp() / "fuzz.jsonl"
    path.write_bytes(content)
    issues: list[ReadIssue] = []
    records = list(recording.read(path, issues=issues))
    assert all(isinstance(r, dict) and isinstance(r["seq"], int) for r in records)
    try:
        strict = list(recording.read(path, strict=True))
    except RecordError:
        assert issues
    else:
        assert strict == records and not issues


# --- exchanges -----------------------------------------------------------------------------


def odd_exchange() -> model.Exchange:
    """An exchange with every kind of awkward bytes the wire can carry."""
    depth = 1000
    request = model.Request(
        "PUT", "https://sessiondirectory.xboxlive.com/handles/caf\udce9?x=1",
        model.Headers.from_raw([(b"Authorization", TOKEN.encode()), (b"X-Title", b"Caf\xff"),
                                (b"x-title", b"again")]),
        b"[" * depth + b"1" + b"]" * depth)
    response = model.Response(201, "Cr\u00e9\udcfe", [("ETag", '"e"')], b"\xff\xfe")
    return model.Exchange(request, response, start=946684800.25, end=946684800.5,
                          client="127.0.0.1:1", provenance={"source": "injected", "rule": "r"})


def test_an_exchange_round_trips_through_a_recording(tmp_path: Path):
    path = tmp_path / "run.jsonl"
    exchange = odd_exchange()
    with recording.Writer(path) as writer:
        writer.write(recording.to_record(exchange, recording.Redactor(enabled=False)))
        writer.write(recording.to_record(exchange, recording.Redactor()))
    clear, redacted = (recording.to_exchange(r) for r in recording.read(path, strict=True))
    assert clear == model.Exchange(**{**exchange.__dict__, "seq": 1})
    assert redacted.seq == 2
    assert redacted.request.headers.get("authorization") == recording.redact_value(TOKEN)
    assert redacted.request.body == exchange.request.body


def test_readers_skip_the_format_line(tmp_path: Path):
    path = tmp_path / "run.jsonl"
    path.write_text(json.dumps(recording.header_line()) + "\n" + line(1) + line(2))
    assert [r["seq"] for r in recording.read(path, strict=True)] == [1, 2]


def test_a_record_too_deep_for_any_encoder_is_still_one_line() -> None:
    """A record built elsewhere (not by the recorder) may hold JSON nested past what
    the json module can write: its body is written as text, never lost."""
    deep: object = 1
    for _ in range(1000):
        deep = [deep]
    line = recording.encode_line({"seq": 1, "request": {
        "method": "PUT", "url": "https://h/", "headers": [], "body": {"json": deep}}})
    body = json.loads(line)["request"]["body"]
    assert recording.decode_body(body) == b"[" * 1000 + b"1" + b"]" * 1000


def test_the_wire_bytes_of_an_encoded_body_survive_a_record() -> None:
    """A Content-Encoding's exact bytes ride beside the decoded body, so an export gives
    back what was sent (same bytes, so Content-Length holds)."""
    import gzip

    from mpsdproxy import model

    wire = gzip.compress(b'{"a":1}', mtime=0)
    response = model.Response(200, "OK", [("Content-Encoding", "gzip")], b'{"a":1}', wire)
    exchange = model.Exchange(model.Request("GET", "https://h/x"), response)
    record = recording.to_record(exchange, recording.Redactor())
    assert record["response"]["body"] == {"json": {"a": 1}}
    again = recording.to_exchange(json.loads(recording.encode_line({"seq": 1, **record})))
    assert again.response is not None and again.response.encoded == wire
    plain = model.Response(200, "OK", body=b"x", encoded=b"x")
    assert plain.encoded is None  # the same bytes are not kept twice


@pytest.mark.parametrize("name", ["Proxy-Authorization", "X-AuthXToken", "x-tickets",
                                  "X-Aad-Token", "MSA_DeviceTicket", "X-Device-Proof",
                                  "X-Xbl-Token-Something"])
def test_every_credential_header_is_redacted_by_name(name: str) -> None:
    redactor = recording.Redactor()
    assert redactor.headers([(name, "s3cret"), ("x-xbl-contract-version", "107")]) == [
        [name, recording.redact_value("s3cret")], ["x-xbl-contract-version", "107"]]
    assert recording.Redactor(enabled=False).headers([(name, "s3cret")]) == [[name, "s3cret"]]
