"""The conformance suite (mpsdproxy.conformance) against the stand-in, one test per call
kind, and the runner's own behaviour: its verdicts, its report and the CLI's exit codes.

The stand-in runs on a real socket with a clock the test owns: when the suite is
throttled (it sends more than one caller's burst), the wait advances that clock
instead of the wall's.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from mpsdproxy import conformance
from mpsdproxy import emulator
from mpsdproxy.cli import cli

SOURCE_FILES = ("MultiplayerTests::", "MultiplayerManagerTests::", "MatchmakingTests::")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def report() -> conformance.Report:
    clock = Clock()
    stand_in = emulator.Emulator(emulator.default_config(), clock=clock)
    with emulator.running(emulator=stand_in) as (_, port):
        target = f"http://127.0.0.1:{port}"
        transport = conformance.http_transport(target)
        return conformance.run_suite(transport, conformance.Setup(run="suite"),
                                     conformance.CALLS, target, sleep=clock.advance)


@pytest.mark.parametrize("kind", [call.kind for call in conformance.CALLS])
def test_the_stand_in_answers_as_the_service(report: conformance.Report, kind: str) -> None:
    result = report.result(kind)
    assert result.verdict == conformance.AS_THE_SERVICE, "\n".join(result.problems)


def test_every_call_kind_is_named_once_and_names_its_library_tests() -> None:
    kinds = [call.kind for call in conformance.CALLS]
    assert len(kinds) == len(set(kinds))
    for call in conformance.CALLS:
        assert call.tests and all(t.startswith(SOURCE_FILES) for t in call.tests), call.kind
    named = {t.split("::")[0] for call in conformance.CALLS for t in call.tests}
    assert named == {"MultiplayerTests", "MultiplayerManagerTests", "MatchmakingTests"}


def canned(answers: dict[tuple[str, str], conformance.Answer]) -> conformance.Transport:
    """A target answering 404 to everything but the (method, path prefix) pairs given."""
    def send(method: str, path: str, headers: list[tuple[str, str]],
             body: bytes | None) -> conformance.Answer:
        for (m, prefix), answer in answers.items():
            if m == method and path.startswith(prefix):
                return answer
        return conformance.Answer(404, (), b"")
    return send


def one_call(**expect_fields: object) -> conformance.Call:
    return conformance.Call(
        "example.read", ("MultiplayerTests::TestGetCurrentSessionAsync",), "GET",
        "/things/{lobby}", expect=conformance.Expect((200,), ("ETag",), **expect_fields))


def test_a_differing_answer_names_the_field_and_what_was_expected() -> None:
    body = json.dumps({"members": {"0": {"gamertag": 7}}, "changeNumber": 1}).encode()
    transport = canned({("GET", "/things/"): conformance.Answer(200, (("ETag", '"1"'),), body)})
    call = one_call(fields=(("members.*.gamertag", "string"), ("members.*.deviceToken", "string"),
                            ("changeNumber", "=2"), ("roleTypes", "absent")))
    report = conformance.run_suite(transport, conformance.Setup(), [call])
    result = report.result("example.read")
    assert result.verdict == conformance.DIFFERS
    assert result.problems == [
        "members.0.gamertag: expected string, got 7",
        "members.0.deviceToken: missing (expected string)",
        "changeNumber: expected 2, got 1",
    ]


def test_a_wrong_status_is_reported_with_the_answer_and_fields_are_not_judged() -> None:
    transport = canned({("GET", "/things/"): conformance.Answer(400, (), b"bad member")})
    report = conformance.run_suite(transport, conformance.Setup(),
                                   [one_call(fields=(("x", "int"),))])
    assert report.result("example.read").problems == [
        "status: expected 200, got 400 (bad member)"]


def test_a_call_needing_what_no_answer_gave_is_not_tried_and_said_so() -> None:
    needs = conformance.Call("example.delete", ("MultiplayerTests::TestClearActivityAsync",),
                             "DELETE", "/handles/{activity_handle}",
                             expect=conformance.Expect((204,)))
    report = conformance.run_suite(canned({}), conformance.Setup(), [needs])
    result = report.result("example.delete")
    assert result.verdict == conformance.NOT_TRIED
    assert result.problems == ["needs activity_handle, which no earlier answer gave"]
    assert (report.tried, report.all_as_the_service) == (0, False)


def test_a_429_is_waited_out_once_and_noted_not_judged() -> None:
    answers = [conformance.Answer(429, (("Retry-After", "4"),), b""),
               conformance.Answer(200, (("ETag", '"2"'),), b"{}")]
    waited: list[float] = []
    report = conformance.run_suite(lambda *_: answers.pop(0), conformance.Setup(),
                                   [one_call()], sleep=waited.append)
    result = report.result("example.read")
    assert (result.verdict, waited) == (conformance.AS_THE_SERVICE, [4.0])
    assert result.notes == ["429: waited 4 s (Retry-After) and sent it again"]


def test_saved_values_fill_later_requests_with_their_json_type() -> None:
    seen: list[tuple[str, bytes | None]] = []

    def send(method: str, path: str, headers: list[tuple[str, str]],
             body: bytes | None) -> conformance.Answer:
        seen.append((path, body))
        return conformance.Answer(200, (), json.dumps({"id": "h-1", "n": 3}).encode())

    first = conformance.Call("a", ("MatchmakingTests::x",), "POST", "/handles",
                             expect=conformance.Expect((200,)),
                             saves=(("handle", "json:id"), ("count", "json:n")))
    second = conformance.Call("b", ("MatchmakingTests::x",), "PUT", "/handles/{handle}",
                              body={"n": "{count}", "label": "n={count}"},
                              expect=conformance.Expect((200,)))
    conformance.run_suite(send, conformance.Setup(), [first, second])
    assert seen[1] == ("/handles/h-1", b'{"n": 3, "label": "n=3"}')


@pytest.fixture
def not_found_target() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_PUT = do_POST = do_DELETE = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


def test_the_command_reports_json_and_exits_1_when_calls_differ(not_found_target: str) -> None:
    done = CliRunner().invoke(cli, ["conformance", "--target", not_found_target,
                                    "--format", "json"])
    assert done.exit_code == 1, done.output
    report = json.loads(done.output)
    assert report["calls"] == len(conformance.CALLS)
    assert report["as_the_service"] == 0 and report["differing"] + report["not_tried"] > 0
    first = report["results"][0]
    assert first["kind"] == "session.create"
    assert first["problems"] == ["status: expected 201, got 404"]


def test_the_command_exits_0_when_all_answer_as_the_service(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr("time.sleep", clock.advance)  # the suite's waits move the stand-in's clock
    stand_in = emulator.Emulator(emulator.default_config(), clock=clock)
    with emulator.running(emulator=stand_in) as (_, port):
        done = CliRunner().invoke(cli, ["conformance", "--target", f"http://127.0.0.1:{port}"])
    assert done.exit_code == 0, done.output
    assert done.output.splitlines()[-1].endswith(" 0 differing, 0 not tried")


def test_the_command_refuses_bad_input_with_exit_2() -> None:
    runner = CliRunner()
    unreachable = runner.invoke(cli, ["conformance", "--target", "http://127.0.0.1:1"])
    assert unreachable.exit_code == 2 and "no answer" in unreachable.output
    not_http = runner.invoke(cli, ["conformance", "--target", "ftp://example"])
    assert not_http.exit_code == 2 and "not an http" in not_http.output
    bad_set = runner.invoke(cli, ["conformance", "--target", "http://x", "--set", "colour=red"])
    assert bad_set.exit_code == 2 and "--set colour=red" in bad_set.output
    helped = runner.invoke(cli, ["conformance", "--help"])
    assert "mpsdproxy conformance --target http://127.0.0.1:8080" in helped.output
