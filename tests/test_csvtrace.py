"""csvtrace: the Trace Analyzer's CSV trace in and out (the public sample read in place)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest

from mpsdproxy import diff
from mpsdproxy import interchange
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy.addons import flowfile
from mpsdproxy.interchange import csvtrace

ALL = flowfile.FORMATS
ROOT = Path(__file__).resolve().parent.parent
CAPTURE = ROOT.parent / "shared" / "captures" / "X49_53_violation.csv"
SAMPLES = sorted((ROOT / "recordings").glob("sample-*.jsonl"))
URL = "https://sessiondirectory.xboxlive.com/serviceconfigs/s/sessiontemplates/t/sessions/x"


def capture() -> Path:
    if not CAPTURE.is_file():
        pytest.skip(f"{CAPTURE} is not here (public captures live beside the clone)")
    return CAPTURE


def row(**values: str) -> str:
    """One quoted row line of a made-up call (nothing here comes from a capture)."""
    base = {"Host": "sessiondirectory.xboxlive.com", "Uri": URL,
            "RequestHeaders": "Content-Type: application/json  x-xbl-contract-version: 107  ",
            "RequestBody": '{"a":1}', "ResponseHeaders": "Content-Length: 2  ",
            "ResponseBody": "{}", "HttpStatusCode": "200", "EllapsedCallTimeMs": "12",
            "ReqTimeUTC": "2026-11-25T11:04:46.606Z", "IsGet": "false", "LoggerId": "1",
            "IsShoulderTap": "false", "ChangeNumber": "0", "IsInGameEvent": "false",
            "EventVersion": "0", "BreadCrumb": "00000000-0000-0000-0000-000000000001"}
    base.update(values)
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerow(
        [base.get(name, "") for name in csvtrace.COLUMNS])
    return out.getvalue()


def trace(tmp_path: Path, *rows: str, name: str = "t.csv") -> str:
    header = ",".join(f'"{c}"' for c in csvtrace.COLUMNS)
    path = tmp_path / name
    path.write_text("v1510\n" + header + "\n" + "".join(rows), encoding="utf-8")
    return str(path)


def test_the_public_trace_imports_every_row(tmp_path: Path) -> None:
    path = capture()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "v1510"
    rows = [line for line in lines[2:] if line.strip()]
    taps = sum(1 for line in rows if next(csv.reader([line]))[13].lower() == "true")
    assert interchange.guess_format(str(path), ALL) == "csv"
    out = str(tmp_path / "out.jsonl")
    result = interchange.import_file(str(path), out, formats=ALL, all_hosts=True)
    assert [s for s in result.skipped if "shoulder tap" not in s] == []
    assert result.count + taps == len(rows)
    records = list(recording.read(out, strict=True))
    assert len(records) == result.count
    for record in records:
        assert record["request"]["url"].startswith("https://")
        assert record["request"]["method"] in ("GET", "PUT", "POST", "DELETE")
        assert record["duration_ms"] >= 0


def test_the_public_trace_reads_as_the_analyzer_splits_it() -> None:
    lines = capture().read_text(encoding="utf-8").splitlines()
    for line in lines[2:]:
        assert csvtrace.analyzer_values(line) == next(csv.reader([line]))


def test_methods_are_worked_out_when_the_trace_has_none(tmp_path: Path) -> None:
    path = trace(tmp_path,
                 row(IsGet="true", RequestBody=""),
                 row(),  # a session with a body
                 row(Uri="https://sessiondirectory.xboxlive.com/handles"),
                 row(RequestBody="", HttpStatusCode="204", ResponseBody=""))
    skipped: list[str] = []
    with open(path, "rb") as f:
        exchanges = list(csvtrace.read_csv(f, {}, skipped))
    assert [e.request.method for e in exchanges] == ["GET", "PUT", "POST", "DELETE"]
    assert skipped == []
    first = exchanges[1]
    assert first.request.headers.get("x-xbl-contract-version") == "107"
    assert first.request.body == b'{"a":1}'
    assert first.status == 200 and first.duration_ms == 12.0
    assert recording.timestamp(first.start).startswith("2026-11-25T11:04:46.606")


def _written(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "v1510" and lines[-1] == ""
    header = next(csv.reader([lines[1]]))
    assert header[:len(csvtrace.COLUMNS)] == list(csvtrace.COLUMNS)
    assert lines[1].startswith('"Host","Uri","XboxUserId",')
    return lines[2:-1]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_a_recording_round_trips_through_the_trace(sample: Path, tmp_path: Path) -> None:
    exported = tmp_path / "out.csv"
    result = interchange.export_file(str(sample), str(exported), "csv", formats=ALL)
    assert (result.skipped, result.issues) == ([], [])
    before = list(recording.read(str(sample)))
    rows = _written(exported)
    assert result.count == len(before) == len(rows)
    for line in rows:  # every row reads the same under the analyzer's own splitting
        values = next(csv.reader([line]))
        assert csvtrace.analyzer_values(line) == values
        assert len(values) == len(csvtrace.COLUMNS) + 1
    back = str(tmp_path / "back.jsonl")
    imported = interchange.import_file(str(exported), back, formats=ALL, all_hosts=True)
    assert (imported.count, imported.skipped) == (len(before), [])
    assert not diff.diff(str(sample), back).regressed
    for old, new in zip(before, recording.read(back), strict=True):
        a, b = recording.to_exchange(old), recording.to_exchange(new)
        assert (b.request.method, b.request.url) == (a.request.method, a.request.url)
        assert list(b.request.headers) == list(a.request.headers)
        assert b.request.body == a.request.body
        assert b.status == a.status
        if a.response is not None:
            assert list(b.response.headers) == list(a.response.headers)
            assert b.response.body == a.response.body
        assert round(b.start * 1000) == round(a.start * 1000)
        assert round(b.end * 1000) == round(a.end * 1000)


def test_rows_the_trace_cannot_hold_are_named(tmp_path: Path) -> None:
    request = model.Request("PUT", URL, [("Content-Type", "text/plain")], b"one\ntwo")
    pretty = model.Request("PUT", URL, [("Content-Type", "application/json")], b'{\n "a": 1\n}')
    broken = model.Request("PUT", URL, [("Content-Type", "application/json")], b'{"a",')
    ambiguous = model.Request("PUT", URL, [("X-Note", "a  B: c")], b"")
    relative = model.Request("GET", "/sessions/x")
    exchanges = [model.Exchange(r, model.Response(200), start=1.0, end=1.5, seq=n)
                 for n, r in enumerate([request, pretty, broken, ambiguous, relative], 1)]
    skipped: list[str] = []
    out = io.BytesIO()
    assert csvtrace.write_csv(exchanges, out, skipped, len(exchanges)) == 2
    assert [s.split(":")[0] for s in skipped] == ["record 1", "record 3", "record 4", "record 5"]
    assert "line breaks written as spaces" in skipped[0]
    assert "\r" not in out.getvalue().decode() and out.getvalue().count(b"\n") == 4
    skipped = []
    back = list(csvtrace.read_csv(io.BytesIO(out.getvalue()), {}, skipped))
    assert skipped == []
    assert [e.request.body for e in back] == [b"one two", b'{  "a": 1 }']
    assert [e.duration_ms for e in back] == [500.0, 500.0]


def test_bad_rows_are_one_line_each(tmp_path: Path) -> None:
    path = trace(tmp_path,
                 row(),                                       # line 3: fine
                 '"only","three","columns"\n',                 # line 4
                 row(HttpStatusCode="abc"),                   # line 5
                 row(ReqTimeUTC="yesterday"),                 # line 6
                 row(IsGet="maybe"),                          # line 7
                 row(Uri="/sessions/x"),                      # line 8
                 row(RequestHeaders="no colon here"),         # line 9
                 row(IsShoulderTap="true"),                   # line 10
                 row(HttpStatusCode="999"),                   # line 11
                 "\n",                                        # line 12: blank, ignored
                 row(EllapsedCallTimeMs="-4"),                # line 13
                 '"a","b\n')                                  # line 14: quote left open
    out = str(tmp_path / "out.jsonl")
    result = interchange.import_file(path, out, formats=ALL, all_hosts=True)
    assert result.count == 1
    assert [s.split(":")[0] for s in result.skipped] == [
        f"line {n}" for n in (4, 5, 6, 7, 8, 9, 10, 11, 13, 14)]
    assert all("\n" not in s and "Traceback" not in s for s in result.skipped)
    assert "shoulder tap" in result.skipped[6]


@pytest.mark.parametrize("text", ["hello\n", "", "v1510\n\"Name\",\"Value\"\n",
                                  "v9999\n", "\x00\x01binary"])
def test_a_file_that_is_not_a_trace_is_one_value_error(text: str, tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text(text, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    with pytest.raises(ValueError, match="not a Trace Analyzer CSV trace") as caught:
        interchange.import_file(str(path), str(out), formats=ALL, all_hosts=True)
    assert "\n" not in str(caught.value)
    assert not os.path.exists(out)


def test_the_format_is_recognised_by_its_first_line(tmp_path: Path) -> None:
    path = trace(tmp_path, row(), name="trace.txt")
    assert interchange.guess_format(path, ALL) == "csv"
    assert "csv" in interchange.FORMATS and "csv" in ALL
    assert csvtrace.looks_like(b"\xef\xbb\xbfv") and not csvtrace.looks_like(b"vers")


def test_headers_text_both_ways() -> None:
    pairs = [("If-Match", '"abc"'), ("Empty", ""), ("X-Two", "a b"), ("Accept", "*/*")]
    text = csvtrace.format_headers(model.Headers(pairs))
    assert text == 'If-Match: "abc"  Empty:   X-Two: a b  Accept: */*  '
    assert csvtrace.parse_headers(text) == pairs
    assert csvtrace.parse_headers("") == []


def test_bytes_that_are_not_utf8_come_back_as_they_were() -> None:
    url = URL + "caf\udce9"
    exchange = model.Exchange(
        model.Request("PUT", url, [("X-Title", "Caf\udce9 \udcff")], b'{"n":"\xff"}'),
        model.Response(200, "OK", [("X-Odd", "\udcffend")], b"\xfe"), start=2.0, end=2.25)
    out = io.BytesIO()
    skipped: list[str] = []
    assert csvtrace.write_csv([exchange], out, skipped, 1) == 1 and skipped == []
    (back,) = csvtrace.read_csv(io.BytesIO(out.getvalue()), {}, skipped)
    assert (back.request, back.response.headers, back.response.body) == (
        exchange.request, exchange.response.headers, exchange.response.body)
