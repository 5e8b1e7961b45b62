"""Who may use the proxy: where it may listen, and the title's own credential check.

Two halves. `listen_points` and `remote_points` read the proxy's listening addresses
as mitmproxy will bind them (every mode, `--listen-host`, `@HOST:PORT`, `--set`), so
`run` can refuse anything beyond loopback unless the user said `--allow-remote`.

`ClientAccess` is the check itself. mitmproxy's `proxyauth` is useless in reverse
mode for a title: it reads `Authorization` and strips it, so every XBL request would
reach the service without its token (401). This addon checks a header of its own
(`mpsd_client_header`, "NAME=VALUE": required from the title, removed before
forwarding, `Authorization` untouched) and the client's source address
(`mpsd_allow_client`, CIDRs). A request that fails either gets 403 from the proxy,
never reaches the chain (so it is not recorded) and leaves one line in the log. In
regular and upstream mode the check is made on the CONNECT (and on plain-HTTP proxy
requests); requests inside an accepted tunnel are not asked again.

It is a top-level mitmproxy addon, not part of `MpsdChain`: it needs the
`requestheaders` and `http_connect` hooks, before any request body is read.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy.proxy import mode_specs

from mpsdproxy import faults
from mpsdproxy import model
from mpsdproxy.addons import flows

__all__ = ["ClientAccess", "ListenPoint", "is_loopback", "listen_points", "parse_client_header",
           "parse_networks", "remote_points"]

logger = logging.getLogger(__name__)

#: An HTTP header name (RFC 9110 token).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

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

    def client_disconnected(self, client: Any) -> None:
        self.tunnels.discard(client.id)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if self._admit(flow):
            self.tunnels.add(flow.client_conn.id)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.client_conn.id in self.tunnels:
            return
        self._admit(flow)

    def _admit(self, flow: http.HTTPFlow) -> bool:
        """Whether the flow may go on; else answer it 403 and log one line."""
        if not self.header and not self.networks:
            return True
        problem = self._problem(flow)
        if problem is None:
            if self.header:
                flow.request.headers.pop(self.header[0], None)
            return True
        peer = flow.client_conn.peername
        who = f"{peer[0]}:{peer[1]}" if peer else "a client"
        line = model.printable(f"{flow.request.method} {flow.request.path}")[:200]
        logger.warning(f"Refused {who} (403, {problem}): {line}")
        # The table's row for failed authorization, as the catalog describes it.
        refused = faults.build("403.forbidden", message=f"Refused by mpsdproxy: {problem}.\n",
                               extra_headers=[("Connection", "close")])
        flow.response = flows.to_mitmproxy(refused, flow.request.http_version)
        return False

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
