"""`run --client-cert-ca FILE`: in reverse mode the proxy asks the title for a TLS client
certificate and refuses (the catalog's 403) a request without one the studio's CA issued.
Over real sockets: a TLS client holding certificates made here, the proxy in front of the
stand-in. Unit tests of the chain check beside them."""

from __future__ import annotations

import datetime
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import Launcher
from conftest import free_port
from conftest import read_records
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.oid import NameOID

from mpsdproxy.addons import access

HEADERS = {"Authorization": "XBL3.0 x=1234;token", "x-xbl-contract-version": "107"}
PATH = "/serviceconfigs/00000000-0000-0000-0000-000000000000/sessiontemplates/t/sessions/s"
NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)


class Made:
    """A certificate and its key, made for the test."""

    def __init__(self, name: str, issuer: Made | None = None, ca: bool = False,
                 usage: x509.ObjectIdentifier | None = ExtendedKeyUsageOID.CLIENT_AUTH,
                 start: datetime.datetime = NOW - DAY, end: datetime.datetime = NOW + DAY
                 ) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (x509.CertificateBuilder()
                   .subject_name(subject)
                   .issuer_name(issuer.cert.subject if issuer else subject)
                   .public_key(self.key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(start).not_valid_after(end)
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if usage is not None and not ca:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        self.cert = builder.sign((issuer or self).key, hashes.SHA256())

    def write(self, folder: Path, name: str) -> tuple[str, str]:
        """cert.pem and key.pem files for a TLS client."""
        cert, key = folder / f"{name}.pem", folder / f"{name}.key"
        cert.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        key.write_bytes(self.key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return str(cert), str(key)


@pytest.fixture(scope="module")
def studio() -> Made:
    return Made("studio CA", ca=True)


def test_only_a_certificate_the_ca_issued_gets_through(launch: Launcher, tmp_path: Path,
                                                       studio: Made) -> None:
    ca_file, _ = studio.write(tmp_path, "studio-ca")
    good = Made("devkit-07", issuer=studio).write(tmp_path, "devkit")
    rogue = Made("devkit-07", issuer=Made("rogue CA", ca=True)).write(tmp_path, "rogue")
    standin = launch.standin()
    proxy = launch.proxy("--mode", f"reverse:{standin.url}", "--client-cert-ca", ca_file)
    url = f"https://127.0.0.1:{proxy.port}{PATH}"

    def get(cert: tuple[str, str] | None) -> httpx.Response:
        tls = ssl.create_default_context()
        tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE  # mitmproxy's own CA
        if cert:
            tls.load_cert_chain(*cert)
        with httpx.Client(verify=tls, timeout=10) as client:
            return client.get(url, headers=HEADERS)

    passed, without, wrong = get(good), get(None), get(rogue)
    plain = httpx.get(proxy.url + PATH, headers=HEADERS, timeout=10)
    assert passed.status_code == 404, passed.text  # the stand-in's: no such session
    assert "Refused by mpsdproxy" not in passed.text
    for refused in (without, wrong, plain):
        assert refused.status_code == 403 and "Refused by mpsdproxy" in refused.text
    assert "no client certificate" in without.text
    assert "not issued by the trusted authority" in wrong.text
    assert proxy.output().count("Refused 127.0.0.1") == 3
    proxy.stop()
    assert [r["response"]["status"] for r in read_records(proxy.record)] == [404]


def test_a_bad_ca_file_is_one_line_naming_the_flag(tmp_path: Path) -> None:
    (tmp_path / "not-a-ca.pem").write_text("hello\n")
    for path in (tmp_path / "not-a-ca.pem", tmp_path / "missing.pem"):
        done = subprocess.run([sys.executable, "-m", "mpsdproxy", "run", "--listen-port",
                               str(free_port()), "--confdir", str(tmp_path / "conf"),
                               "--client-cert-ca", str(path)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "--client-cert-ca" in lines[0] and str(path) in lines[0]


def test_chain_through_an_intermediate(studio: Made) -> None:
    middle = Made("studio issuing CA", issuer=studio, ca=True)
    leaf = Made("devkit-07", issuer=middle)
    assert access.certificate_problem([leaf.cert, middle.cert], [studio.cert]) is None
    assert access.certificate_problem([leaf.cert], [studio.cert]) is not None
    not_ca = Made("not a CA", issuer=studio)
    under_leaf = Made("devkit-08", issuer=not_ca)
    assert access.certificate_problem([under_leaf.cert, not_ca.cert], [studio.cert]) is not None


def test_dates_and_usage_are_checked(studio: Made) -> None:
    expired = Made("old", issuer=studio, start=NOW - 3 * DAY, end=NOW - 2 * DAY)
    server_only = Made("web", issuer=studio, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    no_usage = Made("plain", issuer=studio, usage=None)
    assert "validity" in (access.certificate_problem([expired.cert], [studio.cert]) or "")
    assert "client authentication" in (
        access.certificate_problem([server_only.cert], [studio.cert]) or "")
    assert access.certificate_problem([no_usage.cert], [studio.cert]) is None
    assert "no client certificate" in (access.certificate_problem([], [studio.cert]) or "")


def test_a_pinned_self_signed_client_certificate(tmp_path: Path) -> None:
    pinned = Made("one console", ca=False)
    assert access.certificate_problem([pinned.cert], [pinned.cert]) is None
