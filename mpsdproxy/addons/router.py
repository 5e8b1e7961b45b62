"""Router: decide which flows are session-directory traffic, and where they go.

In reverse mode every request is session-directory traffic; in the other
modes only requests to the intercept hosts are (by default the session
directory, matchmaking and the RTA websocket host `rta.xboxlive.com`). The router marks those flows
(see `common`), so every later mpsdproxy addon knows to act and everything
else passes by untouched. With `mpsd_upstream` set, marked requests go to that
server (the stand-in, a test environment) instead of the real host, their
bytes unchanged: the title signs method, path, Authorization and body
(protocol notes §2.3), so the router only changes where a request goes, never
what it says.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from collections.abc import Sequence
from urllib.parse import urlsplit

from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy import mode_specs

from mpsdproxy import resources
from mpsdproxy.addons import common

logger = logging.getLogger(__name__)

#: The session directory and matchmaking hosts (protocol notes §1.1), and the
#: Real-Time Activity host whose websocket carries the shoulder taps that make a
#: title re-read its session (§3.5): without it the taps pass by undecrypted.
DEFAULT_INTERCEPT_HOSTS: tuple[str, ...] = (*resources.MPSD_HOSTS, *resources.RTA_HOSTS)


def allow_patterns(hosts: Iterable[str]) -> list[str]:
    """mitmproxy `allow_hosts` regexes for the intercept hosts.

    Every other host is then passed through as raw TCP: not decrypted, not
    recorded, not touched.
    """
    return [rf"^{re.escape(h.lower())}(:\d+)?$" for h in hosts]


def parse_upstream(spec: str) -> tuple[str, str, int]:
    """`http://127.0.0.1:8081` -> (scheme, host, port); ValueError when it is not a URL."""
    parts = urlsplit(spec)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected http(s)://host[:port], not {spec!r}")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"the upstream is a server, not a path: {spec!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, parts.hostname, port


class Router:
    def __init__(self) -> None:
        self.hosts: frozenset[str] = frozenset(DEFAULT_INTERCEPT_HOSTS)
        self.upstream: tuple[str, str, int] | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "mpsd_intercept_hosts", Sequence[str], list(DEFAULT_INTERCEPT_HOSTS),
            "Hosts whose traffic is session-directory traffic (classified, recorded, "
            "open to faults and replay), the RTA websocket host among them by default. "
            "Every other host passes through untouched. "
            "Ignored in reverse mode, where every request is session-directory traffic.",
        )
        loader.add_option(
            "mpsd_upstream", str, "",
            "Send session-directory requests to this server (http://host:port) instead of "
            "the host they name, e.g. the local stand-in. The request bytes stay unchanged.",
        )

    def configure(self, updated: set[str]) -> None:
        if "mpsd_intercept_hosts" in updated:
            self.hosts = frozenset(h.lower() for h in ctx.options.mpsd_intercept_hosts)
        if "mpsd_upstream" in updated:
            spec = ctx.options.mpsd_upstream
            try:
                self.upstream = parse_upstream(spec) if spec else None
            except ValueError as e:
                raise exceptions.OptionsError(
                    f"Cannot parse mpsd_upstream option {spec}: {e}"
                ) from e

    def is_session_directory(self, flow: http.HTTPFlow) -> bool:
        if isinstance(flow.client_conn.proxy_mode, mode_specs.ReverseMode):
            return True
        return self.is_intercept_host(flow.request)

    def is_intercept_host(self, request: http.Request) -> bool:
        """Whether the request names an intercept host (outside reverse mode)."""
        if request.host.lower() in self.hosts:
            return True
        host_header = (request.host_header or "").lower().split(":")[0]
        return host_header in self.hosts

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        reverse = isinstance(flow.client_conn.proxy_mode, mode_specs.ReverseMode)
        if not reverse and not self.is_intercept_host(flow.request):
            return
        mark = flow.metadata[common.KEY] = {
            "url": flow.request.url,
            "resource": resources.parse(flow.request.path).to_dict(),
            "provenance": dict(common.FORWARDED),
        }
        if self.upstream and not reverse:
            mark["upstream"] = True
            self.redirect(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        """Once the upstream has answered, point the flow back at the host the title
        asked for, so mitmweb and flow files show the title's own URL."""
        mark = common.mark(flow)
        if mark is None or not mark.pop("upstream", False):
            return
        original = urlsplit(mark["url"])
        request = flow.request
        request.data.scheme = original.scheme.encode()
        request.data.host = original.hostname or request.data.host
        request.data.port = original.port or (443 if original.scheme == "https" else 80)

    def error(self, flow: http.HTTPFlow) -> None:
        self.response(flow)

    def redirect(self, flow: http.HTTPFlow) -> None:
        """Point the request at the upstream without touching its Host header or bytes."""
        assert self.upstream is not None
        scheme, host, port = self.upstream
        flow.request.data.scheme = scheme.encode()
        flow.request.data.host = host
        flow.request.data.port = port
