"""One kept-alive HTTP/1.1 connection to the target, reopened when it breaks.

Header values go as the exact bytes the recording holds (`model.to_bytes`),
and the answer's are read back by the model's one rule, so a byte that is not
UTF-8 survives both ways.
"""

from __future__ import annotations

import http.client
import re
import ssl
from typing import NamedTuple

from mpsdproxy import encoding
from mpsdproxy import model
from mpsdproxy.resend.target import Target

__all__ = ["Client", "Reply", "answer_of", "tls_context"]


class Reply(NamedTuple):
    """An answer as http.client read it: its text is ISO-8859-1, one character a byte.
    `truncated` is set when `body` is only the start of it (over `model.MAX_HELD_BODY`)."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    truncated: model.Truncated | None = None

_FOLD = re.compile(r"\r?\n[ \t]*")


def _wire(text: str) -> bytes:
    """The bytes http.client read for a header value or reason: it decodes them as
    ISO-8859-1, one character per byte, so encoding them so gives the bytes back."""
    return text.encode("iso-8859-1", "replace")


def answer_of(reply: Reply) -> model.Response:
    """The answer as the domain sees it (as the recorder keeps it: Content-Encoding
    undone). ModelError for one no valid answer has (a status outside 100-599).
    Folded header lines are unfolded."""
    fields = [(_wire(k), _wire(_FOLD.sub(" ", v))) for k, v in reply.headers]
    headers = model.Headers.from_raw(fields)
    reason = model.from_bytes(_wire(reply.reason))
    if reply.truncated is not None:  # the start of the wire bytes: never decoded
        return model.Response(reply.status, reason, headers, reply.body,
                              truncated=reply.truncated)
    body = encoding.plain_body(reply.body, headers.get("content-encoding"))
    return model.Response(reply.status, reason, headers, body)


def _read_body(response: http.client.HTTPResponse) -> tuple[bytes, model.Truncated | None]:
    """The whole body, or over `model.MAX_HELD_BODY` bytes (as `mpsdproxy run` streams a
    body over its cap) its first `model.KEPT_OF_TRUNCATED` bytes, as they came, and what
    is known of its length: the caller closes the connection, the rest is never read."""
    data = response.read(model.MAX_HELD_BODY + 1)
    if len(data) <= model.MAX_HELD_BODY:
        return data, None
    length = response.getheader("Content-Length", "")
    size = int(length) if length.isdigit() else None
    head = data[:model.KEPT_OF_TRUNCATED]
    return head, model.Truncated(size, len(head), wire=True)


def tls_context(verify: bool) -> ssl.SSLContext:
    """TLS to the target: the system's trust, or none with `--insecure`."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Client:
    """One kept-alive connection to the target, reopened when it breaks."""

    def __init__(self, target: Target, timeout: float, verify: bool) -> None:
        self.target = target
        self.timeout = timeout
        self.verify = verify
        self.conn: http.client.HTTPConnection | None = None
        self.used = False

    def _open(self) -> http.client.HTTPConnection:
        if self.target.scheme == "https":
            return http.client.HTTPSConnection(
                self.target.host, self.target.port, timeout=self.timeout,
                context=tls_context(self.verify))
        return http.client.HTTPConnection(self.target.host, self.target.port,
                                          timeout=self.timeout)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
            self.used = False

    @property
    def local(self) -> str | None:
        """`ip:port` this side of the connection (the client of the new record)."""
        sock = self.conn.sock if self.conn is not None else None
        if sock is None:
            return None
        host, port = sock.getsockname()[:2]
        return f"{host}:{port}"

    def send(self, method: str, path: str, headers: list[tuple[str, str]],
             body: bytes) -> Reply:
        """Send one request and read its whole answer. A send that fails on
        a reused connection (the server closed it while idle) is retried once on a
        fresh one; a timeout never is (the target may have acted on it)."""
        reused = self.conn is not None and self.used
        try:
            return self._send_once(method, path, headers, body)
        except TimeoutError:
            self.close()
            raise
        except (OSError, http.client.HTTPException):
            self.close()
            if not reused:
                raise
        return self._send_once(method, path, headers, body)

    def _send_once(self, method: str, path: str, headers: list[tuple[str, str]],
                   body: bytes) -> Reply:
        if self.conn is None:
            self.conn = self._open()
        conn = self.conn
        conn.putrequest(method, self.target.base_path + path, skip_host=True,
                        skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, model.to_bytes(value))
        if body or method in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        response = conn.getresponse()
        data, truncated = _read_body(response)
        self.used = True
        if response.will_close or truncated is not None:
            self.close()
        return Reply(response.status, response.reason, list(response.getheaders()), data,
                     truncated)
