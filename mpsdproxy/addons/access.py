"""Who may use the proxy: where it may listen, and the title's own credential check.

Two halves. `listen_points` and `remote_points` read the proxy's listening addresses
as mitmproxy will bind them (every mode, `--listen-host`, `@HOST:PORT`, `--set`), so
`run` can refuse anything beyond loopback unless the user said `--allow-remote`.

`ClientAccess` is the check itself. mitmproxy's `proxyauth` is useless in reverse
mode for a title: it reads `Authorization` and strips it, so every XBL request would
reach the service without its token (401). This addon checks a header of its own
(`mpsd_client_header`, "NAME=VALUE": required from the title, removed before
forwarding, `Authorization` untouched), the client's source address
(`mpsd_allow_client`, CIDRs) and, with `mpsd_client_cert_ca`, a TLS client certificate
issued by that authority. A request that fails any gets 403 from the proxy, never
reaches the chain (so it is not recorded) and leaves one line in the log. In regular
and upstream mode the header and address are checked on the CONNECT (and on plain-HTTP
proxy requests); requests inside an accepted tunnel are not asked again. The
certificate is checked on every request, as it only exists once TLS is up.

Client certificates: mitmproxy can ask for one (`request_client_cert`, which this
addon turns on) but accepts any (mitmproxy/net/tls.py `accept_all`) and has no option
to verify it against a CA. The TLS handshake proves the client holds the key of the
certificate it sent (mitmproxy/proxy/layers/tls.py puts it first in
`client_conn.certificate_list`); `certificate_problem` then checks that an authority
in the file issued it, through any intermediates the client sent, and that every link
is within its validity dates.

It is a top-level mitmproxy addon, not part of `MpsdChain`: it needs the
`requestheaders` and `http_connect` hooks, before any request body is read.
"""

from __future__ import annotations

import datetime
import hmac
import ipaddress
import logging
import os
import re
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID
from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy.proxy import mode_specs

from mpsdproxy import faults
from mpsdproxy import model
from mpsdproxy.addons import flows

__all__ = ["ClientAccess", "ListenPoint", "certificate_problem", "is_loopback", "listen_points",
           "load_authorities", "parse_client_header", "parse_networks", "remote_points"]

logger = logging.getLogger(__name__)

#: An HTTP header name (RFC 9110 token).
_TOKEN = re.compile(f"[{model.TOKEN_CHARS}]+")  # a header name: the model's token rule

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_loopback(host: str) -> bool:
    """Whether a listening host keeps the port on this machine ("" is every interface)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ListenPoint(NamedTuple):
    """One address a mode binds, and the spec that said so (for the messages)."""

    host: str
    port: int
    mode: str

    def shown(self) -> str:
        """host:port as a person reads it, every interface said in words."""
        if not self.host:
            return f"port {self.port} of every interface"
        host = f"[{self.host}]" if ":" in self.host else self.host
        every = " (every interface)" if self.host in ("0.0.0.0", "::") else ""
        return f"{host}:{self.port}{every}"


def listen_points(modes: Sequence[str], listen_host: str, listen_port: int | None
                  ) -> list[ListenPoint]:
    """Where each mode listens, as mitmproxy resolves it (`ValueError` for a bad spec).
    Modes that bind nothing (local redirect) are left out."""
    points = []
    for spec in modes:
        mode = mode_specs.ProxyMode.parse(spec)
        port = mode.listen_port(listen_port)
        if port is None:
            continue
        points.append(ListenPoint(mode.listen_host(listen_host), port, spec))
    return points


def remote_points(modes: Sequence[str], listen_host: str, listen_port: int | None
                  ) -> list[ListenPoint]:
    """The listening addresses beyond loopback: what `--allow-remote` must allow."""
    return [p for p in listen_points(modes, listen_host, listen_port) if not is_loopback(p.host)]


def parse_client_header(value: str) -> tuple[str, str] | None:
    """"NAME=VALUE" as (name, value); None for ""; ValueError for anything else."""
    if not value:
        return None
    name, eq, expected = value.partition("=")
    name = name.strip()
    if not eq or not name or not expected or not _TOKEN.fullmatch(name):
        raise ValueError("should be NAME=VALUE (a header name, then the value the title sends)")
    if name.lower() in ("authorization", "host", "content-length", "transfer-encoding"):
        raise ValueError(f"{name} is the title's own header; choose a header of your own")
    return name, expected


def parse_networks(values: Sequence[str]) -> list[Network]:
    """CIDRs (or single addresses) as networks; ValueError naming the bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an address or a CIDR such as 10.0.0.0/8") from None
    return networks


def load_authorities(path: str) -> list[x509.Certificate]:
    """The CA certificates in a PEM file; ValueError saying why there are none."""
    try:
        with open(os.path.expanduser(path), "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"cannot be read ({e.strerror or e})") from None
    try:
        authorities = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError("holds no PEM certificate (-----BEGIN CERTIFICATE-----)") from None
    return authorities


def _issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _client_use_problem(leaf: x509.Certificate) -> str | None:
    try:
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if ExtendedKeyUsageOID.CLIENT_AUTH in usages or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE \
            in usages:
        return None
    return "client certificate not meant for client authentication (extended key usage)"


def certificate_problem(chain: Sequence[x509.Certificate],
                        authorities: Sequence[x509.Certificate],
                        now: datetime.datetime | None = None) -> str | None:
    """Why the client's certificate chain (leaf first, as TLS sends it) is not one an
    authority issued; None when it is. Intermediates must be CAs; every certificate on
    the path must be valid at `now`."""
    if not chain:
        return "no client certificate (TLS with a certificate is required)"
    now = now or datetime.datetime.now(datetime.UTC)
    current, spare = chain[0], list(chain[1:])
    if problem := _client_use_problem(current):
        return problem
    for _ in range(len(chain) + 1):
        if not current.not_valid_before_utc <= now <= current.not_valid_after_utc:
            return "client certificate chain outside its validity dates"
        authority = next((a for a in authorities if _issued(current, a)), None)
        if authority is not None:
            if not authority.not_valid_before_utc <= now <= authority.not_valid_after_utc:
                return "client certificate authority outside its validity dates"
            return None
        parent = next((c for c in spare if _is_ca(c) and _issued(current, c)), None)
        if parent is None:
            break
        spare.remove(parent)
        current = parent
    return "client certificate not issued by the trusted authority"


def _address(peer: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's address; an IPv4 client on a dual-stack socket as IPv4."""
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%")[0])
    except (ValueError, TypeError, IndexError):
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


class ClientAccess:
    """The proxy's own check of who may send it requests (see the module docstring)."""

    def __init__(self) -> None:
        self.header: tuple[str, str] | None = None
        self.networks: list[Network] = []
        self.authorities: list[x509.Certificate] = []
        self.tunnels: set[str] = set()  # client connections whose CONNECT passed

    def load(self, loader: Any) -> None:
        loader.add_option(
            "mpsd_client_header", str, "",
            "NAME=VALUE: a header every request from the title must carry (403 without); "
            "removed before forwarding. Authorization is left untouched.",
        )
        loader.add_option(
            "mpsd_allow_client", Sequence[str], [],
            "Client addresses or CIDRs that may use the proxy (403 for others); empty: any.",
        )
        loader.add_option(
            "mpsd_client_cert_ca", str, "",
            "PEM file of the CA(s) that issue the titles' TLS client certificates: every "
            "request must come over TLS with one (403 otherwise). Turns on "
            "request_client_cert.",
        )

    def configure(self, updated: set[str]) -> None:
        from mitmproxy import ctx

        if "mpsd_client_header" in updated:
            value = ctx.options.mpsd_client_header
            try:
                self.header = parse_client_header(value)
            except ValueError as e:
                raise exceptions.OptionsError(
                    "Cannot parse mpsd_client_header option: " + str(e)) from None
        if "mpsd_allow_client" in updated:
            try:
                self.networks = parse_networks(ctx.options.mpsd_allow_client)
            except ValueError as e:
                raise exceptions.OptionsError(f"Cannot parse mpsd_allow_client option: {e}") \
                    from None
        if "mpsd_client_cert_ca" in updated:
            self._configure_authorities(ctx.options)

    def _configure_authorities(self, options: Any) -> None:
        path = options.mpsd_client_cert_ca
        try:
            self.authorities = load_authorities(path) if path else []
        except ValueError as e:
            raise exceptions.OptionsError(f"Cannot use mpsd_client_cert_ca option {path}: {e}") \
                from None
        if self.authorities and not options.request_client_cert:
            options.update(request_client_cert=True)  # mitmproxy then asks; this addon judges

    def client_disconnected(self, client: Any) -> None:
        self.tunnels.discard(client.id)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if self._admit(flow):
            self.tunnels.add(flow.client_conn.id)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        if flow.client_conn.id in self.tunnels or self._admit(flow):
            self._admit_certificate(flow)

    def _admit_certificate(self, flow: http.HTTPFlow) -> None:
        """Refuse a request whose connection has no client certificate an authority in
        `mpsd_client_cert_ca` issued (checked per request: a CONNECT has none yet)."""
        if not self.authorities:
            return
        chain = [x509.load_pem_x509_certificate(c.to_pem())
                 for c in flow.client_conn.certificate_list]
        problem = certificate_problem(chain, self.authorities)
        if problem is not None:
            self._refuse(flow, problem)

    def _admit(self, flow: http.HTTPFlow) -> bool:
        """Whether the flow may go on; else answer it 403 and log one line."""
        if not self.header and not self.networks:
            return True
        problem = self._problem(flow)
        if problem is None:
            if self.header:
                flow.request.headers.pop(self.header[0], None)
            return True
        self._refuse(flow, problem)
        return False

    def _refuse(self, flow: http.HTTPFlow, problem: str) -> None:
        """Answer 403 (the catalog's row) and log one line naming who and why."""
        peer = flow.client_conn.peername
        who = f"{peer[0]}:{peer[1]}" if peer else "a client"
        line = model.terminal_safe(f"{flow.request.method} {flow.request.path}")[:200]
        logger.warning(f"Refused {who} (403, {problem}): {line}")
        # The table's row for failed authorization, as the catalog describes it.
        refused = faults.build("403.forbidden", message=f"Refused by mpsdproxy: {problem}.\n",
                               extra_headers=[("Connection", "close")])
        flow.response = flows.to_mitmproxy(refused, flow.request.http_version)

    def _problem(self, flow: http.HTTPFlow) -> str | None:
        if self.networks:
            address = _address(flow.client_conn.peername)
            if address is None or not any(address in n for n in self.networks):
                return "source address not in the allow list"
        if self.header:
            name, expected = self.header
            given = flow.request.headers.get(name, "")
            if not hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode()):
                return f"missing or wrong {name} header"
        return None
