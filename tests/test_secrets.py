"""secrets: credential shapes found in any text, and what is not a credential left alone.

Every token here is built in the test (random-looking base64 of realistic length);
none comes from a capture.
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import secrets


def b64(seed: str, size: int, alphabet: str = "std") -> str:
    """`size` characters of base64 that look random, derived from `seed`."""
    raw = b"".join(hashlib.sha256(f"{seed}{i}".encode()).digest() for i in range(size // 32 + 2))
    text = (base64.urlsafe_b64encode(raw) if alphabet == "url" else base64.b64encode(raw))
    return text.decode().rstrip("=")[:size]


def jwe(seed: str = "t") -> str:
    header = base64.urlsafe_b64encode(json.dumps({"enc": "A128CBC", "alg": "RSA-OAEP",
                                                   "zip": "DEF"}).encode()).decode().rstrip("=")
    return ".".join([header, b64(seed + "k", 342, "url"), b64(seed + "iv", 22, "url"),
                     b64(seed + "p", 1800, "url"), b64(seed + "tag", 22, "url")])


def jwt(seed: str = "j") -> str:
    header = base64.urlsafe_b64encode(b'{"typ":"JWT","alg":"RS256"}').decode().rstrip("=")
    return ".".join([header, b64(seed + "p", 600, "url"), b64(seed + "s", 342, "url")])


def msa(seed: str = "m", prefix: str = "EwC") -> str:
    return prefix + b64(seed, 900)


XBL = f"XBL3.0 x=1234567890123456789;{jwe()}"
SIGNATURE = "AAAAAQ" + b64("sig", 98)
DER = "MII" + b64("der", 1500)

FOUND = [
    ("xbl3", f"Authorization: {XBL}"),
    ("xbl3", 'X-Tickets: "1001"="x:' + XBL + '"'),
    ("jwt", f"Bearer? no: {jwt()} in a log line"),
    ("jwt", json.dumps({"Token": jwe("x")})),
    ("msa-ticket", f"t={msa()}&p="),
    ("msa-ticket", f"X-Search-RPSToken: t%3D{msa('u', 'EwD')}"),
    ("msa-ticket", f"p:t={msa('g', 'GwA')}&p="),
    ("msa-ticket", f"bare {msa('b', 'EwA')} ticket"),
    ("xbl-signature", f"Signature: {SIGNATURE}"),
    ("der-blob", f"X-Aad-Token: {DER}"),
    ("auth-scheme", "Authorization: Kerberos YII" + b64("k", 240)),
    ("soap-security", '<s:Header><wsse:Security><CipherValue>' + b64("c", 700)
     + "</CipherValue></wsse:Security></s:Header>"),
    ("soap-security", '<wsse:BinarySecurityToken ValueType="urn:example:device">'
     + b64("bst", 300) + "</wsse:BinarySecurityToken>"),
    ("soap-security", "<EncryptedData><CipherData><CipherValue>" + b64("body", 400)
     + "</CipherValue></CipherData></EncryptedData>"),
    ("query-token", "https://push.example/?token=" + b64("wns", 120)),
    ("query-token", "https://h/cb?access_token=abcdef0123456789&state=1"),
    ("json-field", '{"RpsTicket":"short-but-named-1234"}'),
    ("json-field", '{"refresh_token":"0.AAAA.abcdefgh"}'),
]


@pytest.mark.parametrize(("kind", "text"), FOUND)
def test_every_credential_shape_is_found(kind: str, text: str) -> None:
    found = secrets.find(text)
    assert found, text[:60]
    assert found[0].kind == kind
    assert secrets.suspicious(text)


def test_a_finding_spans_the_secret_not_its_surroundings() -> None:
    text = f"a=1; X-Tickets: t={msa()}&p= end"
    (finding,) = secrets.find(text)
    assert text[finding.start:finding.end] == msa()
    text = '{"RpsTicket":"t=' + msa() + '","Other":1}'
    (finding,) = secrets.find(text)
    assert text[finding.start:finding.end] == "t=" + msa()  # the field's whole value


NOT_FOUND = [
    "0badc0de-1111-2222-3333-444455556666",
    'ETag: "0123456789abcdef0123456789abcdef"',
    "X-XblCorrelationId: 99999999-8888-7777-6666-555555555555",
    '{"changeNumber":17,"branch":"aaaabbbb-cccc-dddd-eeee-ffff00001111"}',
    "/serviceconfigs/0badc0de-1111-2222-3333-444455556666/sessiontemplates/LobbySession"
    "/sessions/12345678-aaaa-bbbb-cccc-1234567890ab",
    "X-Xbl-Debug: build=1.0.2000.1, node=12345678-aaaa-bbbb-cccc-1234567890ab",
    '{"TokenType":"JWT","deviceToken":"00112233445566778899aabbccddeeff"}',
    '{"ticketId":"8a7d2f3c-1111-2222-3333-444455556666","continuationToken":"abc123def456"}',
    '{"DisplayClaims":{"xui":[{"uhs":"1111222233334444555","gtg":"Player One"}]}}',
    "Date: Wed, 25 Nov 2026 11:04:46 GMT",
    "connectionRequiredForActiveMembers userAuthorizationStyle",
    "ws:0badc0de-1111-2222-3333-444455556666~lobbysession~12345678-aaaa-bbbb-cccc",
    '{"Token":"redacted:0123456789ab"}',
    "https://h/cb?access_token=redacted:0123456789ab",
]


@pytest.mark.parametrize("text", NOT_FOUND)
def test_what_is_not_a_credential_is_not_found(text: str) -> None:
    assert secrets.find(text) == []


@pytest.mark.parametrize(("name", "secret"), [
    ("Token", True), ("RpsTicket", True), ("ProofKey", True), ("client_secret", True),
    ("password", True), ("UserTokens", True), ("sig", True), ("TokenType", False),
    ("deviceToken", False), ("ticketId", False), ("continuationToken", False),
    ("DisplayClaims", False), ("gamertag", False),
])
def test_secret_key(name: str, secret: bool) -> None:
    assert secrets.secret_key(name) is secret


def test_redactor_text_replaces_shapes_and_is_idempotent() -> None:
    redactor = recording.Redactor()
    text = f"sent {XBL} and t={msa()}&p= done"
    once = redactor.text(text)
    assert jwe() not in once and msa() not in once
    assert once.startswith("sent XBL3.0 x=redacted:") and once.endswith("&p= done")
    assert redactor.text(once) == once
    assert secrets.find(once) == []
    assert recording.Redactor(enabled=False).text(text) == text


def test_a_redacted_value_keeps_a_stable_hash() -> None:
    redactor = recording.Redactor()
    assert redactor.text(XBL) == redactor.text(XBL) == recording.redact_value(XBL)
    assert redactor.text(XBL) != redactor.text(f"XBL3.0 x=1;{jwe('other')}")


def test_bytes_that_are_not_utf8_are_searched_too() -> None:
    raw = b"\xff\xfe binary " + f"t={msa()}&p=".encode() + b" \x80"
    text = model.from_bytes(raw)
    assert [f.kind for f in secrets.find(text)] == ["msa-ticket"]


def test_redacting_model_headers_keeps_bytes_that_are_not_utf8():
    headers = model.Headers.from_raw([(b"Authorization", XBL.encode() + b"\xff"),
                                      (b"X-Title", b"Caf\xe9")])
    redacted = recording.Redactor().apply(headers)
    assert redacted.get("Authorization") == recording.redact_value(XBL + "\udcff")
    assert redacted.raw()[1] == (b"X-Title", b"Caf\xe9")


def test_changed_names_or_switch_take_effect_at_once():
    fields = [("Authorization", XBL), ("X-Debug", "node=7")]
    redactor = recording.Redactor()
    assert secrets.is_redacted(redactor.headers(fields)[0][1])
    redactor.enabled = False
    assert redactor.headers(fields) == [["Authorization", XBL], ["X-Debug", "node=7"]]
    redactor.enabled = True
    redactor.names = frozenset({"x-debug"})
    out = redactor.headers(fields)
    assert out[1][1].startswith("redacted:")
    # not named any more, yet an XBL3.0 value is redacted by its shape
    assert out[0] == ["Authorization", recording.redact_value(XBL)]
