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

__all__ = ["write_flows", "read_flows", "FORMAT", "FORMATS"]


def write_flows(exchanges: Iterable[model.Exchange], fo: IO[bytes],
                skipped: list[str] | None = None) -> int:
    """Write exchanges as a flow file; the number written. An exchange without an
    absolute URL is left out and noted in `skipped`."""
    writer = mio.FlowWriter(fo)
    count = 0
    for exchange in exchanges:
        try:
            flow = flows.flow_of(exchange, classify.classify(exchange).to_dict())
        except interchange.UNWRITABLE as e:
            interchange.skip_record(skipped, exchange.seq, e)
            continue
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


def read_flows(fo: IO[bytes], provenance: Mapping[str, Any] | None = None,
               skipped: list[str] | None = None) -> Iterator[model.Exchange]:
    """Exchanges of the HTTP flows of a flow file; other flows (TCP, DNS, ...) and
    CONNECT requests are noted in `skipped`. `provenance` is given to flows that
    carry none (a plain `mitmdump -w` capture).

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
    except exceptions.FlowReadException as e:
        if not number:
            raise ValueError(f"not a mitmproxy flow file: {e}") from None
        notes.append(f"after flow {number}: the rest of the file is unreadable ({e})")


def _looks_like(head: bytes) -> bool:
    return head[:1].isdigit()  # a tnetstring starts with its length


FORMAT = interchange.Format(
    "mitm", (".mitm", ".flows", ".flow", ".dump"), _looks_like, read_flows,
    lambda exchanges, fo, skipped, total: write_flows(exchanges, fo, skipped))

#: Every interchange format: the package's own and mitmproxy's flow files.
FORMATS: dict[str, interchange.Format] = dict(
    sorted({**interchange.FORMATS, "mitm": FORMAT}.items()))
