"""Making a forced 412 real on a local stand-in: another client changes the session there.

When a flow goes to a server on this machine (`mpsdproxy emulate` behind
`--upstream` or reverse mode), the forced 412 need not pretend: the injector
asks the stand-in, through its control switch `POST /_emulator/change`, to
change the session as another console would. The 412 then carries the
stand-in's own newer session and ETag, so the title's retry with that ETag
succeeds and a resend of the old one draws the stand-in's real 412. A server
that is not a stand-in (no such switch) is left alone, and the proxy keeps
the newer session consistent itself (`mpsdproxy.newer`). Only loopback
servers are asked: the real service is never sent anything the title did not
send.
"""

from __future__ import annotations

import asyncio
import json
from http import client as httpclient

from mitmproxy import http

from mpsdproxy import model
from mpsdproxy.addons import access

__all__ = ["TIMEOUT", "is_local", "change"]

#: Seconds the stand-in may take to answer the switch.
TIMEOUT = 2.0


def is_local(flow: http.HTTPFlow) -> bool:
    """Whether the flow goes to a server on this machine (where a stand-in may run)."""
    return access.is_loopback(flow.request.host)


def _post(host: str, port: int, session_path: str) -> model.Response:
    conn = httpclient.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        body = json.dumps({"session": session_path}).encode()
        conn.request("POST", "/_emulator/change", body=body,
                     headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        data = answer.read()
        pairs = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.getheaders()]
        return model.Response(answer.status, "", model.Headers.from_raw(pairs), data)
    finally:
        conn.close()


async def change(flow: http.HTTPFlow, session_path: str) -> model.Response | None:
    """Ask the local server the flow goes to to change the session, as another client
    would; its answer (the session and new ETag), or None when it is no stand-in or
    failed."""
    if flow.request.scheme != "http" or not is_local(flow):
        return None
    try:
        answer = await asyncio.to_thread(_post, flow.request.host, flow.request.port,
                                         session_path)
    except (OSError, httpclient.HTTPException, model.ModelError):
        return None
    return answer if answer.status == 200 else None
