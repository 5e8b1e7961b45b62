"""StandIn addon: answers what the replay handed over, and never lets such a flow through."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.test import taddons
from mitmproxy.test import tflow

from mpsdproxy import replay
from mpsdproxy.addons import common
from mpsdproxy.addons import router
from mpsdproxy.addons import standin

HOST = "https://sessiondirectory.xboxlive.com"
SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
PATH = f"/serviceconfigs/{SCID}/sessiontemplates/LobbySession/sessions/lobby-1"
HEADERS = [(b"Authorization", b"XBL3.0 x=alice;token-of-alice"),
           (b"x-xbl-contract-version", b"107")]
DOCUMENT = {"constants": {"system": {"maxMembersCount": 8}, "custom": {}},
            "properties": {"system": {}, "custom": {"mode": "ctf"}},
            "members": {"0": {"constants": {"system": {"xuid": "1001", "index": 0}},
                              "properties": {"system": {"active": True}}}},
            "membersInfo": {"first": 0, "next": 1, "count": 1, "accepted": 1},
            "changeNumber": 4}


class Options:
    """The Replayer's options the stand-in follows, without the Replayer."""

    def load(self, loader: Any) -> None:
        loader.add_option("mpsd_replay", Sequence[str], [], "recordings")
        loader.add_option("mpsd_replay_unmatched", str, "error", "policy")


def handed(method: str = "GET", seeds: list[replay.Seed] | None = None) -> http.HTTPFlow:
    """A flow the router marked and the replay handed to the stand-in."""
    f = tflow.tflow(req=http.Request.make(method, HOST + PATH, b"", HEADERS))
    with taddons.context(router.Router()) as tctx:
        tctx.master.addons.get("router").request(f)
    decision = replay.Pass("emulate", "unmatched", "no recorded answer for it")
    f.metadata[replay.HANDOFF_KEY] = replay.handoff_mark(decision, seeds or [])
    return f


@pytest.fixture
def stand_in() -> Any:
    addon = standin.StandIn()
    with taddons.context(Options(), addon) as tctx:
        tctx.options.update(mpsd_replay=["r.jsonl"], mpsd_replay_unmatched="emulate")
        yield addon


def test_answers_from_the_seeded_session(stand_in: standin.StandIn) -> None:
    f = handed(seeds=[replay.Seed(PATH, DOCUMENT, '"e4"')])
    stand_in.request(f)
    assert f.response is not None and f.response.status_code == 200
    assert json.loads(f.response.content)["changeNumber"] == 4
    mark = f.metadata[replay.HANDOFF_KEY]
    assert mark["etag"] == f.response.headers["ETag"]  # for the replay to learn
    assert "seeds" not in mark  # taken: a flow keeps no documents in its metadata
    assert common.provenance(f) == {"source": "emulated", "replay": "unmatched",
                                    "note": "no recorded answer for it"}


def test_a_session_never_seeded_is_unknown_to_it(stand_in: standin.StandIn) -> None:
    f = handed()
    stand_in.request(f)
    assert f.response is not None and f.response.status_code == 204


def test_flows_not_handed_over_pass(stand_in: standin.StandIn) -> None:
    f = handed()
    del f.metadata[replay.HANDOFF_KEY]
    stand_in.request(f)
    assert f.response is None and f.error is None


def test_already_handled(stand_in: standin.StandIn) -> None:
    answered = handed()
    answered.response = http.Response.make(503)
    stand_in.request(answered)
    killed = handed()
    killed.kill()
    stand_in.request(killed)
    assert answered.response.status_code == 503 and killed.response is None


def test_without_a_stand_in_a_handed_flow_is_refused_not_forwarded() -> None:
    addon = standin.StandIn()
    with taddons.context(Options(), addon) as tctx:
        tctx.options.update(mpsd_replay=["r.jsonl"], mpsd_replay_unmatched="error")
        f = handed()
        addon.request(f)
    assert f.response is not None and f.response.status_code == 502
    assert "the stand-in failed: no stand-in is running" in f.response.text
    assert common.provenance(f)["source"] == "replay-error"


def test_a_fresh_stand_in_when_the_policy_changes(stand_in: standin.StandIn) -> None:
    first = handed("PUT", seeds=[replay.Seed(PATH, DOCUMENT, '"e4"')])
    first.request.content = b'{"properties":{"custom":{"mode":"tdm"}}}'
    stand_in.request(first)
    assert first.response is not None and first.response.status_code == 200
    with taddons.context(Options(), stand_in) as tctx:
        tctx.options.update(mpsd_replay=["r.jsonl"], mpsd_replay_unmatched="forward")
        tctx.options.update(mpsd_replay_unmatched="emulate")
        f = handed()
        stand_in.request(f)
    assert f.response is not None and f.response.status_code == 204  # forgot the session


def test_the_replayer_never_imports_the_stand_in() -> None:
    code = ("import sys, mpsdproxy.addons.replayer; "
            "print(sorted(m for m in sys.modules if m.startswith('mpsdproxy.emulator')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "[]"
