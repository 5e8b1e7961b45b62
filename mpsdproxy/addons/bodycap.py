"""Bodies over the cap: streamed to the title, kept in part in the record.

mitmproxy streams a body larger than its `stream_large_bodies` option instead of
holding it in memory (`mpsdproxy run --body-cap`, 16m by default, sets it). When
the length is known up front, mitmproxy decides before the `responseheaders` hook,
and this part swaps the plain stream for a `flows.BodyTap`: the title still gets
every byte as it comes, and the record keeps the first 64 KiB and the whole
length. A body without a length that grows past the cap is switched to streaming
after every hook has run: its record can only say that it was streamed.
"""

from __future__ import annotations

from mitmproxy import http

from mpsdproxy.addons import common
from mpsdproxy.addons import flows

__all__ = ["LargeBodies"]


class LargeBodies:
    """Taps the streamed responses of session-directory flows (`flows.BodyTap`)."""

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None or response.stream is not True or common.mark(flow) is None:
            return
        response.stream = flows.BodyTap()
