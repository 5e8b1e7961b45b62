"""VerdictLog: title-behaviour verdicts in the log, each as soon as it is decided.

Every finished session-directory flow goes through the verdict engine
(mpsdproxy.verdicts) as the exchange the recorder writes: built by
`flows.exchange_of`, secrets redacted, numbered by the recorder's seq. A verdict is one
log line: a fail at ERROR and a warning at WARNING, so they stand out among
the INFO passes. Verdicts that wait for time to pass (Retry-After honoured, a
client that stopped retrying) are decided by a one-second ticker while the
proxy runs. At shutdown the engine finishes and a summary line follows.

Put it after the Recorder, so a verdict names records by the seq numbers of
the recording (without a recorder it numbers the flows itself).

The RTA websocket is judged live too (taps read, reconnects, resyncs): every
message of a marked websocket flow that reached the title goes to
`Engine.feed_message` as the recorder writes it (`flows.websocket_message_of`),
in order with the exchanges, and the websocket's end as its `close` message
(`flows.websocket_close_of`). A message a fault dropped never reached the
title, so nothing is judged from it. The judging
itself runs once the title has its answer (the chain's `AfterAnswer` queue):
it never delays one.

With a recording (`mpsd_record`), every verdict is also stored as it is decided in
the recording's sidecar, `<recording>.verdicts` (`recording.verdictfile`):
buffered, flushed by the ticker and at shutdown, so the fleet and `report` read
the outcomes instead of judging the recording again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Iterable

from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy.addonmanager import Loader

from mpsdproxy import model
from mpsdproxy import verdicts
from mpsdproxy.addons import common
from mpsdproxy.addons import flows
from mpsdproxy.addons.later import AfterAnswer
from mpsdproxy.recording import verdictfile
from mpsdproxy.recording.messages import WebsocketMessage
from mpsdproxy.verdicts import Status
from mpsdproxy.verdicts import Verdict

logger = logging.getLogger(__name__)

LEVELS = {
    Status.FAIL: logging.ERROR,
    Status.WARN: logging.WARNING,
    Status.PASS: logging.INFO,
    Status.NOT_APPLICABLE: logging.DEBUG,
}
TICK_S = 1.0


def judged(exchange: model.Exchange, seq: int) -> model.Exchange:
    """The exchange numbered `seq`, as the recorder wrote it (with a recorder, the
    exchange already carries that seq from the flow's mark, and is judged as it is).
    Nothing secret reaches a verdict: the engine names a client by its redacted
    Authorization only (`verdicts.state.client_key`)."""
    return exchange if exchange.seq == seq else dataclasses.replace(exchange, seq=seq)


def summary_line(counts: dict[tuple[str, Status], int]) -> str:
    """`verdicts: 2 fail, 1 warn, 5 pass, 6 not-applicable; failed: Retry-After honoured (2)`."""
    totals = {s: sum(n for (_, st), n in counts.items() if st is s) for s in Status}
    line = "verdicts: " + ", ".join(
        f"{totals[s]} {s.value}" for s in (Status.FAIL, Status.WARN, Status.PASS,
                                            Status.NOT_APPLICABLE))
    failed = [f"{rule.title} ({counts[(rule.id, Status.FAIL)]})" for rule in verdicts.RULES
              if counts.get((rule.id, Status.FAIL))]
    if failed:
        line += "; failed: " + ", ".join(failed)
    return line


class VerdictLog:
    def __init__(self, after_answer: AfterAnswer | None = None) -> None:
        self.engine: verdicts.Engine | None = None
        #: The chain's after-answer queue (MpsdChain sets its own); alone, a queue of its own.
        self.after_answer = after_answer or AfterAnswer()
        self.flows = 0
        self._ticker: asyncio.Task[None] | None = None
        self.stored: verdictfile.VerdictFile | None = None
        #: The lowest record number this engine judged: 1 when it saw the recording from
        #: its start, so the sidecar can end with a trailer saying it is complete.
        self.first_seq: int | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "mpsd_verdicts", bool, True,
            "Judge the title's behaviour live (Retry-After honoured, backoff, 412 and 409 "
            "handling, polling, call-rate budgets, the Trace Analyzer's call patterns, RTA "
            "shoulder taps read, reconnects and resyncs) and log "
            "one line per verdict as it is decided, with a summary at exit.",
        )
        loader.add_option(
            "mpsd_limits", str, "",
            "YAML file of call-rate budgets and verdict thresholds, merged over the built-in "
            "defaults (mpsdproxy/data/limits.yaml): it only needs the keys it changes.",
        )
        # On by default: judge with the built-in limits until the options say otherwise
        # (mitmproxy only calls configure for options that were set).
        self.engine = verdicts.Engine()

    def configure(self, updated: set[str]) -> None:
        if "mpsd_record" in updated:
            self._store_to(ctx.options.mpsd_record)
        if not {"mpsd_verdicts", "mpsd_limits"} & updated:
            return
        path = ctx.options.mpsd_limits
        try:
            limits = verdicts.load_limits(path or None)
        except ValueError as e:
            raise exceptions.OptionsError(f"Cannot parse mpsd_limits option {path}: {e}") from e
        if self.engine is not None and self.engine.fed:
            logger.info("mpsd_verdicts or mpsd_limits changed: verdicts start afresh")
        self.engine = verdicts.Engine(limits) if ctx.options.mpsd_verdicts else None
        self.first_seq = None

    def _store_to(self, record: str) -> None:
        """Verdicts go to the recording's sidecar from now on (none without a recording)."""
        if self.stored is not None:
            self.stored.close()
        self.stored = None
        if record:
            try:
                self.stored = verdictfile.VerdictFile(record, "proxy")
            except OSError as e:
                logger.warning(f"verdicts will not be stored beside {record}: {e}")

    def running(self) -> None:
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.tick()

    def tick(self, now: float | None = None) -> None:
        """Decide the verdicts that were waiting for time to pass (`now` defaults to the clock)."""
        if self.engine is not None and not self.engine.finished:
            self._log(self.engine.advance(time.time() if now is None else now))
        if self.stored is not None:
            self.stored.flush()

    def response(self, flow: http.HTTPFlow) -> None:
        """Queue the flow's exchange for the engine; what it decides is logged."""
        info = common.mark(flow)
        engine = self.engine
        if info is None or engine is None or engine.finished:
            return
        self.flows += 1
        seq = info.get("seq")
        if type(seq) is not int:
            seq = self.flows  # no recorder: the flows are numbered here
        elif self.first_seq is None or seq < self.first_seq:
            self.first_seq = seq
        # Judging changes nothing the title receives: it waits until the answer is out.
        self.after_answer.soon(self._judge, engine, flow, seq)

    def _judge(self, engine: verdicts.Engine, flow: http.HTTPFlow, seq: int) -> None:
        if engine is not self.engine or engine.finished:
            return  # the options changed, or the proxy is shutting down: a fresh start
        try:
            exchange = judged(flows.exchange_of(flow), seq)
        except Exception as e:  # noqa: BLE001 - a verdict bug must not break the proxy
            logger.warning(f"mpsd_verdicts could not read {flow.request.pretty_url}: {e!r}")
            return
        decided = engine.feed(exchange)
        if decided:
            self._log(decided)

    def error(self, flow: http.HTTPFlow) -> None:
        if flow.response is None:  # a flow that got a response was judged then
            self.response(flow)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        """Queue the newest message of a marked websocket for the engine, unless a fault
        dropped it (the title never got it)."""
        info = common.mark(flow)
        engine = self.engine
        if info is None or engine is None or engine.finished or flow.websocket is None:
            return
        if not flow.websocket.messages or flow.websocket.messages[-1].dropped:
            return
        message = self._numbered(flows.websocket_message_of(flow), info)
        self.after_answer.soon(self._judge_message, engine, message)

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        """The websocket's end is its close (1006 when it dropped without a close frame)."""
        info = common.mark(flow)
        engine = self.engine
        if info is None or engine is None or engine.finished:
            return
        close = flows.websocket_close_of(flow)
        if close is not None:
            self.after_answer.soon(self._judge_message, engine, self._numbered(close, info))

    @staticmethod
    def _numbered(message: WebsocketMessage, info: dict[str, object]) -> WebsocketMessage:
        """The message numbered as the recorder wrote it (`message_seq` in the mark, when
        the recorder says), else left for the engine to number."""
        seq = info.get("message_seq")
        return dataclasses.replace(message, seq=seq) if type(seq) is int else message

    def _judge_message(self, engine: verdicts.Engine, message: WebsocketMessage) -> None:
        if engine is not self.engine or engine.finished:
            return
        try:
            decided = engine.feed_message(message)
        except Exception as e:  # noqa: BLE001 - a verdict bug must not break the proxy
            logger.warning(f"mpsd_verdicts could not judge a message on {message.url}: {e!r}")
            return
        if decided:
            self._log(decided)

    def done(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self.engine is None or self.engine.finished:
            self._close_stored()
            return
        self._log(self.engine.finish())
        self._end_stored()
        self._close_stored()
        counts = self.engine.counts
        level = logging.INFO
        if any(s is Status.FAIL for _, s in counts):
            level = logging.ERROR
        elif any(s is Status.WARN for _, s in counts):
            level = logging.WARNING
        logger.log(level, f"mpsd {summary_line(counts)}")

    def _end_stored(self) -> None:
        """End the sidecar with the trailer `report` trusts (`fleet.stored.trailer`) when
        this run judged the recording from its first record: the recorder has closed it
        (it comes earlier in the chain), so its size is final. `report` then reads these
        verdicts instead of judging the recording again, and counts the rest with DuckDB.
        A recording this run appended to, or verdicts that restarted, get no trailer."""
        stored, engine = self.stored, self.engine
        if stored is None or engine is None or self.first_seq != 1 or not stored.count:
            return
        from mpsdproxy.fleet import stored as complete  # at shutdown only: not on the way

        try:
            size = os.path.getsize(ctx.options.mpsd_record)
            stored.write(complete.trailer(engine, engine.limits, recording_bytes=size,
                                          exchanges=engine.fed))
        except (OSError, ValueError) as e:
            logger.warning(f"verdicts stored in {stored.path} are not marked complete: {e}")

    def _close_stored(self) -> None:
        if self.stored is not None:
            self.stored.close()
            self.stored = None

    def _log(self, decided: Iterable[Verdict]) -> None:
        for v in decided:
            if self.stored is not None:
                self._store(v)
            where = f" ({v.resource})" if v.resource and v.resource not in v.reason else ""
            logger.log(LEVELS[v.status], f"verdict {v}{where}")

    def _store(self, verdict: Verdict) -> None:
        assert self.stored is not None
        try:
            self.stored.write(verdict.to_dict())
        except (OSError, ValueError) as e:  # a full disk must not stop the proxy
            logger.warning(f"verdicts no longer stored in {self.stored.path}: {e}")
            self._close_stored()
