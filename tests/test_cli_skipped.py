"""What a command left out is said once per reason: a Fiddler capture's tunnels, a
recording's websocket messages a CSV has no place for, are named on one line each."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from mpsdproxy.cli import cli
from mpsdproxy.cli.base import skip_lines

SESSION = ("https://sessiondirectory.xboxlive.com/serviceconfigs/00000000-0000-0000-0000-"
           "000000000001/sessiontemplates/LobbySession/sessions/lobby")


def test_notes_sharing_a_reason_are_named_on_one_line_with_their_numbers_as_ranges() -> None:
    notes = [f"session {n}: CONNECT" for n in (9, 1, 3, 4, 5)]
    notes += ["session 2: cannot read it (no request)", "pass.jsonl:7: not JSON"]
    assert skip_lines(notes) == [
        "skipped 5 sessions 1, 3..5, 9: CONNECT",
        "skipped session 2: cannot read it (no request)",
        "skipped pass.jsonl:7: not JSON",  # a bad line keeps its file:line form
    ]


def test_a_long_list_is_cut_as_the_report_cuts_the_records_it_names() -> None:
    [line] = skip_lines(f"session {n}: CONNECT" for n in range(1, 200, 2))
    assert line.startswith("skipped 100 sessions 1, 3, 5, ")
    assert line.endswith(" and 88 more up to 199: CONNECT")


def test_each_kind_of_item_keeps_its_own_line_and_plural() -> None:
    notes = ["entry 1: CONNECT", "entry 2: CONNECT", "record 1: CONNECT"]
    assert skip_lines(notes) == ["skipped 2 entries 1..2: CONNECT",
                                 "skipped record 1: CONNECT"]


def _har_entry(method: str, url: str) -> dict[str, object]:
    return {"startedDateTime": "2026-01-01T00:00:00.000Z", "time": 1,
            "request": {"method": method, "url": url, "httpVersion": "HTTP/1.1",
                        "headers": [], "queryString": [], "cookies": [], "headersSize": -1,
                        "bodySize": 0},
            "response": {"status": 200, "statusText": "OK", "httpVersion": "HTTP/1.1",
                         "headers": [], "cookies": [], "content": {"size": 0, "mimeType": ""},
                         "redirectURL": "", "headersSize": -1, "bodySize": 0},
            "cache": {}, "timings": {"send": 0, "wait": 1, "receive": 0}}


def test_import_names_every_tunnel_it_skipped_on_one_line(tmp_path: Path) -> None:
    tunnels = [_har_entry("CONNECT", "https://sessiondirectory.xboxlive.com:443")] * 3
    har = {"log": {"version": "1.2", "creator": {"name": "t", "version": "1"},
                   "entries": [*tunnels, _har_entry("GET", SESSION)]}}
    capture, out = tmp_path / "capture.har", tmp_path / "out.jsonl"
    capture.write_text(json.dumps(har))
    result = CliRunner().invoke(cli, ["import", str(capture), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "kept 1 exchange(s)" in result.stdout and "skipped 3" in result.stdout
    assert result.stderr.splitlines() == ["skipped 3 entries 1..3: CONNECT"]
