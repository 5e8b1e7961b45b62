"""What the addons share about a flow: the `mpsd` mark in flow.metadata.

The router marks every session-directory flow at request time; a flow without
the mark is someone else's traffic and every mpsdproxy addon leaves it alone.
The mark is plain data (mitmproxy serialises flow metadata when flows are
saved), filled in along the way:

    flow.metadata["mpsd"] = {
        "url": "https://...",       # the URL the title asked for, before any redirect
        "resource": {...},          # Resource.to_dict(), set by the router
        "provenance": {...},        # {"source": "forwarded"} unless an addon answered
        "classification": {...},    # set by the classifier once the flow ends
        "seq": 12,                  # set by the recorder once the record is written
    }

Provenance says who answered:
- `{"source": "forwarded"}`: the service (or `--upstream`) did; with `replay` and `note`
  when an unmatched or exhausted replay request was forwarded;
- `{"source": "injected", "rule", "scenario", "seed", "phase": "request"|"response"}`;
- `{"source": "replayed", "record": N, "file", "repeat"?}`: a recorded answer;
- `{"source": "emulated"}`: the built-in stand-in, for a request the replay did not hold;
- `{"source": "replay-error"}`: the replay refused an unmatched or exhausted request.
"""

from __future__ import annotations

import functools
from typing import Any

from mitmproxy import http

from mpsdproxy.resources import Resource

KEY = "mpsd"

FORWARDED: dict[str, Any] = {"source": "forwarded"}


def mark(flow: http.HTTPFlow) -> dict[str, Any] | None:
    """The flow's mpsd mark, or None when the flow is not session-directory traffic."""
    return flow.metadata.get(KEY)


def resource(flow: http.HTTPFlow) -> Resource | None:
    """The MPSD resource a marked flow names (None for unmarked flows). A title asks
    for the same few resources over and over: each is worked out once (a Resource is
    immutable, so one can be shared)."""
    info = flow.metadata.get(KEY)
    if info is None:
        return None
    data = info["resource"]
    try:
        return _resource_of(data.get("kind"), data.get("scid"), data.get("template"),
                            data.get("name"), data.get("element"))
    except TypeError:  # unhashable junk: no caching
        return Resource.from_dict(data)


@functools.lru_cache(maxsize=4096)
def _resource_of(kind: Any, scid: Any, template: Any, name: Any, element: Any) -> Resource:
    return Resource.from_dict(
        {"kind": kind, "scid": scid, "template": template, "name": name, "element": element})


def set_provenance(flow: http.HTTPFlow, **provenance: Any) -> None:
    """Say who answered a marked flow (an injected rule, a replayed record)."""
    info = flow.metadata.get(KEY)
    if info is not None:
        info["provenance"] = provenance


def provenance(flow: http.HTTPFlow) -> dict[str, Any]:
    info = flow.metadata.get(KEY) or {}
    return info.get("provenance", FORWARDED)


def header(fields: tuple[tuple[bytes, bytes], ...], name: bytes) -> str | None:
    """`Headers.get(name)` read straight from the raw fields (`name` in lower case):
    the values of every field of that name, folded with ", "; None when there is none."""
    found: bytes | None = None
    more: list[bytes] | None = None
    for key, value in fields:
        if key.lower() == name:
            if found is None:
                found = value
            elif more is None:
                more = [found, value]
            else:
                more.append(value)
    if more is not None:
        return ", ".join(v.decode("utf-8", "surrogateescape") for v in more)
    return None if found is None else found.decode("utf-8", "surrogateescape")


def content(message: http.Message) -> bytes | None:
    """`message.get_content(strict=False)`, without its header lookup when the body
    carries no Content-Encoding (the usual case): then it is the raw body."""
    raw = message.raw_content
    if raw is None:
        return None
    if header(message.headers.fields, b"content-encoding"):
        return message.get_content(strict=False)
    return raw
