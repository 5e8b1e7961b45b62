"""Build responses that conform to a row of the status table.

`build` turns a catalog entry into the status, headers and body the table
describes for it: its content type, its body kind (the whole session, a
message, or nothing) and its required headers (Retry-After, ETag). The
stand-in answers with it and the fault injector injects with it, so an
injected 503 and an emulated 503 are the same bytes and both classify as
conformant.
"""

from __future__ import annotations

import json
from typing import Any

from mpsdproxy import catalog
from mpsdproxy import fgrl
from mpsdproxy import model
from mpsdproxy.catalog import BodyKind

__all__ = ["build", "encode_json", "DEFAULT_RETRY_AFTER"]

#: Whole seconds: the client library parses Retry-After as an integer only
#: (protocol notes §5.3), so it is never a date or a fraction here.
DEFAULT_RETRY_AFTER = 5


def encode_json(value: Any) -> bytes:
    """The compact JSON form the service sends (and recordings keep as JSON)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _default_message(entry: catalog.Entry) -> bytes:
    if entry.body is BodyKind.FGRL:
        refused = fgrl.Decision(False, DEFAULT_RETRY_AFTER, 31, 30, fgrl.BURST_SECONDS)
        return encode_json(fgrl.message(refused))
    return entry.meaning.encode()


def _whole_seconds(retry_after: float | None) -> int:
    """The Retry-After value: 0 is a real answer ("retry now"), only None means default."""
    if retry_after is None:
        return DEFAULT_RETRY_AFTER
    seconds = int(retry_after)
    if seconds < 0:
        raise ValueError(f"retry_after should be whole seconds >= 0, not {retry_after!r}")
    return seconds


def build(
    entry: catalog.Entry | str,
    *,
    session: dict[str, Any] | None = None,
    etag: str | None = None,
    message: str | bytes | None = None,
    retry_after: int | None = None,
    extra_headers: list[tuple[str, str]] | None = None,
) -> model.Response:
    """A response exactly as the table describes `entry`.

    `session` is the whole session document for rows that return one, and
    `etag` its current (quoted) ETag; `message` replaces the default message
    text; `retry_after` replaces DEFAULT_RETRY_AFTER where the row requires
    the header. Raises ValueError when a session row gets no session, or
    retry_after is negative.
    """
    if isinstance(entry, str):
        entry = catalog.get(entry)
    headers: list[tuple[str, str]] = []
    body = b""
    if entry.body is BodyKind.SESSION:
        if session is None:
            raise ValueError(f"{entry.id} returns the whole session, but none was given")
        body = encode_json(session)
    elif entry.body in (BodyKind.MESSAGE, BodyKind.FGRL):
        if message is None:
            body = _default_message(entry)
        else:
            body = message.encode() if isinstance(message, str) else message
    if entry.content_type is not None:
        # The table's own value, as the service sends it (protocol notes §2.2: the public
        # capture's every MPSD answer says `application/json`, without a charset).
        headers.append(("Content-Type", entry.content_type))
    for name in entry.required_headers:
        if name == "Retry-After":
            headers.append(("Retry-After", str(_whole_seconds(retry_after))))
        elif name == "ETag":
            if etag is None:
                raise ValueError(f"{entry.id} must carry the session's ETag, but none was given")
            headers.append(("ETag", etag))
    if entry.returns_session and etag is not None and not any(k == "ETag" for k, _ in headers):
        headers.append(("ETag", etag))
    if entry.status >= 400 and entry.returns_session:
        headers.append(("Cache-Control", "no-cache, no-store"))
    headers.extend(extra_headers or ())
    return model.Response(entry.status, entry.reason, headers, body)
