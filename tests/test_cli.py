"""The command line: every command explains itself, bad input fails in one line, and
the demo runs end to end in a child process and leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import read_records

from mpsdproxy import catalog
from mpsdproxy.cli import cli


def _commands() -> list[str]:
    return sorted(cli.commands)


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert "Example" in result.output, f"{command} --help shows no example"
    for param in cli.commands[command].params:
        if isinstance(param, __import__("click").Option) and param.name != "help":
            assert param.help, f"{command} {param.opts} has no help text"


@pytest.mark.parametrize(
    "args,message",
    [
        (["run", "--listen-port", "70000"], "should be in range [0, 65535]"),
        (["run", "--upstream", "http://x", "--mode", "reverse:http://y"],
         "reverse mode already names its upstream"),
        (["run", "--mode", "nonsense:"], "--mode"),
        (["resend", "README.md", "--to", "ftp://x"], "--to"),
    ],
)
def test_bad_arguments_fail_with_a_clear_message(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0
    assert message in result.output


def test_bad_upstream_url_never_starts(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mpsdproxy", "run", "--listen-port", "0", "--upstream", "nope",
         "--confdir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "Cannot parse --upstream nope" in result.stderr


def test_demo_produces_every_row_and_exits_cleanly(tmp_path: Path) -> None:
    record = tmp_path / "demo.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "mpsdproxy", "demo", "--record", str(record)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    total = len(catalog.ENTRIES)
    assert f"Rows of the status table produced: {total}/{total}" in result.stdout
    assert str(record) in result.stdout
    assert "Traceback" not in result.stderr
    lines = record.read_text().splitlines()
    assert len(lines) >= total
    # the second pass: faults from a shipped scenario, two titles, and the report
    assert "[injected: first-read-unavailable]" in result.stdout
    assert "first-read-unavailable: 4 matched, 2 fired" in result.stdout
    assert "FAIL Retry-After honoured: GET sessions/bad-lobby" in result.stdout
    assert "FAIL Retry-After honoured: GET sessions/good-lobby" not in result.stdout
    assert (tmp_path / "demo-faults.html").exists()


SCENARIOS = Path(__file__).resolve().parent.parent / "mpsdproxy" / "scenarios"
BROKEN = Path(__file__).resolve().parent / "scenarios_broken"


def test_check_accepts_every_shipped_scenario() -> None:
    files = sorted(str(p) for p in SCENARIOS.glob("*.yaml"))
    result = CliRunner().invoke(cli, ["check", *files])
    assert result.exit_code == 0, result.output
    assert f"{len(files)} scenario files valid" in result.output


def test_check_names_file_line_and_key_of_each_problem() -> None:
    broken = BROKEN / "nth-zero.yaml"
    result = CliRunner().invoke(cli, ["check", str(broken), str(SCENARIOS / "outage.yaml")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{broken}:")
    assert ": rules[0].when.nth: " in lines[0]


def test_import_says_what_was_kept_and_dropped_by_host(tmp_path: Path) -> None:
    def entry(url: str) -> dict[str, Any]:
        return {"startedDateTime": "2026-01-01T00:00:00.000Z", "time": 1,
                "request": {"method": "GET", "url": url, "headers": []},
                "response": {"status": 200, "statusText": "OK", "headers": [],
                             "content": {"size": 0, "mimeType": ""}}}

    lobby = "https://sessiondirectory.xboxlive.com/serviceconfigs/x/sessiontemplates/t/sessions/"
    urls = ([lobby + "a", lobby + "b", "https://rta.xboxlive.com/connect"]
            + ["https://www.bing.com/"] * 4 + ["https://login.live.com/"] * 5)
    capture = tmp_path / "capture.har"
    capture.write_text(json.dumps({"log": {"version": "1.2",
                                           "entries": [entry(u) for u in urls]}}))
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["import", str(capture), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"Imported into {out}: kept 3 exchange(s) (sessiondirectory.xboxlive.com 2, "
        "rta.xboxlive.com 1); dropped 9 (login.live.com 5, www.bing.com 4)")
    result = CliRunner().invoke(cli, ["import", str(capture), "-o", str(out), "--append",
                                      "--host", "www.bing.com"])  # one more host kept
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith(
        ": kept 7 exchange(s) (www.bing.com 4, sessiondirectory.xboxlive.com 2, "
        "rta.xboxlive.com 1); dropped 5 (login.live.com 5)")
    result = CliRunner().invoke(cli, ["import", str(capture), "-o", str(out), "--append",
                                      "--all-hosts"])
    assert result.exit_code == 0, result.output
    assert ": kept 12 exchange(s) (" in result.stdout
    assert result.stdout.strip().endswith("; dropped 0")
    assert len(read_records(out)) == 3 + 7 + 12


def test_scan_prints_a_line_per_finding_and_exits_1(tmp_path: Path) -> None:
    from test_secrets import XBL

    clean, dirty = tmp_path / "a.har", tmp_path / "x.har"
    for path, value in ((clean, "gzip"), (dirty, XBL)):
        path.write_text(json.dumps({"log": {"version": "1.2", "entries": [{
            "request": {"method": "GET", "url": "https://h/", "headers": [
                {"name": "X-Note", "value": value}]},
            "response": {"status": 200, "headers": []}}]}}))
    result = CliRunner().invoke(cli, ["scan", str(clean)])
    assert result.exit_code == 0, result.output
    assert "nothing credential-shaped found" in result.stdout
    result = CliRunner().invoke(cli, ["scan", str(clean), str(dirty)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [f"{dirty}:entry 1 request.headers[X-Note]: "
                                          f"xbl3: {XBL[:4]}..."]
    assert XBL[5:] not in result.stdout


def test_format_choices_come_from_the_format_table() -> None:
    from mpsdproxy.addons import flowfile

    result = CliRunner().invoke(cli, ["export", "--help"])
    assert f"[{'|'.join(flowfile.FORMATS)}]" in result.output
    bad = CliRunner().invoke(cli, ["export", "x", "--format", "nope", "-o", "y"])
    assert bad.exit_code == 2
