"""412 handled, calibrated to the client library: after a 412 on a session write, the same
user's next write to that session gets one verdict. The library's write modes send the
ETag it holds, `If-Match: *` (update existing) or `If-None-Match: *` (create); a 412 is
not an error to it, the session comes back in the 412's body and is adopted."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from test_verdicts import LOBBY
from test_verdicts import OTHER
from test_verdicts import judge
from test_verdicts import of
from test_verdicts import only
from test_verdicts import rec

from mpsdproxy import interchange
from mpsdproxy import recording
from mpsdproxy.verdicts import Engine
from mpsdproxy.verdicts import Status

CAPTURE = Path(__file__).resolve().parent.parent.parent / "shared" / "captures" / "x49_mp_cs21.saz"
STALE = (("If-Match", '"e1"'),)
FRESH = (("If-Match", '"e2"'),)
ANY = (("If-Match", "*"),)
CREATE = (("If-None-Match", "*"),)
SEEN = {"properties": {"custom": {"mode": "ffa", "map": "docks"}}, "members": {"0": {}}}
NEWER = {"properties": {"custom": {"mode": "ctf", "map": "docks"}}, "members": {"0": {}}}
MINE = {"properties": {"custom": {"map": "harbour"}}}


def answered(record: dict[str, Any], document: Any) -> dict[str, Any]:
    """`record` with a JSON response body."""
    record["response"]["body"] = {"json": document}
    return record


def refused(seq: int, at: float, body: Any = MINE, **kw: Any) -> dict[str, Any]:
    """A session PUT with the stale ETag, answered 412 with the newer session and its ETag."""
    return answered(rec(seq, at, "PUT", status=412, headers=STALE, body=body,
                        response_headers=(("ETag", '"e2"'),), **kw), NEWER)


def verdict(records: Iterable[dict[str, Any]]) -> Any:
    return only(judge(records), "412-handled")


# ---------------------------------------------------------------- If-Match


def test_the_etag_the_412_returned_passes() -> None:
    v = verdict([refused(1, 0), rec(2, 0.5, "PUT", headers=FRESH, body=MINE)])
    assert (v.status, v.records) == (Status.PASS, (1, 2))


def test_the_etag_of_a_re_read_passes_with_the_read_as_evidence() -> None:
    v = verdict([refused(1, 0), rec(2, 0.2, response_headers=(("ETag", '"e3"'),)),
                 rec(3, 0.5, "PUT", headers=(("If-Match", '"e3"'),), body=MINE)])
    assert (v.status, v.records) == (Status.PASS, (1, 2, 3))


def test_the_etag_of_a_write_answered_after_the_refused_one_was_sent_passes() -> None:
    """A concurrent write answered meanwhile carries a newer ETag than the refused one."""
    v = verdict([refused(1, 0, took=0.3),
                 rec(2, 0.1, "PUT", headers=ANY, took=0.3, response_headers=(("ETag", '"e4"'),)),
                 rec(3, 0.6, "PUT", headers=(("If-Match", '"e4"'),), body=MINE)])
    assert (v.status, v.records) == (Status.PASS, (1, 3))
    assert "record 2" in v.reason


def test_update_existing_passes_even_without_a_re_read() -> None:
    v = verdict([refused(1, 0), rec(2, 0.5, "PUT", headers=ANY, body=MINE)])
    assert v.status is Status.PASS


def test_the_stale_etag_fails_even_after_a_re_read() -> None:
    v = verdict([refused(1, 0), rec(2, 0.2, response_headers=(("ETag", '"e3"'),)),
                 rec(3, 0.5, "PUT", headers=STALE, body=MINE)])
    assert (v.status, v.records) == (Status.FAIL, (1, 2, 3))
    assert 'resent the stale ETag "e1"' in v.reason


def test_an_etag_never_answered_is_not_judged() -> None:
    v = verdict([refused(1, 0), rec(2, 0.5, "PUT", headers=(("If-Match", '"zz"'),))])
    assert v.status is Status.NOT_APPLICABLE


@pytest.mark.parametrize("reread,expected", [(False, Status.FAIL), (True, Status.PASS)])
def test_if_match_star_refused_then_resent(reread: bool, expected: Status) -> None:
    """A 412 to `*` means there was no session: resending `*` blind cannot work."""
    records = [rec(1, 0, "PUT", status=412, headers=ANY)]
    records += [rec(2, 0.2, status=200)] if reread else []
    v = verdict([*records, rec(3, 0.5, "PUT", headers=ANY)])
    assert v.status is expected


# ---------------------------------------------------------------- If-None-Match


def test_a_bodiless_412_then_a_re_read_and_a_create_passes() -> None:
    v = verdict([rec(1, 0, "PUT", status=412, headers=STALE), rec(2, 0.2, status=204),
                 rec(3, 0.5, "PUT", headers=CREATE, body=MINE)])
    assert (v.status, v.records) == (Status.PASS, (1, 2, 3))


def test_a_bodiless_412_not_retried_passes() -> None:
    v = verdict([rec(1, 0, "PUT", status=412, headers=STALE), rec(2, 1, path=OTHER)])
    assert (v.status, v.records) == (Status.PASS, (1,))


@pytest.mark.parametrize("read,expected", [(None, Status.FAIL), (204, Status.PASS),
                                           (200, Status.FAIL)])
def test_a_refused_create_resent(read: int | None, expected: Status) -> None:
    records = [rec(1, 0, "PUT", status=412, headers=CREATE, body=MINE)]
    records += [rec(2, 0.2, status=read)] if read else []
    v = verdict([*records, rec(3, 0.5, "PUT", headers=CREATE, body=MINE)])
    assert v.status is expected


# ---------------------------------------------------------------- no precondition


def test_the_refused_document_written_blind_fails() -> None:
    v = verdict([refused(1, 0), rec(2, 0.5, "PUT", body=MINE)])
    assert v.status is Status.FAIL
    assert "wrote the refused document again" in v.reason


def test_the_refused_document_after_a_re_read_passes() -> None:
    v = verdict([refused(1, 0), rec(2, 0.2), rec(3, 0.5, "PUT", body=MINE)])
    assert v.status is Status.PASS


def test_a_blind_write_that_leaves_the_412s_changes_alone_adopts_it() -> None:
    created = answered(rec(1, 0, "PUT", status=201, response_headers=(("ETag", '"e1"'),)),
                       SEEN)
    v = verdict([created, refused(2, 1),
                 rec(3, 1.5, "PUT", body={"properties": {"custom": {"map": "harbour",
                                                                    "bots": 2}}})])
    assert (v.status, v.records) == (Status.PASS, (2, 3))
    assert "adopted the 412's session" in v.reason


def test_a_blind_write_that_puts_back_what_the_412_changed_fails() -> None:
    created = answered(rec(1, 0, "PUT", status=201, response_headers=(("ETag", '"e1"'),)),
                       SEEN)
    v = verdict([created, refused(2, 1),
                 rec(3, 1.5, "PUT", body={"properties": {"custom": {"mode": "ffa",
                                                                    "map": "harbour"}}})])
    assert v.status is Status.FAIL
    assert "overwrote properties/custom/mode" in v.reason


# ---------------------------------------------------------------- one verdict per 412


def test_a_write_in_flight_when_the_412_came_is_not_its_answer() -> None:
    v = verdict([refused(1, 0, took=0.4), rec(2, 0.2, "PUT", headers=ANY),
                 rec(3, 0.8, "PUT", headers=FRESH, body=MINE)])
    assert v.records == (1, 3)


def test_each_412_gets_one_verdict_from_the_write_after_it() -> None:
    found = judge([refused(1, 0), refused(2, 0.5), rec(3, 1, "PUT", headers=FRESH)])
    verdicts = of(found, "412-handled")
    assert [(v.status, v.records) for v in verdicts] == [
        (Status.FAIL, (1, 2)), (Status.PASS, (2, 3))]


def test_other_sessions_and_users_do_not_answer_a_412() -> None:
    v = verdict([refused(1, 0), rec(2, 0.2, "PUT", path=OTHER, headers=STALE),
                 rec(3, 0.3, "PUT", headers=STALE, user="bob"),
                 rec(4, 0.5, "PUT", path=LOBBY + "/members/me", headers=FRESH)])
    assert (v.status, v.records) == (Status.PASS, (1, 4))


# ---------------------------------------------------------------- the public capture


def test_the_public_capture_handles_both_412s(tmp_path: Path) -> None:
    """Its two 412s: one followed by an update-existing write (`*`), one by a write with
    the ETag the 412 returned. Both pass, once each."""
    if not CAPTURE.exists():
        pytest.skip(f"{CAPTURE} is not beside the clone")
    imported = str(tmp_path / "capture.jsonl")
    interchange.import_file(str(CAPTURE), imported)
    engine = Engine()
    found = []
    for record in recording.read(imported):
        if "request" in record:
            found += engine.feed(recording.to_exchange(record))
    found += engine.finish()
    verdicts = of(found, "412-handled")
    assert [(v.status, v.records) for v in verdicts] == [
        (Status.PASS, (8, 13)), (Status.PASS, (12, 14))]
    assert not [v for v in found if v.status is Status.FAIL]


def test_a_huge_session_name_is_clipped_in_the_sentence_not_in_the_identity() -> None:
    """The verdict quotes the call; a 50,000-character name shows clipped. Two such
    sessions that differ only past the clip are still judged apart."""
    base = LOBBY.rsplit("/", 1)[0] + "/" + "L" * 50_000
    one, two = base + "-one", base + "-two"
    verdicts = [v for v in judge([refused(1, 0, path=one), refused(2, 0.1, path=two),
                                  rec(3, 0.5, "PUT", path=one, headers=STALE, body=MINE),
                                  rec(4, 0.6, "PUT", path=two, headers=FRESH, body=MINE)])
                if v.rule == "412-handled"]
    assert sorted(v.status for v in verdicts) == sorted([Status.FAIL, Status.PASS])
    assert all(len(v.reason) < 1000 and "characters)" in v.reason for v in verdicts)
