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

from typing import Any

from mitmproxy import http

from mpsdproxy.resources import Resource

KEY = "mpsd"

FORWARDED: dict[str, Any] = {"source": "forwarded"}


def mark(flow: http.HTTPFlow) -> dict[str, Any] | None:
    """The flow's mpsd mark, or None when the flow is not session-directory traffic."""
    return flow.metadata.get(KEY)


def resource(flow: http.HTTPFlow) -> Resource | None:
    """The MPSD resource a marked flow names (None for unmarked flows)."""
    info = flow.metadata.get(KEY)
    if info is None:
        return None
    return Resource.from_dict(info.get("resource") or {})


def set_provenance(flow: http.HTTPFlow, **provenance: Any) -> None:
    """Say who answered a marked flow (an injected rule, a replayed record)."""
    info = flow.metadata.get(KEY)
    if info is not None:
        info["provenance"] = provenance


def provenance(flow: http.HTTPFlow) -> dict[str, Any]:
    info = flow.metadata.get(KEY) or {}
    return info.get("provenance") or dict(FORWARDED)


def provenance_text(provenance: dict[str, Any]) -> str:
    """Who answered, for people (mitmweb's comment column, the live log)."""
    source = provenance.get("source")
    if source == "injected":
        return f"injected by rule {provenance.get('rule')}"
    if source == "replayed":
        return f"replayed from record {provenance.get('record')}"
    if source == "emulated":
        return "answered by the stand-in"
    if source == "replay-error":
        return "refused by the replay"
    return "from the service"
