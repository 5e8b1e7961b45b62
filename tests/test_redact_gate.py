"""Redaction's one pass over an exchange's texts (`secrets.may_hold`) never skips a secret.

`Redactor.exchange` (and so every record) looks at the URL, the reason, the error and the
header values not under a secret name one by one only when one pass over them all finds
something that may be a credential (bodies keep a pass of their own). These
tests hold it to what redacting each value on its own gives, on the texts where a pass
over joined pieces could be fooled: a name that is not secret in one piece next to a
secret word in another.
"""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from test_secrets import FOUND
from test_secrets import NOT_FOUND
from test_secrets import XBL
from test_secrets import msa

from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import secrets

#: Pieces a header value, a URL or a body may be made of: credentials, identifiers whose
#: names hold a secret word, and plain text.
PIECES = [text for _, text in FOUND] + NOT_FOUND + [
    "devicetokentype", "deviceTokenType", "mytoken=abcdefgh1234", "nexttoken", "token",
    "sig=0123456789", "AAAAAQ", "plain", "", "caf\udce9", "x" * 300,
]

SESSION = ("https://sessiondirectory.xboxlive.com/serviceconfigs/"
           "0badc0de-1111-2222-3333-444455556666/sessiontemplates/LobbySession/sessions/s")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=5))
@example(["devicetokentype", "mytoken=abcdefgh1234"])
def test_one_pass_over_joined_pieces_covers_each_piece(pieces: list[str]) -> None:
    if any(secrets.suspicious(piece) for piece in pieces):
        assert secrets.may_hold("\n".join(pieces))
        assert secrets.may_hold(model.to_bytes("\n".join(pieces)))


def one_by_one(redactor: recording.Redactor, exchange: model.Exchange) -> dict[str, object]:
    """What redacting each part on its own gives (the rule before the one pass)."""
    request, response = exchange.request, exchange.response
    out: dict[str, object] = {
        "request": [redactor.value(k, v) for k, v in request.headers],
        "url": redactor.text(request.url),
        "error": redactor.text(exchange.error) if exchange.error else exchange.error,
    }
    if response is not None:
        out["response"] = [redactor.value(k, v) for k, v in response.headers]
        out["reason"] = redactor.text(response.reason)
    return out


def as_redacted(exchange: model.Exchange) -> dict[str, object]:
    request, response = exchange.request, exchange.response
    out: dict[str, object] = {"request": [v for _, v in request.headers],
                              "url": request.url, "error": exchange.error}
    if response is not None:
        out["response"] = [v for _, v in response.headers]
        out["reason"] = response.reason
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=4),
       st.sampled_from(PIECES), st.booleans())
def test_an_exchange_is_redacted_as_each_value_would_be(values: list[str], other: str,
                                                        answered: bool) -> None:
    """Headers, URL, reason and error redacted in one go match their redaction one by
    one, whichever of them holds the credential or the misleading name."""
    texts = [v for v in values if "\n" not in v]
    request = model.Request("GET", SESSION + "?q=" + other.replace(" ", "%20")[:40]
                            if "\n" not in other and " " not in other else SESSION,
                            model.Headers([("Authorization", XBL), ("Signature", "AAAAAQ==")]
                                          + [(f"X-V{i}", v) for i, v in enumerate(texts)]))
    response = None
    if answered:
        response = model.Response(200, "OK", model.Headers(
            [(f"X-R{i}", v) for i, v in enumerate(reversed(texts))] + [("Set-Cookie", "a")]))
    exchange = model.Exchange(request, response, error=None if answered else other)
    redactor = recording.Redactor()
    assert as_redacted(redactor.exchange(exchange)) == one_by_one(redactor, exchange)


def test_a_token_beside_a_name_that_is_not_secret_is_still_redacted() -> None:
    """"deviceTokenType" counts two names that are not secret for one "token": joined
    with a header holding a real secret word, a subtraction would cancel that out."""
    exchange = model.Exchange(model.Request("GET", SESSION, model.Headers([
        ("X-A", "devicetokentype"), ("X-B", "mytoken=abcdefgh1234")])))
    redacted = recording.Redactor().exchange(exchange)
    assert redacted.request.headers.get("X-B").startswith("mytoken=redacted:")
    assert redacted.request.headers.get("X-A") == "devicetokentype"


def test_a_credential_only_in_a_body_is_redacted_with_its_length() -> None:
    body = ('{"RpsTicket":"t=' + msa() + '"}').encode()
    exchange = model.Exchange(
        model.Request("POST", SESSION, model.Headers([("Content-Length", str(len(body)))]),
                      body),
        model.Response(200, "OK", model.Headers([("Content-Type", "application/json")]),
                       b'{"a":1}'))
    record = recording.to_record(exchange, recording.Redactor())
    assert msa() not in str(record)
    headers = dict(record["request"]["headers"])
    assert int(headers["Content-Length"]) == len(
        recording.decode_body(record["request"]["body"]))
    assert record["response"]["body"] == {"json": {"a": 1}}
