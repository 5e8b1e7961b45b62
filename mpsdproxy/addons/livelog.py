"""LiveLog: one line per session-directory exchange, as it completes.

    09:41:50.123 PUT sessions/lobby-1  412 Precondition Failed  412.if-match-session  [injected: x]

and, in line with them, one per message on an intercepted websocket (the RTA
shoulder taps that make a title re-read its session), one per tap:

    09:41:50.140 RTA tap lobby-1 changeNumber 3 -> client 127.0.0.1
    09:41:49.002 RTA subscribe #1 https://sessiondirectory.xboxlive.com/connections/ <- client ...

Colour when the terminal supports it; `mpsd_quiet` silences it. The line is
printed once the title has its answer (the chain's `AfterAnswer` queue).

Everything in a line that came off the wire (a path, a reason, a header quoted
in an anomaly, a rule name, an RTA URI) goes through `terminal_safe` first: a
title or an upstream must not be able to move the cursor, retitle the window or
hide text in the terminal of whoever watches the proxy. Only the colours this
module adds itself are escape sequences.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import IO
from typing import Any

import click
from mitmproxy import ctx
from mitmproxy import http
from mitmproxy.addonmanager import Loader

from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import rta
from mpsdproxy.addons import common
from mpsdproxy.addons import flows
from mpsdproxy.addons.later import AfterAnswer
from mpsdproxy.recording import messages


def _status_colour(status: int | None) -> str:
    if status is None or status >= 500:
        return "red"
    if status >= 400:
        return "yellow"
    if status >= 300:
        return "cyan"
    return "green"


def _provenance_marker(provenance: Mapping[str, Any]) -> str:
    source = provenance.get("source")
    if source == "injected":
        rule = provenance.get("rule")
        return f"[injected: {model.terminal_safe(rule)}]" if rule else "[injected]"
    if source == "replayed":
        return f"[replayed: #{model.terminal_safe(provenance.get('record'))}]"
    if source and source != "forwarded":
        return f"[{model.terminal_safe(source)}]"
    return ""


def _stamp(start: float | None) -> str:
    start = start or 0.0
    return f"{time.strftime('%H:%M:%S', time.localtime(start))}.{int((start % 1) * 1000):03d}"


def _peer(message: messages.WebsocketMessage) -> str:
    """`-> client 127.0.0.1` for what the title got, `<- client ...` for what it sent."""
    host = (message.client or "?").rsplit(":", 1)[0]
    return f"{'<-' if message.direction == 'client' else '->'} client {host}"


def _rta_texts(decoded: rta.Message, from_client: bool) -> list[str]:
    """What one RTA message says, for people: one text per tap of an event."""
    if decoded.type is rta.Type.RESYNC:
        return ["resync"]
    if decoded.type is rta.Type.EVENT:
        if not decoded.taps:
            return [f"event subscription {decoded.subscription_id}"]
        return [f"tap {t.resource.rsplit('~', 1)[-1]} changeNumber {t.change_number}"
                for t in decoded.taps]
    kind = "subscribe" if decoded.type is rta.Type.SUBSCRIBE else "unsubscribe"
    if from_client and decoded.type is rta.Type.SUBSCRIBE:
        return [f"subscribe #{decoded.sequence} {model.clipped(str(decoded.uri))}"]
    if from_client:
        return [f"unsubscribe #{decoded.sequence} subscription {decoded.subscription_id}"]
    text = f"{kind} result #{decoded.sequence} status {_status(decoded.status)}"
    if decoded.subscription_id is not None:
        text += f" subscription {decoded.subscription_id}"
    if decoded.connection_id:
        text += f" connection {decoded.connection_id}"
    return [text]


def _status(status: int | None) -> str:
    try:
        return f"{status} {rta.Status(status).name}" if status is not None else "?"
    except ValueError:
        return str(status)


def _frame_texts(message: messages.WebsocketMessage) -> tuple[str, list[str]]:
    """`RTA` and what an RTA message (or a close) says; `WS` and the frame's size else."""
    if message.opcode == "close":
        code, _ = messages.close_of(message.payload)
        return "RTA", [f"closed by {message.direction} ({code if code is not None else 'no code'})"]
    decoded = (rta.decode(message.payload, from_client=message.direction == "client")
               if message.opcode == "text" else None)
    if decoded is None:
        return "WS", [f"{message.opcode} {len(message.payload)} bytes"]
    return "RTA", _rta_texts(decoded, message.direction == "client")


def format_message_lines(message: messages.WebsocketMessage, dropped: bool = False,
                         colour: bool = False) -> list[str]:
    """The live log lines for one websocket message: one per tap of an event, one for
    anything else (`RTA` for an RTA message or close, `WS` for other frames)."""
    label, texts = _frame_texts(message)
    label = click.style(label, fg="blue", bold=True) if colour else label
    markers = [m for m in (_provenance_marker(message.provenance), "[dropped]" if dropped else "")
               if m]
    tail = "".join(f" {click.style(m, fg='magenta', bold=True) if colour else m}"
                   for m in markers)
    return [f"{_stamp(message.start)} {label} {model.terminal_safe(text)} "
            f"{model.terminal_safe(_peer(message))}{tail}"
            for text in texts]


def format_line(exchange: model.Exchange, classification: Mapping[str, Any] | None = None,
                colour: bool = False) -> str:
    """The live log line for a finished exchange; text that was not UTF-8 shows as `\\xNN`,
    and a credential in a path or an error (an access_token query parameter) is redacted."""
    hide = recording.Redactor().text
    request, response = exchange.request, exchange.response
    resource = request.resource
    short = model.clipped(resource.short if resource.kind != "unknown" else hide(request.path))
    classification = classification or {}
    status = exchange.status
    if response is not None:
        answer = f"{status} {response.reason}"
    else:
        answer = f"--- {hide(exchange.error or 'no response')}"
    answer = model.terminal_safe(answer)
    parts = [
        _stamp(exchange.start),
        f"{model.terminal_safe(request.method):<6}",
        f"{model.terminal_safe(short):<36}",
        click.style(f"{answer:<24}", fg=_status_colour(status)) if colour else f"{answer:<24}",
        model.terminal_safe(classification.get("id") or "-"),
    ]
    marker = _provenance_marker(exchange.provenance)
    if marker:
        parts.append(click.style(marker, fg="magenta", bold=True) if colour else marker)
    for anomaly in classification.get("anomalies") or ():
        text = model.terminal_safe(f"! {anomaly['code']}: {anomaly['message']}")
        parts.append(click.style(text, fg="red") if colour else text)
    return " ".join(parts)


class LiveLog:
    def __init__(self, out: IO[str] | None = None, after_answer: AfterAnswer | None = None) -> None:
        self.out = out
        #: The chain's after-answer queue (MpsdChain sets its own); alone, a queue of its own.
        self.after_answer = after_answer or AfterAnswer()
        self.quiet = False

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "mpsd_quiet", bool, False,
            "Do not print the live log line for each session-directory exchange.",
        )

    def configure(self, updated: set[str]) -> None:
        if "mpsd_quiet" in updated:
            # Read once here: an option lookup on every flow costs more than the check.
            self.quiet = ctx.options.mpsd_quiet

    def response(self, flow: http.HTTPFlow) -> None:
        self._log(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._log(flow)

    def _log(self, flow: http.HTTPFlow) -> None:
        info = common.mark(flow)
        if info is None or self.quiet or info.get("logged"):
            return
        info["logged"] = True
        self.after_answer.soon(self._print, flow)  # a line on the terminal can wait for the answer

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        """Queued behind the exchange lines before it, so the log keeps the wire's order;
        the message is read now (the next one replaces what a fault said about it)."""
        if common.mark(flow) is None or self.quiet or not flow.websocket:
            return
        if not flow.websocket.messages:
            return
        dropped = flow.websocket.messages[-1].dropped
        self.after_answer.soon(self._print_message, flows.websocket_message_of(flow), dropped)

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        if common.mark(flow) is None or self.quiet:
            return
        close = flows.websocket_close_of(flow)
        if close is not None:
            self.after_answer.soon(self._print_message, close, False)

    def _print_message(self, message: messages.WebsocketMessage, dropped: bool) -> None:
        out = self.out or sys.stdout
        colour = hasattr(out, "isatty") and out.isatty()
        for line in format_message_lines(message, dropped, colour):
            out.write(line + "\n")
        out.flush()

    def _print(self, flow: http.HTTPFlow) -> None:
        out = self.out or sys.stdout
        colour = hasattr(out, "isatty") and out.isatty()
        classification = (common.mark(flow) or {}).get("classification")
        out.write(format_line(flows.exchange_of(flow), classification, colour) + "\n")
        out.flush()
