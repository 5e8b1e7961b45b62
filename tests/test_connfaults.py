"""Connection faults through the injector's hooks: drop, reset, hang, truncate."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from injector_kit import doc
from injector_kit import make_flow
from injector_kit import provenance
from injector_kit import rig
from injector_kit import rule
from injector_kit import scenario_text
from injector_kit import seed_session
from injector_kit import service_answer
from mitmproxy import exceptions
from mitmproxy.connection import ConnectionState
from mitmproxy.test import taddons

from mpsdproxy import faults
from mpsdproxy.addons import classifier
from mpsdproxy.addons import connfaults
from mpsdproxy.addons import injector

# --- connection faults ------------------------------------------------------------------------

def test_drop_closes_without_an_answer(tmp_path: Path) -> None:
    with rig(tmp_path, scenario_text(rule("drop", "{drop: true}"))) as rg:
        f = rg.exchange(make_flow())
    assert f.response is None
    assert f.error is not None and f.error.msg == f.error.KILLED_MESSAGE
    assert provenance(f)["fault"] == "drop"
    assert classifier.classify_flow(f).id is None


def test_reset_without_a_socket_degrades_to_a_close_and_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with rig(tmp_path, scenario_text(rule("rst", "{reset: true}"))) as rg:
        f = rg.exchange(make_flow())
    assert f.response is None and f.error is not None
    assert provenance(f)["fault"] == "reset"
    assert "rule rst cannot reset this connection" in caplog.text


def test_reset_sets_linger_zero_on_the_client_socket(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The RST itself is seen over a real socket in test_e2e_scenarios."""
    left, right = socket.socketpair()
    with left, right:
        monkeypatch.setattr(connfaults, "client_socket", lambda flow: left)
        with rig(tmp_path, scenario_text(rule("rst", "{reset: true}"))) as rg:
            f = rg.exchange(make_flow())
        linger = left.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)
    assert linger[:4] != b"\0\0\0\0" and linger[4:] == b"\0\0\0\0"  # on, 0 seconds
    assert f.error is not None


def test_hang_holds_until_the_limit_then_kills(tmp_path: Path) -> None:
    with rig(tmp_path, scenario_text(rule("hang", "{hang: true}")), mpsd_hang_max=1) as rg:
        started = time.monotonic()
        f = rg.exchange(make_flow())
        elapsed = time.monotonic() - started
    assert elapsed >= 1.0
    assert f.response is None and f.error is not None
    assert provenance(f)["fault"] == "hang" and provenance(f)["held_s"] >= 1.0


def test_hang_ends_when_the_client_goes_away(tmp_path: Path) -> None:
    with rig(tmp_path, scenario_text(rule("hang", "{hang: true}")), mpsd_hang_max=30) as rg:
        f = make_flow()
        rg.router.request(f)

        async def client_gives_up() -> None:
            pending = rg.inj.request(f)
            assert pending is not None
            asyncio.get_running_loop().call_later(
                0.3, setattr, f.client_conn, "state", ConnectionState.CAN_WRITE)
            await pending

        asyncio.run(client_gives_up())
    assert f.error is not None and 0.3 <= provenance(f)["held_s"] < 5


def test_truncate_promises_the_whole_body_and_sends_part(tmp_path: Path) -> None:
    with rig(tmp_path, scenario_text(rule("cut", "{status: 200, truncate: 10}"))) as rg:
        seed_session(rg)
        f = rg.exchange(make_flow())
    full = len(faults.encode_json(doc()))
    assert f.response.raw_content == faults.encode_json(doc())[:10]  # type: ignore[union-attr]
    assert f.response.headers["Content-Length"] == str(full)  # type: ignore[union-attr]
    assert f.response.headers["Connection"] == "close"  # type: ignore[union-attr]
    assert provenance(f)["fault"] == "status"


def test_truncate_cuts_the_real_answer_in_phase_response(tmp_path: Path) -> None:
    text = scenario_text(rule("cut", "{truncate: true}", extra="    phase: response\n"))
    with rig(tmp_path, text) as rg:
        answer = service_answer(200, doc())
        answer.headers["Transfer-Encoding"] = "chunked"
        f = rg.exchange(make_flow(), answer)
    body = faults.encode_json(doc())
    assert f.response.raw_content == body[: len(body) // 2]  # type: ignore[union-attr]
    assert f.response.headers["Content-Length"] == str(len(body))  # type: ignore[union-attr]
    assert "Transfer-Encoding" not in f.response.headers  # type: ignore[union-attr]
    assert provenance(f)["fault"] == "truncate" and provenance(f)["phase"] == "response"



# --- options ---------------------------------------------------------------------------------

def test_hang_max_is_validated(tmp_path: Path) -> None:
    inj = injector.FaultInjector()
    with taddons.context(inj) as tctx:
        with pytest.raises(exceptions.OptionsError,
                           match="Cannot parse mpsd_hang_max option 0: should be at least 1"):
            tctx.configure(inj, mpsd_hang_max=0)
        assert inj.hang_max == injector.DEFAULT_HANG_MAX
