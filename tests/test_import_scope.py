"""Import scope, refused and atomic outputs, bounded and streamed reading, and HAR exports
that validate against HAR 1.2."""

from __future__ import annotations

import datetime
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mpsdproxy import interchange
from mpsdproxy import recording

HOST = "sessiondirectory.xboxlive.com"
SCID = "6efc0200-1111-2222-3333-444455556666"
SESSION = f"https://{HOST}/serviceconfigs/{SCID}/sessionTemplates/Lobby/sessions/s1"
ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((Path(__file__).parent / "test_har_schema.json").read_text())


def entry(url: str, status: int | None = 200, body: str = "{}") -> dict[str, Any]:
    response: dict[str, Any] = {"status": 0, "statusText": "", "httpVersion": "",
                                "headers": [], "cookies": [], "content": {"size": 0,
                                                                          "mimeType": ""},
                                "redirectURL": "", "headersSize": -1, "bodySize": -1}
    if status is not None:
        response.update(status=status, statusText="OK",
                        headers=[{"name": "Content-Type", "value": "application/json"}],
                        content={"size": len(body), "mimeType": "application/json",
                                 "text": body})
    return {"startedDateTime": "2026-11-25T09:37:44.123Z", "time": 5,
            "request": {"method": "GET", "url": url, "httpVersion": "HTTP/1.1",
                        "headers": [], "cookies": [], "queryString": [],
                        "headersSize": -1, "bodySize": 0},
            "response": response, "cache": {},
            "timings": {"send": 0, "wait": 5, "receive": 0}}


def har(path: Path, *entries: Any) -> str:
    path.write_text(json.dumps({"log": {"version": "1.2", "creator": {"name": "t",
                                                                      "version": "1"},
                                        "entries": list(entries)}}))
    return str(path)


def mixed(tmp_path: Path) -> str:
    return har(tmp_path / "mixed.har", entry(SESSION), entry("https://rta.xboxlive.com/connect"),
               entry("https://login.live.com/ppsecure"), entry("https://www.bing.com/"),
               entry("https://login.live.com/other"))


def test_default_scope_keeps_mpsd_and_rta_hosts(tmp_path: Path) -> None:
    out = str(tmp_path / "out.jsonl")
    result = interchange.import_file(mixed(tmp_path), out)
    assert result.count == 2
    assert result.kept_by_host == {HOST: 1, "rta.xboxlive.com": 1}
    assert result.dropped_by_host == {"login.live.com": 2, "www.bing.com": 1}
    assert "dropped 3 (login.live.com 2, www.bing.com 1)" in result.summary()
    assert [r["request"]["url"] for r in recording.read(out)] == [
        SESSION, "https://rta.xboxlive.com/connect"]


def test_hosts_add_to_the_scope_and_all_hosts_keeps_everything(tmp_path: Path) -> None:
    src = mixed(tmp_path)
    added = interchange.import_file(src, str(tmp_path / "a.jsonl"), hosts=["WWW.Bing.com"])
    assert added.kept_by_host == {HOST: 1, "rta.xboxlive.com": 1, "www.bing.com": 1}
    everything = interchange.import_file(src, str(tmp_path / "b.jsonl"), all_hosts=True)
    assert everything.count == 5 and everything.dropped_by_host == {}


def test_processes_need_a_saz(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="SAZ"):
        interchange.import_file(mixed(tmp_path), str(tmp_path / "o.jsonl"), processes=["x"])
    assert not (tmp_path / "o.jsonl").exists()


def saz_with_processes(path: Path) -> str:
    meta = ('<?xml version="1.0" encoding="utf-8"?><Session SID="{n}"><SessionFlags>'
            '<SessionFlag N="x-ProcessInfo" V="{p}" /></SessionFlags></Session>')
    with zipfile.ZipFile(path, "w") as z:
        for n, process in ((1, "x49.exe:1234"), (2, "svchost:1376"), (3, "X49:99")):
            z.writestr(f"raw/{n:03d}_c.txt", f"GET {SESSION} HTTP/1.1\r\nHost: {HOST}\r\n\r\n")
            z.writestr(f"raw/{n:03d}_m.xml", meta.format(n=n, p=process))
            z.writestr(f"raw/{n:03d}_s.txt", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    return str(path)


def test_processes_select_sessions_by_fiddler_process_column(tmp_path: Path) -> None:
    src = saz_with_processes(tmp_path / "p.saz")
    result = interchange.import_file(src, str(tmp_path / "o.jsonl"), processes=["X49.EXE"])
    assert result.count == 2 and result.dropped_by_host == {HOST: 1}


def test_the_process_flag_reaches_the_import(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mpsdproxy.cli import cli

    src, out = saz_with_processes(tmp_path / "p.saz"), tmp_path / "o.jsonl"
    result = CliRunner().invoke(cli, ["import", src, "-o", str(out), "--process", "x49.exe"])
    assert result.exit_code == 0, result.output
    assert f"kept 2 exchange(s) ({HOST} 2); dropped 1 ({HOST} 1)" in result.stdout


def test_an_existing_output_is_refused_unless_appending(tmp_path: Path) -> None:
    src, out = mixed(tmp_path), tmp_path / "out.jsonl"
    interchange.import_file(src, str(out))
    before = out.read_bytes()
    with pytest.raises(ValueError, match="exists") as info:
        interchange.import_file(src, str(out))
    assert "\n" not in str(info.value)
    assert out.read_bytes() == before
    again = interchange.import_file(src, str(out), append=True)
    assert (again.first_seq, again.last_seq) == (3, 4)
    assert [r["seq"] for r in recording.read(out, strict=True)] == [1, 2, 3, 4]


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"log": {"entries": [{"a": [1,}]}}'])
def test_a_failed_import_leaves_nothing_behind(tmp_path: Path, content: bytes) -> None:
    src = tmp_path / "bad.har"
    src.write_bytes(content)
    with pytest.raises(ValueError) as info:
        interchange.import_file(str(src), str(tmp_path / "out.jsonl"))
    assert str(src) in str(info.value) and "\n" not in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["bad.har"]


def test_a_failed_append_keeps_the_recording_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    interchange.import_file(mixed(tmp_path), str(out))
    before = out.read_bytes()
    bad = tmp_path / "bad.har"
    bad.write_text('{"log": {"entries": [' + json.dumps(entry(SESSION)) + ", {oops}]}}")
    with pytest.raises(ValueError, match="entry 2"):
        interchange.import_file(str(bad), str(out), append=True)
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["bad.har", "mixed.har", "out.jsonl"]


def test_an_output_that_is_the_input_is_refused(tmp_path: Path) -> None:
    src = mixed(tmp_path)
    os.link(src, tmp_path / "hard.har")
    (tmp_path / "soft.har").symlink_to(src)
    before = Path(src).read_bytes()
    for target in (src, str(tmp_path / "hard.har"), str(tmp_path / "soft.har"),
                   str(tmp_path / "." / "mixed.har")):
        with pytest.raises(ValueError, match="writing it would destroy it"):
            interchange.import_file(src, target, append=True)
    rec = tmp_path / "r.jsonl"
    interchange.import_file(src, str(rec))
    recorded = rec.read_bytes()
    os.link(rec, tmp_path / "r2.jsonl")
    for target in (rec, tmp_path / "r2.jsonl"):
        with pytest.raises(ValueError, match="writing it would destroy it"):
            interchange.export_file(str(rec), str(target), "har")
    assert Path(src).read_bytes() == before and rec.read_bytes() == recorded


def test_a_failed_export_keeps_the_old_output(tmp_path: Path) -> None:
    rec = tmp_path / "r.jsonl"
    interchange.import_file(mixed(tmp_path), str(rec))
    old = tmp_path / "old.har"
    old.write_text("precious")

    def broken(exchanges: Any, fo: Any, skipped: Any, total: int, **_: Any) -> int:
        fo.write(b"half")
        raise OSError("disk full")

    formats = {"har": interchange.FORMATS["har"]._replace(write=broken)}
    with pytest.raises(OSError):
        interchange.export_file(str(rec), str(old), "har", formats=formats)
    assert old.read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == ["mixed.har", "old.har", "r.jsonl"]


def test_har_import_names_entries_it_cannot_read(tmp_path: Path) -> None:
    src = har(tmp_path / "x.har", entry(SESSION), 7, {"request": {}}, entry(SESSION))
    result = interchange.import_file(src, str(tmp_path / "o.jsonl"))
    assert result.count == 2
    assert [s.split(":")[0] for s in result.skipped] == ["entry 2", "entry 3"]


def test_har_import_streams_entries_under_a_cap(tmp_path: Path) -> None:
    big = entry(SESSION, body=json.dumps({"x": "y" * 5000}))
    src = har(tmp_path / "big.har", entry(SESSION), big)
    with pytest.raises(ValueError, match="entry 2 is over"):
        interchange.import_file(src, str(tmp_path / "o.jsonl"), max_body=1000 - (1 << 19))
    many = har(tmp_path / "many.har", *[entry(SESSION)] * 3000)
    assert interchange.import_file(many, str(tmp_path / "m.jsonl")).count == 3000


def validate_har(path: Path) -> list[dict[str, Any]]:
    document = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(SCHEMA).validate(document)
    for item in document["log"]["entries"]:
        datetime.datetime.fromisoformat(item["startedDateTime"])
    return document["log"]["entries"]


@pytest.mark.parametrize("sample", sorted((ROOT / "recordings").glob("*.jsonl")),
                         ids=lambda p: p.name)
def test_the_har_export_of_every_sample_recording_is_valid_har(sample: Path,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "out.har"
    result = interchange.export_file(str(sample), str(out), "har")
    entries = validate_har(out)
    assert result.count == len(entries) == sum(1 for _ in recording.read(sample))
    assert all(e["comment"] for e in entries)


def test_an_exchange_without_a_response_is_valid_har(tmp_path: Path) -> None:
    src = har(tmp_path / "x.har", entry(SESSION, status=None))
    rec = tmp_path / "r.jsonl"
    interchange.import_file(src, str(rec))
    interchange.export_file(str(rec), str(tmp_path / "o.har"), "har")
    [only] = validate_har(tmp_path / "o.har")
    assert only["response"]["status"] == 0 and "no-response" in only["comment"]
