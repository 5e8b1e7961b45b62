"""Only MPSD is judged as MPSD, on the real public captures in ../shared/captures/.

The captures are opened in place (never copied) and the tests skip when the
folder is missing. Each is imported with every host kept, so the report has to
tell the session directory's exchanges from a whole machine's traffic itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mpsdproxy import interchange
from mpsdproxy import recording
from mpsdproxy import report
from mpsdproxy import resources
from mpsdproxy.addons import flowfile
from mpsdproxy.verdicts import Status

CAPTURES = Path(__file__).resolve().parents[2] / "shared" / "captures"


def capture(name: str) -> Path:
    path = CAPTURES / name
    if not path.is_file():
        pytest.skip(f"the public capture {name} is not in {CAPTURES}")
    return path


def import_all_hosts(name: str, out: Path) -> Path:
    """Import a capture keeping every host."""
    interchange.import_file(str(capture(name)), str(out), formats=flowfile.FORMATS,
                            all_hosts=True)
    return out


@pytest.fixture(scope="module")
def x49(tmp_path_factory: pytest.TempPathFactory) -> report.Report:
    out = tmp_path_factory.mktemp("x49") / "x49.jsonl"
    return report.build_report(import_all_hosts("x49_mp_cs21.saz", out))


@pytest.fixture(scope="module")
def nomp(tmp_path_factory: pytest.TempPathFactory) -> report.Report:
    out = tmp_path_factory.mktemp("nomp") / "clear_nomp.jsonl"
    return report.build_report(import_all_hosts("clear_nomp.saz", out))


def test_x49_has_no_mpsd_anomaly(x49: report.Report) -> None:
    assert x49.mpsd_exchanges > 0
    assert x49.anomaly_total == 0, x49.anomalies
    assert None not in x49.by_entry  # every MPSD exchange has its row of the table
    assert x49.by_kind.keys() <= {k.value for k in resources.Kind} - {"unknown"}


def test_x49_lists_the_other_hosts_apart(x49: report.Report) -> None:
    assert x49.other_hosts, "the capture holds a whole machine's traffic"
    assert not any(resources.is_mpsd_host(host) for host in x49.other_hosts)
    assert {"www.bing.com", "login.live.com", *resources.RTA_HOSTS} <= x49.other_hosts.keys()
    assert x49.mpsd_exchanges + sum(x49.other_hosts.values()) == x49.exchanges
    text = report.render(x49, "text")
    assert "OTHER HOSTS (" in text and "  www.bing.com" in text
    doc = json.loads(report.render(x49, "json"))
    assert doc["other_hosts"] == dict(x49.other_hosts_order())
    assert doc["outcome"]["no_session_directory_traffic"] is False


def test_x49_a_search_engine_is_not_coverage(x49: report.Report) -> None:
    """A bing.com `POST` 204 was once counted as 204.get-session coverage."""
    assert "204.get-session" not in x49.by_entry
    assert sum(x49.by_entry.values()) == x49.mpsd_exchanges


def test_x49_budget_counts_only_the_session_directory(x49: report.Report) -> None:
    """The MPSD peak, not the whole machine's (once "20 per 15 s" for a real peak of 10)."""
    budget = [v for v in x49.verdicts if v.rule == "rate-budget"]
    assert budget and all(v.status is Status.PASS for v in budget), budget
    peaks = [int(p.split("/")[0]) for v in budget
             for p in v.reason.split("peak ")[1:]]
    assert peaks and max(peaks) <= x49.mpsd_exchanges


def test_clear_nomp_reports_no_session_directory_traffic(nomp: report.Report) -> None:
    assert nomp.no_mpsd and nomp.exchanges > 0
    assert nomp.anomaly_total == 0 and not nomp.by_entry
    for fmt in report.FORMATS:
        assert "o session-directory traffic" in report.render(nomp, fmt), fmt
    assert "PASSED" not in report.render(nomp, "text")
    assert report.exit_code(nomp, None) == 0
    assert report.exit_code(nomp, "fail") == report.exit_code(nomp, "anomaly") == 1


def test_clear_nomp_report_command_exits_1_under_fail_on(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mpsdproxy.cli import cli

    out = import_all_hosts("clear_nomp.saz", tmp_path / "clear_nomp.jsonl")
    done = CliRunner().invoke(cli, ["report", str(out), "--fail-on", "fail"])
    assert done.exit_code == 1, done.output
    assert "no session-directory traffic" in done.output
    assert CliRunner().invoke(cli, ["report", str(out)]).exit_code == 0


def test_recorded_classifications_of_other_hosts_are_not_mpsd(tmp_path: Path) -> None:
    """Import stores NOT_MPSD for every exchange with another host."""
    out = import_all_hosts("x49_mp_cs21.saz", tmp_path / "x49.jsonl")
    for record in recording.read(out):
        host = recording.to_exchange(record).request.host
        if not resources.is_mpsd_host(host):
            assert record["classification"]["id"] is None, host
            assert record["classification"]["anomalies"] == [], host
