"""scan, and redaction where records are made: no credential reaches a file.

The real capture is read in place from ../shared/captures/ (skipped when it is not
there); nothing from it is copied here, and the tokens it holds are read at test time.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest
from test_secrets import DER
from test_secrets import SIGNATURE
from test_secrets import XBL
from test_secrets import b64
from test_secrets import jwe
from test_secrets import msa

from mpsdproxy import interchange
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import scan
from mpsdproxy import secrets
from mpsdproxy.addons import flowfile

CAPTURE = Path(__file__).resolve().parent.parent.parent / "shared" / "captures" / "x49_mp_cs21.saz"

SOAP = ('<?xml version="1.0"?><s:Envelope><s:Header><wsse:Security><EncryptedData>'
        "<CipherData><CipherValue>" + b64("cv", 700) + "</CipherValue></CipherData>"
        '</EncryptedData><wsse:BinarySecurityToken ValueType="urn:example:device">'
        + b64("bst", 300) + "</wsse:BinarySecurityToken></wsse:Security></s:Header>"
        "<s:Body><wst:RequestSecurityToken/></s:Body></s:Envelope>")
AUTH_BODY = {"RelyingParty": "http://auth.xboxlive.com", "TokenType": "JWT",
             "Properties": {"AuthMethod": "RPS", "RpsTicket": "t=" + msa(),
                            "ProofKey": {"crv": "P-256", "x": b64("x", 43, "url")},
                            "UserTokens": [jwe("u1"), jwe("u2")]}}
XSTS_REPLY = {"Token": jwe("xsts"), "NotAfter": "2026-12-01T00:00:00Z",
              "DisplayClaims": {"xui": [{"uhs": "1234567890123456789", "gtg": "Player One"}]}}


def leaky_exchanges() -> list[model.Exchange]:
    """Credentials everywhere: headers by name and by shape, URL, JSON and SOAP bodies."""
    auth = model.Exchange(
        model.Request("POST", "https://user.auth.xboxlive.com/user/authenticate?access_token="
                      + b64("q", 60), [("Authorization", XBL), ("Signature", SIGNATURE),
                                       ("X-Debug-Echo", f"t={msa('h')}&p="),
                                       ("Content-Type", "application/json")],
                      json.dumps(AUTH_BODY, separators=(",", ":")).encode()),
        model.Response(200, "OK", [("Content-Type", "application/json"),
                                   ("Set-Cookie", "MSPAuth=" + b64("c", 80))],
                       json.dumps(XSTS_REPLY, separators=(",", ":")).encode()),
        start=1.0, end=1.1)
    soap = model.Exchange(
        model.Request("POST", "https://login.live.com/RST2.srf",
                      [("Content-Type", "application/soap+xml"),
                       ("Content-Length", str(len(SOAP)))], SOAP.encode()),
        model.Response(200, "OK", [("X-Aad-Token", DER), ("Proxy-Authorization", "Basic Zm9v")],
                       ("text " + jwe("free")).encode()),
        start=2.0, end=2.1)
    return [auth, soap]


def write_records(path: Path, exchanges: list[model.Exchange],
                  redactor: recording.Redactor) -> None:
    with recording.Writer(str(path)) as writer:
        for exchange in exchanges:
            writer.write(recording.to_record(exchange, redactor))


def test_a_record_holds_no_credential(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    write_records(out, leaky_exchanges(), recording.Redactor())
    assert scan.scan_file(str(out)) == []
    text = out.read_text()
    for secret in (jwe(), jwe("u1"), jwe("xsts"), msa(), msa("h"), SIGNATURE, DER,
                   b64("cv", 700), b64("bst", 300), b64("q", 60), b64("x", 43, "url")):
        assert secret not in text
    first = json.loads(text.splitlines()[1])
    # what is not a credential stays readable
    body = first["response"]["body"]["json"]
    assert body["DisplayClaims"] == XSTS_REPLY["DisplayClaims"]
    assert first["request"]["body"]["json"]["TokenType"] == "JWT"
    assert first["request"]["body"]["json"]["Properties"]["ProofKey"]["crv"].startswith(
        recording.REDACTED_PREFIX)
    assert "wst:RequestSecurityToken" in json.loads(text.splitlines()[2])["request"]["body"]["text"]


def test_redacting_keeps_exchanges_apart_and_is_idempotent() -> None:
    redactor = recording.Redactor()
    auth, soap = leaky_exchanges()
    once = redactor.exchange(auth)
    assert redactor.exchange(once) == once
    assert once.request.headers.first("Authorization") == recording.redact_value(XBL)
    assert once.request.url.startswith("https://user.auth.xboxlive.com/user/authenticate?"
                                       "access_token=redacted:")
    tokens = once.request.json["Properties"]["UserTokens"]
    assert len(set(tokens)) == 2 and all(t.startswith("redacted:") for t in tokens)
    redacted_soap = redactor.exchange(soap)
    assert redacted_soap.request.headers.first("Content-Length") == str(
        len(redacted_soap.request.body))


def test_a_clean_exchange_is_the_same_object_and_disabled_touches_nothing() -> None:
    clean = model.Exchange(
        model.Request("GET", "https://sessiondirectory.xboxlive.com/handles/query",
                      [("x-xbl-contract-version", "107")]),
        model.Response(200, "OK", [("ETag", '"0123456789abcdef0123456789abcdef"')],
                       b'{"deviceToken":"00112233445566778899aabbccddeeff","changeNumber":3}'))
    assert recording.Redactor().exchange(clean) is clean
    auth, _ = leaky_exchanges()
    assert recording.Redactor(enabled=False).exchange(auth) is auth


def test_a_changed_body_loses_its_wire_bytes() -> None:
    import gzip

    body = json.dumps(XSTS_REPLY).encode()
    response = model.Response(200, "OK", [("Content-Encoding", "gzip")], body,
                              gzip.compress(body, mtime=0))
    exchange = model.Exchange(model.Request("GET", "https://xsts.auth.xboxlive.com/x"), response)
    redacted = recording.Redactor().exchange(exchange)
    assert redacted.response is not None and redacted.response.encoded is None
    record = recording.to_record(exchange, recording.Redactor())
    assert "encoded" not in record["response"]


def test_scan_names_where_and_never_prints_the_secret(tmp_path: Path) -> None:
    out = tmp_path / "raw.jsonl"
    write_records(out, leaky_exchanges(), recording.Redactor(enabled=False))
    found = scan.scan_file(str(out))
    wheres = {f.where for f in found}
    assert "line 2 request.headers[Authorization]" in wheres
    assert "line 2 request.body.json.Properties.RpsTicket" in wheres
    assert "line 2 response.body.json.Token" in wheres
    assert "line 3 request.body.text" in wheres
    assert any(w.startswith("line 2 request.url") for w in wheres)
    for finding in found:
        assert finding.path == str(out)
        assert len(finding.excerpt) <= 4 + 3
        assert str(finding) == f"{out}:{finding.where}: {finding.kind}: {finding.excerpt}"
        assert finding.kind not in finding.excerpt  # said once, as `file:where: kind: excerpt`


def test_scan_reads_har_saz_csv_and_text(tmp_path: Path) -> None:
    har = tmp_path / "x.har"
    har.write_text(json.dumps({"log": {"version": "1.2", "entries": [{
        "request": {"method": "GET", "url": "https://h/", "headers": [
            {"name": "Authorization", "value": XBL}], "queryString": [
            {"name": "access_token", "value": "abcdefgh12345678"}]},
        "response": {"status": 200, "headers": [], "content": {
            "mimeType": "application/json", "text": json.dumps(XSTS_REPLY)}}}]}}))
    assert {(f.where, f.kind) for f in scan.scan_file(str(har))} == {
        ("entry 1 request.headers[Authorization]", "secret-header"),
        ("entry 1 request.queryString[access_token]", "secret-field"),
        ("entry 1 response.content.text.Token", "secret-field")}
    saz = tmp_path / "x.saz"
    with zipfile.ZipFile(saz, "w") as archive:
        archive.writestr("raw/01_c.txt", f"GET https://h/ HTTP/1.1\r\nAuthorization: {XBL}\r\n"
                                         "Host: h\r\n\r\n")
        archive.writestr("raw/01_s.txt", "HTTP/1.1 200 OK\r\nContent-Type: application/json"
                                         "\r\n\r\n" + json.dumps(XSTS_REPLY))
    assert [(f.where, f.kind) for f in scan.scan_file(str(saz))] == [
        ("raw/01_c.txt header[Authorization]", "secret-header"),
        ("raw/01_s.txt body.Token", "secret-field")]
    trace = tmp_path / "x.csv"
    trace.write_text('v1510\n"Host","Uri","RequestHeaders","RequestBody"\n'
                     f'"h","https://h/","Accept: */*  Authorization: {XBL}  ","{{}}"\n')
    assert [(f.where, f.kind) for f in scan.scan_file(str(trace))] == [
        ("row 1 RequestHeaders[Authorization]", "secret-header")]
    report = tmp_path / "report.md"
    report.write_text(f"# report\nall fine\nleaked {msa()}\n")
    assert [(f.where, f.kind) for f in scan.scan_file(str(report))] == [
        ("line 3", "msa-ticket")]


def test_a_redacted_value_is_not_a_finding(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    write_records(out, leaky_exchanges(), recording.Redactor())
    assert "redacted:" in out.read_text()
    assert scan.scan_file(str(out)) == []


def _capture_tokens() -> set[str]:
    """Credentials of the capture, read now: the values of its credential headers and
    token fields, and every shape in it (tokens are long; XML around them is left out)."""
    tokens: set[str] = set()
    with zipfile.ZipFile(CAPTURE) as archive:
        for info in archive.infolist():
            text = model.from_bytes(archive.read(info))
            tokens |= {text[f.start:f.end] for f in secrets.find(text)
                       if f.kind != "soap-security"}
            tokens |= set(re.findall(r"(?im)^(?:Authorization|Signature|X-AuthXToken|X-Tickets"
                                     r"|X-Aad-Token|MSA_DeviceTicket): ?(.+?)\r?$", text))
            tokens |= set(re.findall(r'"(?:Token|RpsTicket)":"([^"]+)"', text))
            tokens |= set(re.findall(r"<CipherValue>([^<]+)<", text))
    return {token for token in tokens if len(token) >= 40}


@pytest.mark.parametrize("all_hosts", [False, True])
def test_the_real_capture_imports_without_a_credential(tmp_path: Path, all_hosts: bool) -> None:
    if not CAPTURE.exists():
        pytest.skip(f"{CAPTURE} is not here (public captures live beside the clone)")
    out = tmp_path / "x49.jsonl"
    extra = {"all_hosts": True} if all_hosts else {}
    interchange.import_file(str(CAPTURE), str(out), formats=flowfile.FORMATS, **extra)
    assert scan.scan_file(str(out)) == []
    text = out.read_text(encoding="utf-8", errors="surrogateescape")
    tokens = _capture_tokens()
    assert len(tokens) > 20
    leaked = [token[:4] for token in tokens if token[:40] in text or token[-40:] in text]
    assert leaked == []
    assert scan.scan_file(str(CAPTURE))  # the capture itself is full of them
