"""End to end: what mitmweb (or a `mitmdump -w` file) shows of a scenario run.

Each session-directory flow's comment names its row of the status table and who
answered; injected and anomalous flows are marked, so an injected 503 never
passes for a real one in mitmweb's list.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from conftest import Launcher
from mitmproxy import http
from mitmproxy import io as mio

from mpsdproxy import title
from mpsdproxy.addons import classifier


def test_a_flow_file_of_a_scenario_run_carries_comments_and_marks(launch: Launcher,
                                                                  tmp_path: Path) -> None:
    rule = tmp_path / "outage.yaml"
    rule.write_text("name: one-outage\nrules:\n  - name: first-read-fails\n"
                    "    match: {method: GET}\n    when: {nth: 1}\n"
                    "    fault: {status: 503, retry_after: 2}\n", encoding="utf-8")
    saved = tmp_path / "run.mitm"
    standin = launch.standin()
    proxy = launch.proxy("--mode", f"reverse:{standin.url}", "--scenario", str(rule),
                         "--quiet", "--set", f"save_stream_file={saved}")
    path = title.session_path("mitmweb-lobby")
    headers = [title.CONTRACT, ("Authorization", "XBL3.0 x=1001;token")]
    with httpx.Client(base_url=proxy.url, timeout=20) as client:
        assert client.get(path, headers=headers).status_code == 503
        assert client.get(path, headers=headers).status_code in (200, 204)
    proxy.stop()
    with open(saved, "rb") as f:
        flows = [x for x in mio.FlowReader(f).stream() if isinstance(x, http.HTTPFlow)]
    assert [x.response.status_code for x in flows] == [503, flows[1].response.status_code]
    injected, real = flows
    assert injected.comment == ("503.service-unavailable · injected by rule "
                                "first-read-fails")
    assert injected.marked == classifier.MARK
    assert real.comment.endswith("· from the service") and not real.marked
