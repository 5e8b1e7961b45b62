"""Recorder: one JSON line per session-directory exchange, flushed as it completes.

Only marked flows are written, redacted before anything touches disk. No list
of flows is kept: memory stays flat however long the playtest runs. If a line
cannot be written the proxy stops loudly rather than let traffic through
unrecorded (as mitmproxy's own `save` addon does).
"""

from __future__ import annotations

import logging
import sys
import weakref
from collections.abc import Sequence
from typing import Any

from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy.addonmanager import Loader

from mpsdproxy import recording
from mpsdproxy.addons import common
from mpsdproxy.addons.classifier import classify_flow
from mpsdproxy.addons.classifier import complete_response

logger = logging.getLogger(__name__)


def _client(flow: http.HTTPFlow) -> str | None:
    peer = flow.client_conn.peername
    if not peer:
        return None
    return f"{peer[0]}:{peer[1]}"


#: The last record built, a weak reference to its flow, the flow's state then, and
#: whether the record has the response's body. The addons after the recorder (live
#: verdicts) ask for the same flow's record within the same hook: one slot lets them
#: reuse it instead of encoding the bodies a second time.
_last: tuple[weakref.ref[http.HTTPFlow], tuple[Any, ...], dict[str, Any], bool] | None = None


def _state(flow: http.HTTPFlow) -> tuple[Any, ...]:
    """What a record depends on that can still change for the same flow object."""
    response = flow.response
    return (response.timestamp_end if response else None,
            response.status_code if response else None,
            flow.error.msg if flow.error else None)


def flow_record(flow: http.HTTPFlow, redactor: recording.Redactor,
                response_body: bool = True) -> dict[str, Any]:
    """The recording record for a finished, marked flow (without its seq).

    The one place that turns a flow into a record: the recorder writes it and
    the live verdicts read it, so both always see the same exchange. With
    `response_body=False` the response's body may be left out (None): the
    verdicts never read it, and without a recorder decoding and checking it
    would be the costliest part of their record.
    """
    global _last
    state = _state(flow)
    last = _last
    if (last is not None and last[0]() is flow and last[1] == state
            and (last[3] or not response_body)):
        return last[2]
    record = _build_record(flow, redactor, response_body)
    _last = (weakref.ref(flow), state, record, response_body)
    return record


def _build_record(flow: http.HTTPFlow, redactor: recording.Redactor,
                  response_body: bool = True) -> dict[str, Any]:
    info = common.mark(flow) or {}
    request = flow.request
    response = complete_response(flow)
    start = request.timestamp_start
    end = (response.timestamp_end if response else None) or (
        flow.error.timestamp if flow.error else None
    )
    classification = info.get("classification") or classify_flow(flow).to_dict()
    record: dict[str, Any] = {
        "start": recording.timestamp(start),
        "end": recording.timestamp(end),
        "duration_ms": round((end - start) * 1000, 3) if end and start else None,
        "client": _client(flow),
        "request": {
            "method": request.method,
            "url": info.get("url") or request.url,
            "headers": redactor.headers(request.headers),
            "body": recording.encode_body(common.content(request)),
        },
        "response": None,
        "error": flow.error.msg if flow.error else None,
        "resource": info.get("resource"),
        "classification": classification,
        "provenance": info.get("provenance", common.FORWARDED),
    }
    if response is not None:
        record["response"] = {
            "status": response.status_code,
            "reason": response.reason,
            "headers": redactor.headers(response.headers),
            "body": recording.encode_body(common.content(response)) if response_body else None,
        }
    return record


class Recorder:
    def __init__(self) -> None:
        self.writer: recording.Writer | None = None
        self.redactor = recording.Redactor()

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "mpsd_record", str, "",
            "Append every session-directory exchange to this JSON Lines file, one exchange "
            "a line, flushed as it completes. Secrets are redacted first.",
        )
        loader.add_option(
            "mpsd_redact", Sequence[str], [],
            "More header names to redact in recordings, on top of Authorization, "
            "Signature, Cookie and Set-Cookie.",
        )
        loader.add_option(
            "mpsd_no_redact", bool, False,
            "Write secrets (XBL3.0 tokens, signatures, cookies) to recordings unredacted. "
            "Only for private captures: such a file must never be shared or committed.",
        )

    def configure(self, updated: set[str]) -> None:
        if {"mpsd_redact", "mpsd_no_redact"} & updated:
            names = (*recording.DEFAULT_REDACT, *ctx.options.mpsd_redact)
            self.redactor = recording.Redactor(names, enabled=not ctx.options.mpsd_no_redact)
            if ctx.options.mpsd_no_redact:
                logger.warning(
                    "mpsd_no_redact is on: tokens and signatures will be written to the "
                    "recording in clear text. Do not share or commit it."
                )
        if "mpsd_record" in updated:
            self._open(ctx.options.mpsd_record)

    def _open(self, path: str) -> None:
        self.done()
        if not path:
            return
        try:
            self.writer = recording.Writer(path)
        except OSError as e:
            raise exceptions.OptionsError(f"Cannot open mpsd_record file {path}: {e}") from e
        logger.info(f"Recording session-directory exchanges to {path}")

    def response(self, flow: http.HTTPFlow) -> None:
        self._write(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._write(flow)

    def _write(self, flow: http.HTTPFlow) -> None:
        info = common.mark(flow)
        if info is None or "seq" in info:
            return
        if self.writer is None:
            return
        try:
            info["seq"] = self.writer.write(flow_record(flow, self.redactor))
        except OSError as e:
            # Traffic must never flow unrecorded: stop loudly, as mitmproxy's save does.
            sys.stderr.write(f"Error while writing to {self.writer.path}: {e}\n")
            sys.exit(1)

    def done(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
