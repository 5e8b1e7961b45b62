"""mitmproxy flow files (`mitmdump -w`, `mitmweb -r`), read and written by mitmproxy itself.

The one interchange format that needs mitmproxy, so it lives with the addons:
`FORMATS` here is every format, this one included, for the commands to hand to
`mpsdproxy.interchange` (which never imports mitmproxy itself). Exchanges
become flows and back through `flows.flow_of` and `flows.exchange_of`, the
same translation the proxy uses, so a flow file keeps header and URL bytes
exactly (a byte that is not UTF-8 included), bodies as the wire carried them,
and the `mpsd` mark (seq, provenance, classification) mitmweb shows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from typing import IO
from typing import Any

from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy import io as mio

from mpsdproxy import classify
from mpsdproxy import interchange
from mpsdproxy import model
from mpsdproxy.addons import flows
from mpsdproxy.addons.common import KEY
from mpsdproxy.recording.messages import WebsocketMessage

__all__ = ["write_flows", "read_flows", "FORMAT", "FORMATS"]


def write_flows(items: Iterable[model.Exchange | WebsocketMessage], fo: IO[bytes],
                skipped: list[str] | None = None,
                gathered: Mapping[int, list[WebsocketMessage]] | None = None) -> int:
    """Write exchanges as a flow file; the number written. A websocket handshake's flow
    holds its messages (`gathered`: handshake seq -> messages), as mitmproxy keeps them.
    An exchange without an absolute URL is left out and noted in `skipped`, as is a
    message with no handshake in the file or no place in a flow (an answering close)."""
    gathered = gathered or {}
    placed = {m.seq for sent in gathered.values() for m in sent}
    writer = mio.FlowWriter(fo)
    count = 0
    for item in items:
        if isinstance(item, WebsocketMessage):
            if item.seq is None or item.seq not in placed:
                interchange.skip_record(skipped, item.seq, "a websocket message whose "
                                        "handshake is not in the file")
            continue
        sent = gathered.get(item.seq, []) if item.seq is not None else []
        try:
            flow = flows.flow_of(item, classify.classify(item).to_dict())
        except interchange.UNWRITABLE as e:
            for message in (item, *sent):
                interchange.skip_record(skipped, message.seq, e)
            continue
        if sent:
            flow.websocket, left_out = flows.websocket_data_of(sent)
            for message in left_out:
                interchange.skip_record(skipped, message.seq, f"a {message.opcode} frame: "
                                        "a mitmproxy flow keeps whole messages and one close")
        writer.add(flow)
        count += 1
    return count


def _exchange(flow: http.HTTPFlow, provenance: Mapping[str, Any] | None) -> model.Exchange:
    """The flow's exchange; `provenance` stands in when the flow has no mark of its own."""
    exchange = flows.exchange_of(flow)
    mark = flow.metadata.get(KEY)
    if provenance is not None and not (isinstance(mark, Mapping) and mark.get("provenance")):
        exchange = dataclasses.replace(exchange, provenance=provenance)
    return exchange


def _messages(flow: http.HTTPFlow, provenance: Mapping[str, Any] | None
              ) -> Iterator[WebsocketMessage]:
    """A websocket flow's messages and close, as the recorder writes them live (a message
    an addon dropped as a note of one the peer never got)."""
    assert flow.websocket is not None
    marked = isinstance(flow.metadata.get(KEY), Mapping)
    for index, sent in enumerate(flow.websocket.messages):
        message = flows.websocket_message_of(flow, index)
        if provenance is not None and not marked and not sent.injected:
            message = dataclasses.replace(message, provenance=provenance)
        yield dataclasses.replace(message, dropped=True) if sent.dropped else message
    close = flows.websocket_close_of(flow)
    if close is not None:
        yield close if marked or provenance is None else dataclasses.replace(
            close, provenance=provenance)


def read_flows(fo: IO[bytes], provenance: Mapping[str, Any] | None = None,
               skipped: list[str] | None = None
               ) -> Iterator[model.Exchange | WebsocketMessage]:
    """Exchanges of the HTTP flows of a flow file, each websocket's followed by its
    messages; other flows (TCP, DNS, ...) and CONNECT requests are noted in `skipped`.
    `provenance` is given to flows that carry none (a plain `mitmdump -w` capture).

    Raises ValueError when the file is not a flow file. A file cut short (what a
    killed mitmdump leaves) gives the flows before the cut.
    """
    notes: list[str] = skipped if skipped is not None else []
    number = 0
    try:
        for number, item in enumerate(mio.FlowReader(fo).stream(), start=1):
            if not isinstance(item, http.HTTPFlow):
                notes.append(f"flow {number}: a {item.type} flow, not HTTP")
            elif item.request.method.upper() == "CONNECT":
                notes.append(f"flow {number}: CONNECT")
            else:
                yield _exchange(item, provenance)
                if item.websocket is not None:
                    yield from _messages(item, provenance)
    except exceptions.FlowReadException as e:
        if not number:
            raise ValueError(f"not a mitmproxy flow file: {e}") from None
        notes.append(f"after flow {number}: the rest of the file is unreadable ({e})")


def _looks_like(head: bytes) -> bool:
    return head[:1].isdigit()  # a tnetstring starts with its length


FORMAT = interchange.Format(
    "mitm", (".mitm", ".flows", ".flow", ".dump"), _looks_like, read_flows,
    lambda items, fo, skipped, total, gathered=None: write_flows(items, fo, skipped, gathered),
    messages=True, gathers=True)

#: Every interchange format: the package's own and mitmproxy's flow files.
FORMATS: dict[str, interchange.Format] = dict(
    sorted({**interchange.FORMATS, "mitm": FORMAT}.items()))
