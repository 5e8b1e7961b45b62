"""End to end: the outage scenario through `mpsdproxy run`, a title that ignores
Retry-After and one that honours it (urllib3's Retry), judged live and in the report.

The shipped outage opens 30 s after start; the test runs the same rule with its
window opened by the first matching request, so it takes seconds, not minutes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import urllib3
import yaml
from conftest import Launcher

from mpsdproxy import title

OUTAGE = Path(__file__).resolve().parent.parent / "mpsdproxy" / "scenarios" / "outage.yaml"
HEADERS = {"x-xbl-contract-version": "107", "Authorization": "XBL3.0 x=title;t"}


def _quick_outage(tmp_path: Path) -> Path:
    """outage.yaml's first rule, its window opened by the first request, 1 s Retry-After."""
    scenario = yaml.safe_load(OUTAGE.read_text())
    rule = scenario["rules"][0]
    rule["when"] = {"after": "0s", "for": "2500ms", "from": "first-match"}
    rule["fault"]["retry_after"] = 1
    scenario["rules"] = [rule]
    path = tmp_path / "outage-now.yaml"
    path.write_text(yaml.safe_dump(scenario))
    return path


def _report(record: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "mpsdproxy", "report", str(record), "--format", "json",
         "--fail-on", "fail"], capture_output=True, text=True, timeout=60)
    report = json.loads(result.stdout)
    report["exit_code"] = result.returncode
    return report


def _retry_after_verdicts(report: dict) -> list[dict]:
    return [v for v in report["verdicts"]["items"] if v["rule"] == "retry-after"
            and v["status"] != "not-applicable"]


def test_a_title_ignoring_retry_after_fails_live_and_in_the_report(launch: Launcher,
                                                                   tmp_path: Path) -> None:
    standin = launch.standin()
    proxy = launch.proxy("--mode", f"reverse:{standin.url}",
                         "--scenario", str(_quick_outage(tmp_path)))
    lobby = proxy.url + title.session_path("impatient")
    with httpx.Client(timeout=10, headers=HEADERS) as http:
        statuses = [http.get(lobby).status_code for _ in range(4)]  # no waiting at all
    assert statuses[0] == 503
    proxy.stop()
    assert "FAIL Retry-After honoured" in proxy.output()  # the live verdict line
    report = _report(proxy.record)
    verdicts = _retry_after_verdicts(report)
    failed = [v for v in verdicts if v["status"] == "fail"]
    assert len(failed) == 3  # each of the three immediate retries
    assert failed[0]["records"] == [1, 2]
    assert report["exit_code"] == 1


def test_a_title_honouring_retry_after_passes(launch: Launcher, tmp_path: Path) -> None:
    standin = launch.standin()
    proxy = launch.proxy("--mode", f"reverse:{standin.url}",
                         "--scenario", str(_quick_outage(tmp_path)))
    retry = urllib3.Retry(total=6, status_forcelist=[503], respect_retry_after_header=True,
                          backoff_factor=0, allowed_methods=["GET"])
    with urllib3.PoolManager(retries=retry, headers=HEADERS) as pool:
        response = pool.request("GET", proxy.url + title.session_path("patient"))
    assert response.status == 204  # the outage ended, the session does not exist
    proxy.stop()
    assert "FAIL Retry-After honoured" not in proxy.output()
    report = _report(proxy.record)
    verdicts = _retry_after_verdicts(report)
    assert len(verdicts) >= 2
    assert all(v["status"] == "pass" for v in verdicts), verdicts
