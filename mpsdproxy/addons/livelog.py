"""LiveLog: one line per session-directory exchange, as it completes.

    09:41:50.123 PUT sessions/lobby-1  412 Precondition Failed  412.if-match-session  [injected: x]

Colour when the terminal supports it; `mpsd_quiet` silences it. The line is
printed once the title has its answer (the chain's `AfterAnswer` queue).
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
from mpsdproxy.addons import common
from mpsdproxy.addons import flows
from mpsdproxy.addons.later import AfterAnswer


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
        return f"[injected: {provenance.get('rule')}]"
    if source == "replayed":
        return f"[replayed: #{provenance.get('record')}]"
    if source and source != "forwarded":
        return f"[{source}]"
    return ""


def format_line(exchange: model.Exchange, classification: Mapping[str, Any] | None = None,
                colour: bool = False) -> str:
    """The live log line for a finished exchange; text that was not UTF-8 shows as `\\xNN`,
    and a credential in a path or an error (an access_token query parameter) is redacted."""
    hide = recording.Redactor().text
    request, response = exchange.request, exchange.response
    resource = request.resource
    short = resource.short if resource.kind != "unknown" else hide(request.path)
    classification = classification or {}
    status = exchange.status
    if response is not None:
        answer = f"{status} {response.reason}"
    else:
        answer = f"--- {hide(exchange.error or 'no response')}"
    start = exchange.start or 0.0
    stamp = time.strftime("%H:%M:%S", time.localtime(start))
    millis = int((start % 1) * 1000)
    answer = model.printable(answer)
    parts = [
        f"{stamp}.{millis:03d}",
        f"{model.printable(request.method):<6}",
        f"{model.printable(short):<36}",
        click.style(f"{answer:<24}", fg=_status_colour(status)) if colour else f"{answer:<24}",
        classification.get("id") or "-",
    ]
    marker = _provenance_marker(exchange.provenance)
    if marker:
        parts.append(click.style(marker, fg="magenta", bold=True) if colour else marker)
    for anomaly in classification.get("anomalies") or ():
        text = f"! {anomaly['code']}: {anomaly['message']}"
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

    def _print(self, flow: http.HTTPFlow) -> None:
        out = self.out or sys.stdout
        colour = hasattr(out, "isatty") and out.isatty()
        classification = (common.mark(flow) or {}).get("classification")
        out.write(format_line(flows.exchange_of(flow), classification, colour) + "\n")
        out.flush()
