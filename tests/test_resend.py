"""resend: re-issue a recording against a live service over real sockets, then diff the runs."""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from conftest import http_server

from mpsdproxy import diff
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import resend
from mpsdproxy import resources

SCID = "6efc0200-1111-2222-3333-444455556666"
SESSION_PATH = f"/serviceconfigs/{SCID}/sessionTemplates/LobbySession/sessions/"
USER_A = "redacted:aaaaaaaaaaaa"
USER_B = "redacted:bbbbbbbbbbbb"


# --- a small session directory: enough MPSD to exercise ETags, handles and names ------------

class MiniDirectory:
    """Sessions with changeNumber and ETag, If-Match, activity handles.

    `seed` makes its ETags and handle ids its own (as two service builds
    would); `broken_handles` makes GET /handles/{id} answer 404 (a behaviour
    change for diff to find).
    """

    def __init__(self, seed: str, broken_handles: bool = False) -> None:
        self.seed = seed
        self.broken_handles = broken_handles
        self.sessions: dict[str, dict[str, Any]] = {}
        self.handles: dict[str, dict[str, Any]] = {}
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def etag(self, doc: dict[str, Any]) -> str:
        return f'"{self.seed}-{doc["changeNumber"]}"'

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes
               ) -> tuple[int, list[tuple[str, str]], bytes]:
        self.seen.append({"method": method, "path": path, "headers": headers, "body": body})
        resource = resources.parse(path)
        if resource.kind is resources.Kind.SESSION:
            return self.session(method, resource.name.lower(), headers, body)
        if resource.kind is resources.Kind.HANDLE:
            return self.handle_call(method, resource.element, body)
        return 404, [("Content-Type", "text/plain")], b"no such resource"

    def session(self, method: str, name: str, headers: dict[str, str], body: bytes):
        doc = self.sessions.get(name)
        if method == "GET":
            return (200, self.doc_headers(doc), _json(doc)) if doc else (204, [], b"")
        match = headers.get("if-match")
        if match and match != "*" and (doc is None or match != self.etag(doc)):
            return (412, self.doc_headers(doc), _json(doc)) if doc else (412, [], b"")
        request = json.loads(body or b"{}")
        xuid = headers.get("authorization", "x=?;").split("x=", 1)[1].split(";", 1)[0]
        created = doc is None
        doc = doc or {"constants": {"system": {"maxMembersCount": 8}}, "changeNumber": 0,
                      "properties": {"system": {}, "custom": {}}, "members": {},
                      "correlationId": str(uuid.uuid4()), "startTime": "2026-11-25T09:00:00Z"}
        doc["properties"]["custom"].update(request.get("properties", {}).get("custom", {}))
        members = {m["constants"]["system"]["xuid"]: k for k, m in doc["members"].items()}
        me = request.get("members", {}).get("me", "absent")
        if me is None and xuid in members:
            del doc["members"][members[xuid]]
        elif isinstance(me, dict) and xuid not in members:
            doc["members"][str(len(doc["members"]))] = {
                "constants": {"system": {"xuid": xuid}},
                "properties": me.get("properties", {})}
        doc["changeNumber"] += 1
        if not doc["members"]:
            self.sessions.pop(name, None)
            return 204, [], b""
        self.sessions[name] = doc
        return (201 if created else 200), self.doc_headers(doc), _json(doc)

    def doc_headers(self, doc: dict[str, Any]) -> list[tuple[str, str]]:
        return [("Content-Type", "application/json"), ("ETag", self.etag(doc))]

    def handle_call(self, method: str, handle_id: str | None, body: bytes):
        if method == "POST" and handle_id is None:
            new_id = f"{self.seed}{len(self.handles) + 1:07d}-0000-4000-8000-000000000000"
            self.handles[new_id] = {**json.loads(body), "id": new_id}
            return (201, [("Content-Type", "application/json"), ("Location", f"/handles/{new_id}")],
                    _json(self.handles[new_id]))
        if method == "GET" and handle_id in self.handles and not self.broken_handles:
            return 200, [("Content-Type", "application/json")], _json(self.handles[handle_id])
        return 404, [("Content-Type", "text/plain")], b"handle not found"


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@contextlib.contextmanager
def serving(directory: MiniDirectory) -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            with directory.lock:
                status, out, data = directory.handle(self.command, self.path, headers, body)
            self.send_response(status)
            for k, v in out:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = _any

        def log_message(self, *args: Any) -> None:
            pass

    with http_server(Handler) as port:
        yield port


# --- recordings -----------------------------------------------------------------------------

def request_record(method: str, path: str, body: Any = None, user: str = USER_A,
                   extra: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """A record of a request whose answer is not known yet (a script to send)."""
    raw = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
    headers = [("Host", "sessiondirectory.xboxlive.com"), ("Authorization", user),
               ("Signature", "redacted:0123456789ab"), ("x-xbl-contract-version", "107"),
               ("Content-Type", "application/json; charset=utf-8"), *(extra or [])]
    return {"start": "2026-11-25T09:00:00.000000Z", "end": None, "duration_ms": None,
            "client": "127.0.0.1:50000",
            "request": {"method": method, "url": "https://sessiondirectory.xboxlive.com" + path,
                        "headers": [list(h) for h in headers],
                        "body": recording.encode_body(raw)},
            "response": None, "error": "not sent yet", "resource": None,
            "classification": None, "provenance": {"source": "script"}}


def script(name: str = "lobby-1", first_handle: str | None = None) -> list[dict[str, Any]]:
    """A session lifecycle of two users, as a title would run it against seed `a`."""
    ref = {"scid": SCID, "templateName": "LobbySession", "name": name}
    me = {"members": {"me": {"properties": {"system": {"active": True}}}}}
    steps = [
        request_record("PUT", SESSION_PATH + name, {**me, "properties": {"custom": {"m": "ffa"}}}),
        request_record("GET", SESSION_PATH + name),
        request_record("PUT", SESSION_PATH + name, {"properties": {"custom": {"m": "teams"}}},
                       extra=[("If-Match", '"a-1"')]),
        request_record("POST", "/handles", {"type": "activity", "version": 1, "sessionRef": ref}),
        request_record("PUT", SESSION_PATH + name, me, user=USER_B),
        request_record("PUT", SESSION_PATH + name, {"members": {"me": None}}),
    ]
    if first_handle:
        steps.insert(4, request_record("GET", f"/handles/{first_handle}"))
    return steps


def write(path: Path, records: list[dict[str, Any]]) -> str:
    with recording.Writer(path) as w:
        for r in records:
            w.write(r)
    return str(path)


def statuses(path: str) -> list[int | None]:
    return [(r["response"] or {}).get("status") for r in recording.read(path, strict=True)]


@pytest.fixture
def original(tmp_path: Path) -> str:
    """The script run against seed `a`: the recording every test re-sends."""
    plan = write(tmp_path / "script.jsonl",
                 script(first_handle="a0000001-0000-4000-8000-000000000000"))
    out = str(tmp_path / "original.jsonl")
    with serving(MiniDirectory("a")) as port:
        result = resend.resend(plan, f"http://127.0.0.1:{port}", out)
    assert result.ok and result.sent == 7
    assert statuses(out) == [201, 200, 200, 201, 200, 200, 200]
    return out


# --- tests ----------------------------------------------------------------------------------

def test_resend_renames_carries_ids_and_etags_and_diffs_clean(original: str, tmp_path: Path
                                                                ) -> None:
    service = MiniDirectory("b")
    out = str(tmp_path / "resent.jsonl")
    with serving(service) as port:
        result = resend.resend(original, f"http://127.0.0.1:{port}", out, rename=True)
    assert (result.sent, result.answered, result.failed) == (7, 7, 0)
    fresh = result.renames["lobby-1"]
    assert fresh.startswith("lobby-1-") and fresh != "lobby-1"

    seen = service.seen
    assert {s["path"] for s in seen if s["path"].startswith(SESSION_PATH)} == {SESSION_PATH + fresh}
    assert json.loads(seen[3]["body"])["sessionRef"]["name"] == fresh
    assert seen[2]["headers"]["if-match"] == '"b-1"'  # the ETag b gave, not a's
    assert seen[4]["path"] == "/handles/b0000001-0000-4000-8000-000000000000"
    assert seen[0]["headers"]["authorization"] == "XBL3.0 x=aaaaaaaaaaaa;resent"
    assert seen[5]["headers"]["authorization"] == "XBL3.0 x=bbbbbbbbbbbb;resent"
    assert "signature" not in seen[0]["headers"]
    assert seen[0]["headers"]["host"] == f"127.0.0.1:{port}"

    records = list(recording.read(out, strict=True))
    assert [r["provenance"] for r in records] == [
        {"source": "resent", "record": n} for n in range(1, 8)]
    assert records[0]["classification"]["id"] == "201.created"
    assert records[0]["resource"]["name"] == fresh
    # the record keeps the user's redacted identity, not the stand-in token
    assert dict(records[0]["request"]["headers"])["Authorization"] == USER_A
    assert "Signature" not in dict(records[0]["request"]["headers"])

    compared = diff.diff(original, out)
    assert compared.pairs == 7
    assert not compared.regressed, diff.render_text(compared)


def test_an_id_written_inside_a_value_is_carried_over_too(tmp_path: Path) -> None:
    """A title writes the handle it made into its session inside a string (the public
    capture's `GameSessionTransferHandle: completed~<handle id>`): the resend writes the
    handle the target made."""
    made = "a0000001-0000-4000-8000-000000000000"  # what MiniDirectory("a") names it
    transfer = {"properties": {"custom": {"transfer": f"completed~{made}"}}}
    plan = write(tmp_path / "plan.jsonl",
                 [*script()[:4], request_record("PUT", SESSION_PATH + "lobby-1", transfer)])
    first, again = str(tmp_path / "first.jsonl"), str(tmp_path / "again.jsonl")
    with serving(MiniDirectory("a")) as port:
        assert resend.resend(plan, f"http://127.0.0.1:{port}", first).ok
    service = MiniDirectory("b")
    with serving(service) as port:
        assert resend.resend(first, f"http://127.0.0.1:{port}", again).ok
    written = json.loads(service.seen[-1]["body"])["properties"]["custom"]["transfer"]
    assert written == "completed~b0000001-0000-4000-8000-000000000000"


def test_a_changed_behaviour_is_named_by_diff(original: str, tmp_path: Path) -> None:
    out = str(tmp_path / "resent.jsonl")
    with serving(MiniDirectory("c", broken_handles=True)) as port:
        resend.resend(original, f"http://127.0.0.1:{port}", out)
    compared = diff.diff(original, out)
    assert compared.regressed and diff.exit_code(compared) == 1
    assert [(c.old.seq, c.new.seq) for c in compared.changes] == [(5, 5)]
    assert (compared.changes[0].old.status, compared.changes[0].new.status) == (200, 404)
    assert not compared.unpaired_old and not compared.unpaired_new


def test_without_rename_names_are_kept(tmp_path: Path) -> None:
    plan = write(tmp_path / "script.jsonl", script())
    service = MiniDirectory("a")
    with serving(service) as port:
        result = resend.resend(plan, f"http://127.0.0.1:{port}", None, keep_host=True)
    assert result.renames == {}
    assert service.seen[0]["path"] == SESSION_PATH + "lobby-1"
    assert service.seen[0]["headers"]["host"] == "sessiondirectory.xboxlive.com"


def test_unreachable_target_records_errors(original: str, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there, and nothing else is handed it
    out = str(tmp_path / "resent.jsonl")
    result = resend.resend(original, f"http://127.0.0.1:{port}", out, timeout=2.0)
    assert (result.sent, result.answered, result.failed) == (7, 0, 7)
    assert not result.ok
    first = next(recording.read(out, strict=True))
    assert first["response"] is None
    assert "ConnectionRefusedError" in first["error"]
    assert first["classification"]["anomalies"][0]["code"] == "no-response"
    assert diff.diff(original, out).regressed


def test_progress_callback_and_bad_lines(original: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    lines = Path(original).read_text().splitlines(keepends=True)
    broken.write_text("".join(lines[:2]) + "garbage\n" + "".join(lines[2:]))
    seen: list[resend.ResentExchange] = []
    with serving(MiniDirectory("a")) as port:
        result = resend.resend(str(broken), f"http://127.0.0.1:{port}", on_exchange=seen.append)
    assert [i.line for i in result.issues] == [3]
    assert [e.record for e in seen] == [1, 2, 3, 4, 5, 6, 7]
    assert seen[0].status == 201 and seen[0].seq is None


@pytest.mark.parametrize("url, expected", [
    ("http://127.0.0.1:8081", resend.Target("http", "127.0.0.1", 8081, "")),
    ("https://test.example/base/", resend.Target("https", "test.example", 443, "/base")),
])
def test_parse_target(url: str, expected: resend.Target) -> None:
    assert resend.parse_target(url) == expected


@pytest.mark.parametrize("url", ["ftp://x", "127.0.0.1:80", "http://h/?q=1", "http://h:99999"])
def test_parse_target_rejects(url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        resend.parse_target(url)


@pytest.mark.parametrize("value, expected", [
    ("redacted:0123456789ab", "XBL3.0 x=0123456789ab;resent"),
    ("XBL3.0 x=1;token", None),
])
def test_stand_in_authorization(value: str, expected: str | None) -> None:
    assert resend.stand_in_authorization(value) == expected


def test_renamer_is_consistent_and_case_insensitive() -> None:
    rename = resend.Renamer(True)
    guid = "6F472513-0A0B-4C5D-8E9F-00000000A001"
    fresh = rename(guid)
    assert fresh != guid and fresh == fresh.upper() and len(fresh) == len(guid)
    assert rename(guid.lower()) == fresh
    assert rename("lobby") != rename("game")
    assert resend.Renamer(False)("lobby") == "lobby"


EMULATOR_SCID = "7492baca-c1b4-440d-a391-b7ef00000001"  # in the stand-in's shipped config


def _response_header(record: dict[str, Any], name: str) -> str:
    return next(v for k, v in record["response"]["headers"] if k.lower() == name)


def _stand_in_flow(emulator: Any, tmp_path: Path) -> str:
    """A title's session flow run against the stand-in, learning ETags and ids as it goes."""
    path = f"/serviceconfigs/{EMULATOR_SCID}/sessiontemplates/LobbySession/sessions/lobby-7"
    ref = {"scid": EMULATOR_SCID, "templateName": "LobbySession", "name": "lobby-7"}
    me = {"members": {"me": {"properties": {"system": {"active": True}}}}}
    first = tmp_path / "first.jsonl"
    with emulator.running() as (_emu, port):
        url = f"http://127.0.0.1:{port}"
        resend.resend(write(tmp_path / "1.jsonl", [request_record("PUT", path, me)]), url,
                      str(first))
        etag = _response_header(next(recording.read(first)), "etag")
        resend.resend(write(tmp_path / "2.jsonl", [
            request_record("GET", path),
            request_record("PUT", path, {"properties": {"custom": {"m": "teams"}}},
                           extra=[("If-Match", etag)]),
            request_record("POST", "/handles", {"type": "activity", "version": 1,
                                                "sessionRef": ref}),
        ]), url, str(first))
        handle = list(recording.read(first))[-1]["response"]["body"]["json"]["id"]
        resend.resend(write(tmp_path / "3.jsonl", [
            request_record("PUT", path, me, user=USER_B),
            request_record("GET", f"/handles/{handle}"),
            request_record("PUT", path, {"members": {"me": None}}),
            request_record("PUT", path, {"members": {"me": None}}, user=USER_B),
        ]), url, str(first))
    assert statuses(str(first)) == [201, 200, 200, 201, 200, 200, 200, 204]
    return str(first)


def test_resend_against_the_stand_in(tmp_path: Path) -> None:
    """Re-sent renamed to a fresh stand-in, the flow answers the same: no regressions."""
    emulator = pytest.importorskip("mpsdproxy.emulator")
    first = _stand_in_flow(emulator, tmp_path)
    second = str(tmp_path / "second.jsonl")
    with emulator.running() as (_emu, port):
        result = resend.resend(first, f"http://127.0.0.1:{port}", second, rename=True)
    assert result.failed == 0 and "lobby-7" in result.renames
    assert statuses(second) == statuses(first)
    compared = diff.diff(first, second)
    assert compared.pairs == 8
    assert not compared.regressed, diff.render_text(compared)


def test_a_stand_in_that_answers_one_case_differently_is_caught(tmp_path: Path) -> None:
    emulator = pytest.importorskip("mpsdproxy.emulator")
    first = _stand_in_flow(emulator, tmp_path)
    second = str(tmp_path / "second.jsonl")
    with emulator.running() as (_emu, port), recording.Writer(second) as writer:
        def overloaded_before_sixth() -> Iterator[dict[str, Any]]:
            for record in recording.read(first):
                if record["seq"] == 6:  # the stand-in is overloaded for exactly one request
                    with urllib.request.urlopen(urllib.request.Request(
                            f"http://127.0.0.1:{port}/_emulator/overload", method="POST",
                            data=b'{"retry_after": 2, "requests": 1}'), timeout=5) as answer:
                        assert answer.status < 300
                yield record
        outcomes = list(resend.resend_records(overloaded_before_sixth(),
                                              f"http://127.0.0.1:{port}", writer=writer))
    assert [o.status for o in outcomes][5] == 503
    compared = diff.diff(first, second)
    assert diff.exit_code(compared) == 1
    assert [(c.old.seq, c.new.seq) for c in compared.changes] == [(6, 6)]
    assert compared.changes[0].new.classification == "503.service-unavailable"
    assert "#6 -> #6  GET handles/" in diff.render_text(compared)


# --- what no wire could carry, and bytes that are not UTF-8 ---------------------------------

class Echo:
    """Answers 200 to anything, with a header byte 0xFF; keeps the raw requests it saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[tuple[bytes, bytes]]]] = []


@contextlib.contextmanager
def echoing(echo: Echo) -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            # http.server reads header bytes as ISO-8859-1: one character a byte
            echo.seen.append((self.path, [(k.encode("latin-1"), v.encode("latin-1"))
                                          for k, v in self.headers.items()]))
            self.send_response(200)
            self.send_header("X-Odd", "\xffend")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_PUT = _any

        def log_message(self, *args: Any) -> None:
            pass

    with http_server(Handler) as port:
        yield port


def test_non_utf8_path_and_header_bytes_are_sent_and_recorded(tmp_path: Path) -> None:
    odd = request_record("GET", SESSION_PATH + "caf\udce9",
                         extra=[("X-Title", "Caf\udce9 \udcff")])
    plan = write(tmp_path / "odd.jsonl", [odd, request_record("GET", SESSION_PATH + "x")])
    out = str(tmp_path / "resent.jsonl")
    echo = Echo()
    with echoing(echo) as port:
        result = resend.resend(plan, f"http://127.0.0.1:{port}", out)
    assert (result.sent, result.answered, result.failed) == (2, 2, 0)
    assert echo.seen[0][0] == SESSION_PATH + "caf%E9"  # a request line is ASCII
    assert (b"X-Title", b"Caf\xe9 \xff") in echo.seen[0][1]  # header bytes as recorded
    records = list(recording.read(out, strict=True))
    assert [r["seq"] for r in records] == [1, 2]
    assert dict(records[0]["request"]["headers"])["X-Title"] == "Caf\udce9 \udcff"
    assert dict(records[0]["response"]["headers"])["X-Odd"] == "\udcffend"
    assert records[0]["request"]["url"].endswith(SESSION_PATH + "caf%E9")


def test_a_record_no_wire_could_carry_is_reported_not_sent(tmp_path: Path) -> None:
    smuggler = request_record("GET", SESSION_PATH + "a")
    smuggler["request"]["headers"].append(["X-Title", "a\r\nSet-Cookie: x=1"])
    plan = write(tmp_path / "bad.jsonl", [smuggler, request_record("GET", SESSION_PATH + "b")])
    out = str(tmp_path / "resent.jsonl")
    echo = Echo()
    seen: list[resend.ResentExchange] = []
    with echoing(echo) as port:
        result = resend.resend(plan, f"http://127.0.0.1:{port}", out, on_exchange=seen.append)
    assert (result.sent, result.answered, result.failed) == (2, 1, 1)
    assert seen[0].status is None and seen[0].error.startswith("not sent: ")
    assert [path for path, _ in echo.seen] == [SESSION_PATH + "b"]
    assert [r["provenance"]["record"] for r in recording.read(out, strict=True)] == [2]


def test_a_target_base_path_is_not_part_of_the_resource(tmp_path: Path) -> None:
    plan = write(tmp_path / "s.jsonl", [request_record("GET", SESSION_PATH + "lobby-1")])
    out = str(tmp_path / "resent.jsonl")
    echo = Echo()
    with echoing(echo) as port:
        resend.resend(plan, f"http://127.0.0.1:{port}/mpsd", out)
    assert echo.seen[0][0] == "/mpsd" + SESSION_PATH + "lobby-1"
    [rec] = recording.read(out, strict=True)
    assert rec["request"]["url"] == f"http://127.0.0.1:{port}/mpsd{SESSION_PATH}lobby-1"
    assert rec["resource"]["kind"] == "session" and rec["resource"]["name"] == "lobby-1"


def test_resend_refuses_to_record_into_its_own_input(original: str) -> None:
    with pytest.raises(ValueError, match="being re-sent"):
        resend.resend(original, "http://127.0.0.1:9", original)


def test_an_answer_that_never_ends_is_kept_in_part_and_the_run_goes_on(tmp_path: Path) -> None:
    """A broken target streams one answer forever: resend keeps its start (as the proxy
    keeps a body over its cap), closes that connection and sends the next record."""
    served: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            served.append(self.path)
            self.send_response(200)
            if self.path.endswith("/endless"):
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunk = b"ab, " * 16384  # not token characters: a cut start keeps them
                try:
                    for _ in range(4096):  # 256 MB at most: the test ends either way
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                except OSError:
                    return  # resend closed the connection: what this test wants
                self.wfile.write(b"0\r\n\r\n")
                return
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    plan = write(tmp_path / "plan.jsonl", [request_record("GET", SESSION_PATH + "endless"),
                                           request_record("GET", SESSION_PATH + "next")])
    out = str(tmp_path / "resent.jsonl")
    with http_server(Handler) as port:
        result = resend.resend(plan, f"http://127.0.0.1:{port}", out)
    assert (result.sent, result.answered, result.failed) == (2, 2, 0)
    assert [path.rsplit("/", 1)[1] for path in served] == ["endless", "next"]
    endless, after = recording.read(out, strict=True)
    kept = endless["response"]["truncated"]
    assert kept["size"] is None and kept["wire"] is True
    assert 0 < kept["kept"] <= model.KEPT_OF_TRUNCATED
    assert after["response"]["status"] == 200


@contextlib.contextmanager
def descriptors_past(number: int) -> Iterator[None]:
    """Hold open files until the next descriptor the process opens is past `number`
    (the soft limit raised for it, and put back after)."""
    import os
    import resource

    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = limits
    if soft != resource.RLIM_INFINITY and soft < number + 200:
        if hard != resource.RLIM_INFINITY and hard < number + 200:
            pytest.skip(f"this machine allows {hard} open files")
        resource.setrlimit(resource.RLIMIT_NOFILE, (number + 200, hard))
    held: list[int] = []
    try:
        while not held or held[-1] < number:
            held.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)


@contextlib.contextmanager
def rta_target(tmp_path: Path, handler: Any) -> Iterator[tuple[Path, str]]:
    """A websocket server on loopback answering with `handler`, and a recording of a
    title's RTA connection to it (the handshake, one subscribe); yields the recording
    and the target to resend it to."""
    from websockets.sync.server import serve

    from mpsdproxy import rta
    from mpsdproxy.recording import messages as ws

    with serve(handler, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        target = f"http://127.0.0.1:{server.socket.getsockname()[1]}"
        url = f"{target}/connect"
        handshake = model.Exchange(
            model.Request("GET", url, [("Upgrade", "websocket"), ("Connection", "Upgrade")]),
            model.Response(101, "Switching Protocols", []), client="10.0.0.1:5")
        path = tmp_path / "tap.jsonl"
        with recording.Writer(path) as w:
            w.write(recording.to_record(handshake, recording.Redactor()))
            w.write(ws.to_record(ws.WebsocketMessage(
                url, "client", "text", rta.subscribe_message(1).encode(), client="10.0.0.1:5")))
        try:
            yield path, target
        finally:
            server.shutdown()


def message_kinds(path: Path) -> list[tuple[Any, Any]]:
    """(direction, opcode) of each websocket message a recording holds."""
    from mpsdproxy.recording import messages as ws

    return [(r.get("direction"), r.get("opcode")) for r in
            recording.read(path, strict=True, messages=True) if ws.is_message(r)]


def test_a_websocket_on_a_descriptor_past_1023_is_read(tmp_path: Path) -> None:
    """select() refuses a descriptor past 1023, which a process holding many files gets
    for its socket: the resend still reads the target's messages."""
    def answer(connection: Any) -> None:
        with contextlib.suppress(Exception):
            connection.recv()
            connection.send('[3, 1, {"shoulderTaps": []}]')
            connection.recv()

    again = tmp_path / "again.jsonl"
    with rta_target(tmp_path, answer) as (path, target), descriptors_past(1100):
        result = resend.resend(str(path), target, str(again), timeout=1.0)
    assert result.answered == 1
    assert ("server", "text") in message_kinds(again)


def test_a_target_that_never_stops_talking_cannot_hold_the_resend(tmp_path: Path) -> None:
    """A websocket target that sends a frame every few milliseconds, forever: the resend
    still reads what came, closes the socket and ends."""
    def chatter(connection: Any) -> None:
        with contextlib.suppress(Exception):
            while True:
                connection.send('[3, 1, {"shoulderTaps": []}]')
                threading.Event().wait(0.005)

    again = tmp_path / "again.jsonl"
    with rta_target(tmp_path, chatter) as (path, target):
        result = resend.resend(str(path), target, str(again), timeout=1.0)
    assert result.answered == 1 and result.messages > 2
    kinds = message_kinds(again)
    assert kinds.count(("client", "text")) == 1 and ("client", "close") in kinds
    assert ("server", "text") in kinds  # the chatter, read as it came
