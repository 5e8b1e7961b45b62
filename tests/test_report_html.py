"""The HTML report rendered by headless Chromium: what the page shows, and that nothing leaves it.

Chromium runs with every host name mapped to nothing, so a fetch the page tried would fail;
the page itself must carry no http(s) address in a src or href at all. Without Chromium the
test is skipped, unless CI is set: then it fails and says how to install it.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest

from mpsdproxy import faults
from mpsdproxy import recording
from mpsdproxy import report
from mpsdproxy import resources
from mpsdproxy import verdicts

T0 = 1_800_000_000.0
MPSD = "https://sessiondirectory.xboxlive.com"
SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
LOBBY = f"/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/lobby-1"
WIDTH, HEIGHT = 1280, 2000


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is missing: install it with `apt-get install -y chromium`")
    pytest.skip("chromium is not installed (apt-get install -y chromium)")


def record(seq: int, at: float, status: int, *, path: str = LOBBY, injected: bool = False,
           headers: list[list[str]] | None = None) -> dict[str, Any]:
    reply = faults.build("503.service-unavailable", retry_after=5) if status == 503 else None
    return {
        "seq": seq, "start": recording.timestamp(T0 + at),
        "end": recording.timestamp(T0 + at + 0.02), "duration_ms": 20.0,
        "client": "127.0.0.1:50000",
        "request": {"method": "GET", "url": MPSD + path,
                    "headers": [["Authorization", "redacted:0123456789ab"]], "body": None},
        "response": {"status": status, "reason": "",
                     "headers": headers if headers is not None else
                     [list(h) for h in (reply.headers if reply else [])], "body": None},
        "resource": resources.parse(path).to_dict(),
        "classification": None,
        "provenance": {"source": "injected", "rule": "outage"} if injected
        else {"source": "forwarded"},
    }


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[report.Report, Path]:
    """A pass where the title ignores an injected outage's Retry-After."""
    records = [record(n, n * 2.0, 200, path=f"{LOBBY}-{n % 3}") for n in range(1, 20)]
    records.append(record(20, 40, 503, injected=True))
    records.append(record(21, 41, 200))  # one second later: breaks the Retry-After of 5 s
    records.append(record(22, 42, 503, headers=[]))  # a 503 without Retry-After: an anomaly
    records += [record(n, n * 2.0, 200, path=f"{LOBBY}-{n % 3}") for n in range(23, 40)]
    rep = report.report_records(records, source="recordings/outage-pass.jsonl")
    path = tmp_path_factory.mktemp("html") / "report.html"
    path.write_text(report.render(rep, "html"), encoding="utf-8")
    return rep, path


def run_chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND",
         f"--window-size={WIDTH},{HEIGHT}", *args],
        capture_output=True, text=True, timeout=90, check=False)


def test_the_page_fetches_nothing(page: tuple[report.Report, Path]) -> None:
    text = page[1].read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert "<script" not in text.lower() and "<link" not in text.lower()
    assert "@import" not in text and "url(" not in text


def test_chromium_shows_the_verdicts_and_links_failures_to_records(
        page: tuple[report.Report, Path], tmp_path: Path) -> None:
    rep, path = page
    done = run_chromium(["--dump-dom", path.as_uri()], tmp_path / "profile")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert "The title failed 1 of 17 behaviour checks" in dom
    for rule in verdicts.RULES:
        assert rule.title in dom
    failed = [v for v in rep.verdicts if v.status is verdicts.Status.FAIL]
    assert [(v.rule, v.records) for v in failed] == [("retry-after", (20, 21))]
    for seq in failed[0].records:
        assert f'href="#record-{seq}"' in dom
        assert re.search(rf'<tr id="record-{seq}"[^>]*>.*?</tr>', dom, re.S)
    assert "never reached" in dom and "412.if-match-session" in dom
    assert "injected fault" in dom
    budget = rep.looked_text("rate-budget")
    assert budget.startswith("looked at ") and budget in dom  # which requests each rule read
    assert dom.count("<circle") >= 39  # every exchange is a dot on the timeline


def png_size_and_colours(png: bytes) -> tuple[int, int, int]:
    """(width, height, distinct byte values of the pixel data) of a PNG, without a library."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    data, offset = b"", 8
    while offset < len(png):
        length = struct.unpack(">I", png[offset:offset + 4])[0]
        kind = png[offset + 4:offset + 8]
        if kind == b"IDAT":
            data += png[offset + 8:offset + 8 + length]
        offset += 12 + length
    return width, height, len(set(zlib.decompress(data)))


def test_chromium_renders_a_screenshot(page: tuple[report.Report, Path], tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    done = run_chromium([f"--screenshot={shot}", page[1].as_uri()], tmp_path / "profile")
    assert done.returncode == 0, done.stderr[-2000:]
    png = shot.read_bytes()
    assert len(png) > 20_000
    width, height, colours = png_size_and_colours(png)
    assert (width, height) == (WIDTH, HEIGHT)
    assert colours > 64  # text, tables, badges and the timeline, not a blank page


def test_text_from_the_recording_is_escaped_and_printable() -> None:
    """Autoescape is on: a resource named like markup shows as text, and a byte that was
    not UTF-8 shows as \\xNN, so the page is valid UTF-8."""
    odd = f"{LOBBY}-<i>caf\udce9</i>"
    rep = report.report_records([record(1, 0, 503, path=odd, injected=True),
                                 record(2, 1, 200, path=odd)])
    page = report.render(rep, "html")
    page.encode("utf-8")
    assert "<i>" not in page
    assert "lobby-1-&lt;i&gt;caf\\xe9&lt;/i&gt;" in page
