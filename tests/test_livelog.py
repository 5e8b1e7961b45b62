"""LiveLog: one line per session-directory exchange, with its markers; silent when quiet."""

from __future__ import annotations

import asyncio
import io
import re

import pytest
from mitmproxy import http
from mitmproxy.test import taddons
from mitmproxy.test import tflow
from mitmproxy.test import tutils

from mpsdproxy import faults
from mpsdproxy import model
from mpsdproxy.addons import classifier
from mpsdproxy.addons import common
from mpsdproxy.addons import flows
from mpsdproxy.addons import livelog
from mpsdproxy.addons import router
from mpsdproxy.addons.later import AfterAnswer

LOBBY = ("/serviceconfigs/6efc0200-fd0e-4f4b-8b5c-7e3d0f4a1b2c/sessiontemplates/LobbySession"
         "/sessions/lobby-1")
WHOLE = {"constants": {}, "properties": {}, "members": {}, "changeNumber": 1}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def finished(method: str = "GET", path: str = LOBBY, reply: model.Response | None = None,
             host: str = "sessiondirectory.xboxlive.com",
             req_headers: dict[str, str] | None = None) -> http.HTTPFlow:
    """A flow that went through router and classifier, answered with `reply` (or an error)."""
    request = tutils.treq(host=host, port=443, scheme=b"https", method=method.encode(),
                          path=model.to_bytes(path), headers=http.Headers(host=host,
                                                                   **(req_headers or {})),
                          content=b"")
    f = tflow.tflow(req=request)
    r, c = router.Router(), classifier.StatusClassifier()
    with taddons.context(r, c):
        r.request(f)
        if reply is None:
            f.error = tflow.terr("connection refused")
            c.error(f)
        else:
            f.response = flows.to_mitmproxy(reply)
            c.response(f)
    return f


def log_lines(flow: http.HTTPFlow, out: io.StringIO | None = None, **options: object) -> list[str]:
    out = out or io.StringIO()
    log = livelog.LiveLog(out)
    with taddons.context(log) as tctx:
        if options:
            tctx.configure(log, **options)
        if flow.response:
            log.response(flow)
        else:
            log.error(flow)
    return out.getvalue().splitlines()


def test_one_line_with_method_resource_status_and_id():
    f = finished("DELETE", LOBBY + "/members/me", faults.build("204.element-gone"))
    (line,) = log_lines(f)
    assert re.match(r"\d\d:\d\d:\d\d\.\d{3} DELETE ", line)
    assert " sessions/lobby-1/members/me " in line
    assert "204 No Content" in line
    assert line.rstrip().endswith("204.element-gone")
    assert "[" not in line and "!" not in line


def test_injected_marker():
    f = finished("PUT", LOBBY, faults.build("412.if-match-session", session=WHOLE, etag='"e"'),
                 req_headers={"If-Match": '"old"'})
    common.set_provenance(f, source="injected", rule="stale-write", phase="request")
    (line,) = log_lines(f)
    assert "412 Precondition Failed" in line
    assert "412.if-match-session" in line
    assert line.endswith("[injected: stale-write]")


def test_replayed_marker():
    f = finished("GET", LOBBY, faults.build("200.ok", session=WHOLE, etag='"e"'))
    common.set_provenance(f, source="replayed", record=17, file="run.jsonl")
    (line,) = log_lines(f)
    assert "[replayed: #17]" in line


def test_anomaly_markers():
    f = finished("GET", LOBBY, model.Response(503, "Service Unavailable",
                                              [("Content-Type", "text/plain")], b"busy"))
    (line,) = log_lines(f)
    assert "503.service-unavailable" in line
    assert "! missing-header: 503 must carry Retry-After" in line
    assert "! unexpected-body:" in line
    assert line.index("missing-header") < line.index("unexpected-body")


def test_unlisted_status_has_no_id():
    f = finished("GET", LOBBY, model.Response(500, "Internal Server Error", [], b""))
    (line,) = log_lines(f)
    assert "500 Internal Server Error" in line
    assert " - " in line
    assert "! unlisted-status" in line


def test_error_line():
    f = finished("GET", LOBBY, None)
    (line,) = log_lines(f)
    assert "--- connection refused" in line
    assert "! no-response" in line


def test_unknown_resource_shows_the_path():
    f = finished("GET", "/connections/?x=1", faults.build("404.not-found"))
    (line,) = log_lines(f)
    assert " /connections/?x=1 " in line


def test_quiet_prints_nothing():
    f = finished("GET", LOBBY, faults.build("204.get-session"))
    assert log_lines(f, mpsd_quiet=True) == []


def test_unmarked_flows_print_nothing():
    f = finished("GET", "/", faults.build("200.ok", session=WHOLE), host="example.com")
    assert common.mark(f) is None
    assert log_lines(f) == []


def test_one_line_per_exchange():
    f = finished("GET", LOBBY, faults.build("204.get-session"))
    out = io.StringIO()
    log = livelog.LiveLog(out)
    with taddons.context(log):
        log.response(f)
        log.response(f)
        f.error = tflow.terr("late")
        log.error(f)
    assert len(out.getvalue().splitlines()) == 1


@pytest.mark.parametrize("out, coloured", [(io.StringIO(), False), (TTY(), True)])
def test_colour_only_on_a_terminal(out, coloured):
    f = finished("GET", LOBBY, faults.build("503.service-unavailable"))
    (line,) = log_lines(f, out)
    assert bool(ANSI.search(line)) is coloured
    assert "503 Service Unavailable" in ANSI.sub("", line)


def test_writes_to_stdout_by_default(capsys):
    f = finished("GET", LOBBY, faults.build("204.get-session"))
    log = livelog.LiveLog()
    with taddons.context(log):
        log.response(f)
    assert "204.get-session" in capsys.readouterr().out


def test_format_line_plain():
    f = finished("GET", LOBBY, faults.build("304.not-modified"),
                 req_headers={"If-None-Match": '"e"'})
    line = livelog.format_line(flows.exchange_of(f), common.mark(f)["classification"])
    assert line.split()[1:] == ["GET", "sessions/lobby-1", "304", "Not", "Modified",
                                "304.not-modified"]


def test_bytes_that_are_not_utf8_show_escaped():
    f = finished("GET", "/connections/caf\udce9", faults.build("404.not-found"))
    f.response.data.reason = b"Not F\xf6und"
    (line,) = log_lines(f)
    assert " /connections/caf\\xe9 " in line
    assert "404 Not F\\xf6und" in line
    line.encode("utf-8")  # a terminal or a strict UTF-8 log takes it


def test_the_line_waits_until_the_answer_is_out():
    f = finished("GET", LOBBY, faults.build("204.get-session"))
    out = io.StringIO()
    log = livelog.LiveLog(out, AfterAnswer())

    async def hook_round() -> None:
        with taddons.context(log):
            log.response(f)
            assert out.getvalue() == ""  # still inside the hook
            await asyncio.sleep(0)
            assert "204.get-session" in out.getvalue()

    asyncio.run(hook_round())


def test_a_token_in_a_path_never_reaches_the_log() -> None:
    token = "eyJ" + "a" * 40 + "." + "b" * 60 + "." + "c" * 43
    exchange = model.Exchange(
        model.Request("GET", f"https://sessiondirectory.xboxlive.com/x?access_token={token}"),
        error=f"upstream said {token}")
    line = livelog.format_line(exchange)
    assert token not in line and "redacted:" in line


ESCAPES = "\x1b]0;owned\x07\x1b[2J\x08\x9b31m\u202e"  # CR and LF never get this far


def test_control_characters_from_the_wire_never_reach_the_terminal() -> None:
    """A path, an upstream reason and a header quoted in an anomaly: all escaped, so the
    only escape sequences in a coloured line are the colours the log adds."""
    f = finished("GET", "/connections/x" + ESCAPES,
                 model.Response(503, "Busy" + ESCAPES, [("Content-Type", "text/plain")], b"x"))
    common.set_provenance(f, source="injected", rule="r" + ESCAPES)
    out = TTY()
    (line,) = log_lines(f, out)
    plain = ANSI.sub("", line)
    assert not re.search("[\x00-\x1f\x7f-\x9f\u202e]", plain), repr(plain)
    assert "\\x1b]0;owned\\x07\\x1b[2J\\x08\\x9b31m\\u202e" in plain
    assert "Busy\\x1b" in plain and "[injected: r\\x1b" in plain


def test_a_huge_session_name_or_path_is_shown_clipped() -> None:
    name = "L" * 50_000
    scid = "7492baca-c1b4-440d-a391-b7ef00000001"
    for path in (f"/serviceconfigs/{scid}/sessiontemplates/t/sessions/{name}", f"/x/{name}"):
        line = livelog.format_line(model.Exchange(
            model.Request("GET", f"https://sessiondirectory.xboxlive.com{path}"),
            model.Response(200, "OK")))
        assert len(line) < 400 and "characters)" in line, line[:300]


def test_terminal_safe_keeps_ordinary_text() -> None:
    assert model.terminal_safe("sessions/lobby-1 é ✓") == "sessions/lobby-1 é ✓"
    assert model.terminal_safe("a\tb\nc\x7f") == "a\\x09b\\x0ac\\x7f"
