"""Where re-sent requests go, and how a path is put on a request line."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from mpsdproxy import model

__all__ = ["Target", "parse_target", "request_target"]


@dataclass(frozen=True)
class Target:
    """Where requests go: `http(s)://host[:port][/base-path]`."""

    scheme: str
    host: str
    port: int
    base_path: str = ""

    @property
    def netloc(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.netloc}"

    def url(self, path: str) -> str:
        return f"{self.origin}{self.base_path}{path}"


def parse_target(url: str) -> Target:
    """`http://127.0.0.1:8081` -> Target; ValueError when it is not an http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected http(s)://host[:port][/path], not {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"the target takes no query or fragment: {url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as e:
        raise ValueError(f"bad port in {url!r}: {e}") from None
    return Target(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))


_NOT_ON_A_REQUEST_LINE = re.compile(rb"[\x00-\x20\x7f-\xff]")


def request_target(path: str) -> str:
    """A path as a request line carries it: printable ASCII, every other byte
    percent-encoded (a recorded 0xE9 goes as `%E9`); `%` already there is kept."""
    raw = model.to_bytes(path)
    if not _NOT_ON_A_REQUEST_LINE.search(raw):
        return path
    return _NOT_ON_A_REQUEST_LINE.sub(lambda m: b"%%%02X" % m[0][0], raw).decode("ascii")
