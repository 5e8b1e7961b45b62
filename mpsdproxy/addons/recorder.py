"""Recorder: one JSON line per session-directory exchange, flushed as it completes.

Only marked flows are written, redacted before anything touches disk. No list
of flows is kept: memory stays flat however long the playtest runs. Every
exchange gets a line and the next sequence number whatever its bytes (the
recording codec encodes anything); only when a line cannot be written does the
proxy stop, loudly, rather than let traffic through unrecorded (as mitmproxy's
own `save` addon does). Nothing is remembered between flows: each record is
built from its flow with the redactor of that moment.

A websocket on an intercepted host (the RTA connection, `rta.xboxlive.com/connect`)
is recorded too: its 101 handshake as an exchange, then every message as a record
of its own (`recording.messages`), written as it passes the proxy, so the taps sit
in order with the HTTP exchanges around them, and its close as a `close` record.
A message a fault dropped never reached the title: it is recorded only as a note,
the frame with `"dropped": true` and the fault's provenance (`recording.messages`),
which no reader takes for a delivered message; one a fault sent says so in its
provenance, with the rule it noted (`flows.message_provenance`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy.addonmanager import Loader
from mitmproxy.utils import human

from mpsdproxy import classify
from mpsdproxy import recording
from mpsdproxy import safefiles
from mpsdproxy.addons import common
from mpsdproxy.addons import flows
from mpsdproxy.recording import messages

logger = logging.getLogger(__name__)

class Recorder:
    def __init__(self) -> None:
        self.writer: recording.Writer | None = None
        self.redactor = recording.Redactor()
        #: Response bodies over this many bytes (mitmproxy's `stream_large_bodies`, which
        #: `run --body-cap` sets) are recorded in part, marked truncated.
        self.body_cap: int | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "mpsd_record", str, "",
            "Append every session-directory exchange to this JSON Lines file, one exchange "
            "a line, flushed as it completes. Secrets are redacted first.",
        )
        loader.add_option(
            "mpsd_redact", Sequence[str], [],
            "More header names to redact in recordings, on top of Authorization, "
            "Proxy-Authorization, Signature, Cookie, Set-Cookie, X-AuthXToken, X-Tickets, "
            "X-Aad-Token and any header whose name holds token, ticket or proof.",
        )
        loader.add_option(
            "mpsd_tag", Sequence[str], [],
            "Run metadata KEY=VALUE (repeatable, e.g. build=1234) written into the "
            "recording's header, which the fleet groups runs by.",
        )
        loader.add_option(
            "mpsd_no_redact", bool, False,
            "Write secrets (XBL3.0 tokens, signatures, cookies) to recordings unredacted. "
            "Only for private captures: such a file must never be shared or committed.",
        )

    def configure(self, updated: set[str]) -> None:
        if "stream_large_bodies" in updated:
            self.body_cap = human.parse_size(ctx.options.stream_large_bodies)
        if {"mpsd_redact", "mpsd_no_redact"} & updated:
            names = (*recording.DEFAULT_REDACT, *ctx.options.mpsd_redact)
            self.redactor = recording.Redactor(names, enabled=not ctx.options.mpsd_no_redact)
            if ctx.options.mpsd_no_redact:
                logger.warning(
                    "mpsd_no_redact is on: tokens and signatures will be written to the "
                    "recording in clear text. Do not share or commit it."
                )
        if {"mpsd_record", "mpsd_tag"} & updated:
            self._open(ctx.options.mpsd_record)

    def _open(self, path: str) -> None:
        self.done()
        if not path:
            return
        try:
            # A FIFO or a device would hang the open, or take records nothing can read back
            # (`mitmdump -s` users have no FileGuard in front of this).
            safefiles.refuse_not_regular(path, "recording")
            self.writer = recording.Writer(path, recording.parse_tags(ctx.options.mpsd_tag))
        except safefiles.BadFile as e:
            raise exceptions.OptionsError(f"Cannot open mpsd_record file {path}: {e}") from e
        except (OSError, ValueError) as e:  # ValueError: a bad mpsd_tag
            raise exceptions.OptionsError(f"Cannot open mpsd_record file {path}: {e}") from e
        logger.info(f"Recording session-directory exchanges to {path}")

    def response(self, flow: http.HTTPFlow) -> None:
        self._write(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._write(flow)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        if common.mark(flow) is None or self.writer is None or flow.websocket is None:
            return
        if not flow.websocket.messages:
            return
        if flow.websocket.messages[-1].dropped:  # the title never got it: at most a note
            note = flow.metadata.get(flows.FAULT_NOTE)
            if isinstance(note, dict) and note.get("message") == len(flow.websocket.messages) - 1:
                self._append(messages.to_record(
                    replace(flows.websocket_message_of(flow), dropped=True), self.redactor))
            return
        info = common.mark(flow)
        seq = self._append(messages.to_record(flows.websocket_message_of(flow), self.redactor))
        if info is not None:
            info["message_seq"] = seq  # the live verdicts name the record as written

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        if common.mark(flow) is None or self.writer is None:
            return
        close = flows.websocket_close_of(flow)
        if close is not None:
            self._append(messages.to_record(close, self.redactor))

    def _append(self, record: dict[str, Any]) -> int:
        assert self.writer is not None
        try:
            return self.writer.write(record)
        except OSError as e:
            # Traffic must never flow unrecorded: stop loudly, as mitmproxy's save does.
            sys.stderr.write(f"Error while writing to {self.writer.path}: {e}\n")
            sys.exit(1)

    def _write(self, flow: http.HTTPFlow) -> None:
        info = common.mark(flow)
        if info is None or "seq" in info or self.writer is None:
            return
        exchange = flows.exchange_of(flow)
        classification = info.get("classification") or classify.classify(exchange)
        record = recording.to_record(exchange, self.redactor, classification,
                                     body_cap=self.body_cap)
        info["seq"] = self._append(record)

    def done(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
