"""A conformance suite written from the client library's own unit tests.

The public client library (microsoft/xbox-live-api) tests its multiplayer code
against mocked answers in `Tests/UnitTests/Tests/Services/MultiplayerTests.cpp`,
`MultiplayerManagerTests.cpp` and `MatchmakingTests.cpp`. Each of those tests
pins down a request the library sends and the fields its parser reads from the
answer. This suite turns them around: for each call kind it sends that request
(our own names, XUIDs and values, in the shape the test expects the library to
write; every call names its source tests) to a real target, and checks that the
answer has the status, headers and fields the library needs. So a studio can
point it at the stand-in (`mpsdproxy emulate`), at its own mock, or at a sandbox,
and learn which calls would mislead the library.

`CALLS` is the suite, in the order it runs (sessions, queries, handles,
SmartMatch, then the last member leaving); `run_target(url, Setup(...))` runs it
over HTTP, `run_suite(transport, setup, CALLS)` over any transport;
`render(report, "text"|"json")` prints the verdicts: per call "as the service",
"differs" (which field, what was expected) or "not tried" (an earlier answer
did not give what it needs).

Modules: `spec` (what a call and an expected shape are), `calls_sessions` and
`calls_other` (the data), `runner` (sending, judging, the report).
"""

from __future__ import annotations

from mpsdproxy.conformance.calls_other import HANDLE_CALLS
from mpsdproxy.conformance.calls_other import MATCHMAKING_CALLS
from mpsdproxy.conformance.calls_other import QUERY_CALLS
from mpsdproxy.conformance.calls_sessions import CLOSING_CALLS
from mpsdproxy.conformance.calls_sessions import SESSION_CALLS
from mpsdproxy.conformance.runner import AS_THE_SERVICE
from mpsdproxy.conformance.runner import DIFFERS
from mpsdproxy.conformance.runner import NOT_TRIED
from mpsdproxy.conformance.runner import Answer
from mpsdproxy.conformance.runner import CallResult
from mpsdproxy.conformance.runner import ConformanceError
from mpsdproxy.conformance.runner import Report
from mpsdproxy.conformance.runner import Transport
from mpsdproxy.conformance.runner import http_transport
from mpsdproxy.conformance.runner import render
from mpsdproxy.conformance.runner import run_suite
from mpsdproxy.conformance.spec import Call
from mpsdproxy.conformance.spec import Expect
from mpsdproxy.conformance.spec import Setup

CALLS: tuple[Call, ...] = (SESSION_CALLS + QUERY_CALLS + HANDLE_CALLS + MATCHMAKING_CALLS
                           + CLOSING_CALLS)

SETUP_KEYS = ("scid", "lobby_template", "game_template", "large_template", "hopper",
              "host_xuid", "guest_xuid", "reserved_xuid", "title_id")


def run_target(target: str, setup: Setup | None = None, timeout: float = 10.0) -> Report:
    """The whole suite against the URL `target`; raises ConformanceError (bad URL, no answer)."""
    return run_suite(http_transport(target, timeout), setup or Setup(), CALLS, target)


def setup_of(pairs: tuple[str, ...], run: str) -> Setup:
    """A Setup from `KEY=VALUE` strings (the CLI's `--set`); ConformanceError names a bad one."""
    chosen: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in SETUP_KEYS or not value:
            raise ConformanceError(f"--set {pair}: expected KEY=VALUE, KEY one of "
                                   f"{', '.join(SETUP_KEYS)}")
        chosen[key] = value
    return Setup(run=run, **chosen)


__all__ = [
    "CALLS",
    "SETUP_KEYS",
    "Call",
    "Expect",
    "Setup",
    "Answer",
    "Transport",
    "CallResult",
    "Report",
    "ConformanceError",
    "AS_THE_SERVICE",
    "DIFFERS",
    "NOT_TRIED",
    "run_suite",
    "run_target",
    "http_transport",
    "render",
    "setup_of",
]
