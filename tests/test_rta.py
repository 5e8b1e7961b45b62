"""The RTA message model: what the capture's frames and the client library's messages decode to."""

from __future__ import annotations

from mpsdproxy import rta


def test_a_subscribe_and_its_result_decode_by_direction() -> None:
    sent = rta.decode(rta.subscribe_message(1), from_client=True)
    assert sent is not None and (sent.type, sent.sequence, sent.uri) == (
        rta.Type.SUBSCRIBE, 1, rta.CONNECTIONS_URI)
    got = rta.decode(rta.subscribe_result_message(1, rta.Status.SUCCESS, 0,
                                                  {"ConnectionId": "c-1"}), from_client=False)
    assert got is not None and (got.status, got.subscription_id, got.connection_id) == (0, 0, "c-1")


def test_a_tap_names_the_session_and_its_change_number() -> None:
    tap = rta.Tap("SCID~LobbySession~Lobby-1", 3, "b-1", "sub-1", "2026-01-01T00:00:00Z")
    message = rta.decode(rta.tap_message(0, [tap], "n-1"), from_client=False)
    assert message is not None and message.type is rta.Type.EVENT
    assert message.taps == (tap,) and message.taps[0].session == "scid~lobbysession~lobby-1"


def test_unsubscribe_resync_and_anything_else() -> None:
    assert rta.decode(rta.unsubscribe_message(5, 0), from_client=True).subscription_id == 0
    assert rta.decode(rta.unsubscribe_result_message(5, 0), from_client=False).status == 0
    assert rta.decode(rta.resync_message(), from_client=False).type is rta.Type.RESYNC
    for junk in ("", "{}", "[]", "[9, 1]", "not json", '["1"]', "[3, 0]"):
        assert rta.decode(junk, from_client=False) is None


def test_nul_padding_and_malformed_resources() -> None:
    padded = rta.subscribe_message(3) + "\x00\x00\x00"
    assert rta.decode(padded, from_client=True).sequence == 3
    odd = '[3,0,{"shoulderTaps":[{"resource":"not-a-session","changeNumber":1}]}]'
    assert rta.decode(odd, from_client=False).taps == ()


def test_the_service_picks_v2_and_answers_the_older_subprotocol_too() -> None:
    assert rta.chosen_subprotocol(["rta.xboxlive.com.V2"]) == rta.SUBPROTOCOL
    assert rta.chosen_subprotocol(["rta.xboxlive.com"]) == "rta.xboxlive.com"
    assert rta.chosen_subprotocol(["rta.xboxlive.com, rta.xboxlive.com.V2"]) == rta.SUBPROTOCOL
    assert rta.chosen_subprotocol(["chat", "rta.xboxlive.com.V3"]) is None
    assert rta.chosen_subprotocol([]) is None
