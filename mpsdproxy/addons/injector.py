"""FaultInjector: answer, delay, hold, drop or cut session-directory requests as scenarios say.

The addon wires three jobs, each in a module of its own, to mitmproxy's hooks:

- which rule fires: the scenarios in force (`addons/scenarios.py`: loading, hot
  reload, the engines), asked with the flow's request as `model.Request`;
- what the title then hears: the table's answer with the tracked session
  (`answers.py`, mitmproxy-free), turned into mitmproxy's response by
  `flows.to_mitmproxy`. Only answers the service could give fire: the catalog
  says (`catalog.why_not`), told whether the proxy has seen the session exist
  (`SessionTracker.exists`); a row that needs the session waits until the proxy
  has seen it, and never reads it from the service itself (that read would
  be unsigned). Only real answers (forwarded ones) teach the session tracker;
- a forced 412 is a newer session someone else wrote (`newer.py`): its
  changeNumber is one above the newest seen and its ETag fresh; from then on
  a write with that ETag reaches the service with the ETag the service knows,
  a write with a superseded ETag is answered 412 again, and reads show the
  newer ETag, until the session really changes;
- what happens to the connection: `drop`, `reset`, `hang` and `truncate`
  (`addons/connfaults.py`, the only code that touches sockets).

`delay` waits without blocking other flows (an awaitable hook), then goes on;
`phase: response` rules act on forwarded exchanges once the real answer is
back: the service applied the request, the title hears something else. Every
rule's match and fire counts are logged and printed when the proxy stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

from mitmproxy import command
from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy.addonmanager import Loader
from mitmproxy.log import ALERT

from mpsdproxy import answers
from mpsdproxy import model
from mpsdproxy import newer
from mpsdproxy import sessions
from mpsdproxy.addons import common
from mpsdproxy.addons import connfaults
from mpsdproxy.addons import flows
from mpsdproxy.addons import standinchange
from mpsdproxy.addons.later import AfterAnswer
from mpsdproxy.addons.scenarios import Hit
from mpsdproxy.addons.scenarios import Scenarios
from mpsdproxy.scenario import Phase

logger = logging.getLogger(__name__)

#: Default for mpsd_hang_max: how long a `hang` holds a request at most.
DEFAULT_HANG_MAX = 300


def _replayed(flow: http.HTTPFlow) -> bool:
    """Whether the replay (or its stand-in) answered this flow."""
    return _replay_said(common.provenance(flow))


def _replay_said(provenance: dict[str, Any]) -> bool:
    """Whether this provenance is the replay's (or its stand-in's)."""
    return provenance.get("source") in ("replayed", "emulated")


def _service_said(provenance: dict[str, Any]) -> bool:
    """Whether this provenance is the service's (forwarded, maybe after a delay) rather
    than this proxy's, a replay's or the stand-in's."""
    return provenance.get("source") == "forwarded" or bool(provenance.get("forwarded"))


def _note(flow: http.HTTPFlow, **facts: Any) -> None:
    """Add facts to the flow's provenance (for the recording and the live log)."""
    info = common.mark(flow)
    if info is not None:
        info["provenance"].update(facts)


def _provenance_says(flow: http.HTTPFlow, fact: str) -> bool:
    return bool(common.provenance(flow).get(fact))


def _where(flow: http.HTTPFlow, hit: Hit) -> str:
    return f"{flow.request.method} {flow.request.url}: rule {hit.rule.name}"


class FaultInjector:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.scenarios = Scenarios(origin=clock())  # time windows count from the start
        self.tracker = sessions.SessionTracker()
        self.newer = newer.NewerSessions(self.tracker)
        self.inject = True
        self.hang_max = float(DEFAULT_HANG_MAX)
        #: The chain's after-answer queue, set by MpsdChain; without it, work that could
        #: wait for the answer runs at once.
        self.after_answer: AfterAnswer | None = None

    # -- options -------------------------------------------------------------------------

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "mpsd_scenario", Sequence[str], [],
            "Inject faults into session-directory traffic as these YAML scenario files say "
            "(see scenarios/). Each is checked before the proxy starts; edits while it runs "
            "are reloaded, and a broken edit leaves the previous version in force.",
        )
        loader.add_option(
            "mpsd_inject", bool, True,
            "The kill switch: when off, no scenario injects anything (their rules stay "
            "loaded and their counters stop).",
        )
        loader.add_option(
            "mpsd_hang_max", int, DEFAULT_HANG_MAX,
            "Seconds a request held by a `hang` fault waits for its client to give up "
            "before the proxy closes the connection itself.",
        )

    def configure(self, updated: set[str]) -> None:
        if "mpsd_hang_max" in updated:
            value = ctx.options.mpsd_hang_max
            if value < 1:
                raise exceptions.OptionsError(
                    f"Cannot parse mpsd_hang_max option {value}: should be at least 1 second")
            self.hang_max = float(value)
        if "mpsd_scenario" in updated:
            paths = ctx.options.mpsd_scenario
            try:
                self.scenarios.load(paths)
            except ValueError as e:
                raise exceptions.OptionsError(
                    f"Cannot load mpsd_scenario option {', '.join(paths)}:\n{e}") from e
        if "mpsd_inject" in updated:
            self.inject = ctx.options.mpsd_inject
            if not self.inject and self.scenarios.loaded:
                logger.info("Fault injection is off (mpsd_inject)")

    def running(self) -> None:
        self.scenarios.watch()

    def done(self) -> None:
        self.scenarios.stop()
        lines = self.scenarios.count_lines()
        if not lines:
            return
        print("Fault injection counts:", flush=True)
        for line in lines:
            logger.info(f"Fault injection counts: {line}")
            print(f"  {line}", flush=True)

    # -- commands ------------------------------------------------------------------------

    @command.command("mpsd.inject.on")
    def inject_on(self) -> None:
        """Turn fault injection back on (undo mpsd.inject.off)."""
        ctx.options.update(mpsd_inject=True)
        logger.log(ALERT, "Fault injection is on")

    @command.command("mpsd.inject.off")
    def inject_off(self) -> None:
        """The kill switch: stop all fault injection at once (scenarios stay loaded)."""
        ctx.options.update(mpsd_inject=False)
        logger.log(ALERT, "Fault injection is off: every request is forwarded untouched")

    @command.command("mpsd.rule.enable")
    def rule_enable(self, name: str) -> None:
        """Turn one scenario rule back on, by name."""
        self._switch(self.scenarios.switch_rule, name, True, f"Rule {name} is on")

    @command.command("mpsd.rule.disable")
    def rule_disable(self, name: str) -> None:
        """Turn one scenario rule off, by name; the other rules go on."""
        self._switch(self.scenarios.switch_rule, name, False, f"Rule {name} is off")

    @command.command("mpsd.scenario.enable")
    def scenario_enable(self, name: str) -> None:
        """Turn a whole scenario back on, by its name."""
        self._switch(self.scenarios.switch_scenario, name, True, f"Scenario {name} is on")

    @command.command("mpsd.scenario.disable")
    def scenario_disable(self, name: str) -> None:
        """Turn a whole scenario off, by its name; other scenarios go on."""
        self._switch(self.scenarios.switch_scenario, name, False, f"Scenario {name} is off")

    @command.command("mpsd.counters.reset")
    def counters_reset(self) -> None:
        """Start the pass over: forget every rule's counts and random draws, and count
        the time windows from now."""
        self.scenarios.reset(self.clock())
        logger.log(ALERT, "Scenario counters reset")

    @command.command("mpsd.counters")
    def counters(self) -> None:
        """Log each rule's match and fire counts."""
        for line in self.scenarios.count_lines():
            logger.log(ALERT, line)

    @staticmethod
    def _switch(switch: Callable[[str, bool], None], name: str, on: bool, done: str) -> None:
        try:
            switch(name, on)
        except ValueError as e:
            raise exceptions.CommandError(str(e)) from None
        logger.log(ALERT, done)

    # -- hooks ---------------------------------------------------------------------------

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        # A replayed answer is still open to faults: "faults on top of a replay".
        if flow.error or not flow.live or (flow.response and not _replayed(flow)):
            return None
        if common.mark(flow) is None:
            return None
        if len(self.newer) and flow.response is None and self._keep_newer(flow):
            return None
        if not self.inject or not self.scenarios.has(Phase.REQUEST):
            return None
        request = flows.request_of(flow)
        hit = self._evaluate(flow, request, Phase.REQUEST, self._exists(request))
        return self._act(flow, request, hit, Phase.REQUEST) if hit is not None else None

    def response(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if flow.error or not flow.live or flow.response is None:
            return None
        if not self.scenarios.loaded or common.mark(flow) is None:
            return None
        # Who answered, read once: `_show_newer` notes a mapping, never changes the source.
        provenance = common.provenance(flow)
        from_service = _service_said(provenance)
        if len(self.newer) and from_service:
            self._show_newer(flow)
        acts = self.inject and self.scenarios.has(Phase.RESPONSE)
        if _replay_said(provenance):
            if not acts:
                return None
            request = flows.request_of(flow)
            before = self._exists(request)
        elif not from_service:
            return None
        elif not acts:
            # No rule can answer from this session now: learning it can wait until the
            # answer is out (and still comes before the title's next request is read).
            self._soon(self.learn, flow)
            return None
        else:
            exchange = flows.exchange_of(flow)
            request = exchange.request
            before = self._exists(request)  # rules judge what was known before forwarding
            self.tracker.observe(exchange)
        hit = self._evaluate(flow, request, Phase.RESPONSE, before)
        return self._act(flow, request, hit, Phase.RESPONSE) if hit is not None else None

    def learn(self, flow: http.HTTPFlow) -> sessions.Update:
        """Keep the tracked session state in step with a real answer."""
        return self.tracker.observe(flows.exchange_of(flow))

    def _soon(self, job: Callable[..., Any], *args: Any) -> None:
        if self.after_answer is None:
            job(*args)
        else:
            self.after_answer.soon(job, *args)

    # -- deciding ------------------------------------------------------------------------

    def _exists(self, request: model.Request) -> bool | None:
        """Whether the request's session exists, as far as the proxy has seen (None, unasked,
        when no rule in force reads it)."""
        if not self.scenarios.reads_existence:
            return None
        key = request.resource.key
        return self.tracker.exists(key) if key else None

    def _evaluate(self, flow: http.HTTPFlow, request: model.Request, phase: Phase,
                  exists: bool | None) -> Hit | None:
        """The rule that fires, told whether the session exists (`_exists`, before the
        request was forwarded); the caller is known by its user (`model.Request.user`,
        worked out once per request for every part that asks, which keys throttling as the
        service's rate limits do), else by the client's address, and looked at only when a
        rule in force reads it."""
        user = client = ""
        if self.scenarios.reads_caller:
            user = request.user
            peer = flow.client_conn.peername
            client = user or (str(peer[0]) if peer else "")
        return self.scenarios.evaluate(request, phase, self.clock(), client=client, user=user,
                                       exists=exists)

    def _act(self, flow: http.HTTPFlow, request: model.Request, hit: Hit,
             phase: Phase) -> Awaitable[None] | None:
        """Apply a fired rule now, or return what mitmproxy should await to apply it."""
        self._mark(flow, hit, phase)
        logger.debug(f"{_where(flow, hit)} of {hit.loaded.scenario.name} fired "
                     f"({answers.kind(hit.fault, phase)})")
        if hit.firing.delay > 0 or hit.fault.hang or self._changes_standin(flow, request, hit):
            return self._act_later(flow, request, hit, phase)
        try:
            self._apply(flow, request, hit, phase)
        except Exception as e:  # noqa: BLE001 - an injector bug must not break the title
            self._failed(flow, hit, e)
        return None

    async def _act_later(self, flow: http.HTTPFlow, request: model.Request, hit: Hit,
                         phase: Phase) -> None:
        try:
            if hit.firing.delay > 0:
                await asyncio.sleep(hit.firing.delay)
            if flow.error or not flow.live:
                return
            if hit.fault.hang:
                held = await connfaults.hang(flow, self.hang_max)
                _note(flow, held_s=round(held, 3))
                return
            if self._changes_standin(flow, request, hit):
                await self._change_standin(flow, request)
            self._apply(flow, request, hit, phase)
        except Exception as e:  # noqa: BLE001 - an injector bug must not break the title
            self._failed(flow, hit, e)

    @staticmethod
    def _failed(flow: http.HTTPFlow, hit: Hit, e: Exception) -> None:
        """Log a rule that could not be applied; the exchange goes on as if it had not fired."""
        logger.exception(f"{_where(flow, hit)} could not be applied: {e}")
        common.set_provenance(flow, **common.FORWARDED, skipped_rule=hit.rule.name,
                              note=f"the injector failed: {e}")

    def _mark(self, flow: http.HTTPFlow, hit: Hit, phase: Phase) -> None:
        """Provenance for the recording and the live log: which rule of which scenario
        (name and seed, so the pass can be rerun with the same faults), and what it did."""
        scn = hit.loaded.scenario
        kind = answers.kind(hit.fault, phase)
        extra: dict[str, Any] = {"fault": kind}
        if hit.firing.delay > 0:
            extra["delay_ms"] = round(hit.firing.delay * 1000, 3)
        if kind == "delay" and phase is Phase.REQUEST:
            extra["forwarded"] = True  # the answer is the service's own
        if hit.firing.throttle is not None:
            extra["retry_after"] = hit.firing.throttle.retry_after
        common.set_provenance(flow, source="injected", rule=hit.rule.name, scenario=scn.name,
                              seed=scn.seed, phase=phase.value, **extra)

    # -- acting --------------------------------------------------------------------------

    def _apply(self, flow: http.HTTPFlow, request: model.Request, hit: Hit,
               phase: Phase) -> None:
        fault = hit.fault
        if fault.drop:
            connfaults.end_without_answer(flow)
            return
        if fault.reset:
            why = connfaults.reset(flow)
            if why is not None:
                logger.warning(f"{_where(flow, hit)} cannot reset this connection ({why}); "
                               f"it is closed instead")
            return
        if fault.answers:
            if not self._answer(flow, request, hit):
                return
        elif phase is Phase.RESPONSE and flow.response is not None:
            real = flows.response_of(flow)
            if real is not None:
                flow.response = flows.to_mitmproxy(answers.edit(real, fault),
                                                   flow.response.http_version)
        if fault.truncate and flow.response is not None:
            if not connfaults.truncate(flow.response, fault.cut, flow.request.http_version):
                logger.warning(f"{_where(flow, hit)} found no body to truncate")

    def _answer(self, flow: http.HTTPFlow, request: model.Request, hit: Hit) -> bool:
        """Answer with the table's row; whether it did (else the flow goes on untouched)."""
        key = request.resource.key
        tracked = self.tracker.get(key) if key else None
        row = hit.fault.row(request)
        if (key and row is not None and answers.someone_else_wrote(row, hit.fault)
                and not _provenance_says(flow, "changed_on")):
            tracked = self.newer.make(key, hit.rule.name)
            if tracked is not None:
                _note(flow, change_number=tracked.newest)
        got = answers.answer(request, hit.fault, tracked, throttle=hit.firing.throttle)
        about = request.resource.short if key else request.path
        where = f"{request.method} {about}: rule {hit.rule.name}"
        if got.response is None:
            logger.warning(f"{where} cannot answer {got.row.id} without the session "
                           f"({got.missing}); the request goes on untouched")
            common.set_provenance(flow, **common.FORWARDED, skipped_rule=hit.rule.name,
                                  note=f"{got.row.id} needs the session: {got.missing}")
            return False
        if flow.response is not None:
            connfaults.note_lost(flow)
        version = flow.response.http_version if flow.response else flow.request.http_version
        flow.response = flows.to_mitmproxy(got.response, version)
        return True

    # -- the newer session a forced 412 handed out ------------------------------------------

    def _changes_standin(self, flow: http.HTTPFlow, request: model.Request, hit: Hit) -> bool:
        """Whether the fault is a forced 412 for a flow to a local server (a stand-in, where
        the change can be made real)."""
        if not hit.fault.answers or request.resource.key is None or flow.response is not None:
            return False
        row = hit.fault.row(request)
        return (row is not None and answers.someone_else_wrote(row, hit.fault)
                and standinchange.is_local(flow))

    async def _change_standin(self, flow: http.HTTPFlow, request: model.Request) -> None:
        """Have the stand-in change the session, as another client would; the tracker learns
        the newer session from its answer."""
        path = request.resource.session_path
        changed = await standinchange.change(flow, path) if path else None
        if changed is None:
            return
        where = flow.request
        read = model.Request("GET", f"{where.scheme}://{where.host}:{where.port}{path}")
        if self.tracker.observe(model.Exchange(read, changed)) is sessions.Update.STORED:
            tracked = self.tracker.get(request.resource.key or "")
            _note(flow, changed_on="stand-in",
                  change_number=tracked.newest if tracked else None)

    def _keep_newer(self, flow: http.HTTPFlow) -> bool:
        """Keep a request true to a forced 412's newer session: map its ETag to the one the
        service knows, or answer a superseded ETag with 412 again; whether it was answered."""
        outgoing = self.newer.outgoing(flows.request_of(flow))
        if outgoing.newer is None:
            return False
        rule = outgoing.newer.rule
        if outgoing.answer is not None:
            flow.response = flows.to_mitmproxy(outgoing.answer, flow.request.http_version)
            common.set_provenance(flow, source="injected", rule=rule, fault="status",
                                  note="a superseded ETag: the session changed since (the "
                                       "newer version a forced 412 handed out)")
            return True
        if outgoing.request is not None:
            for name in newer.PRECONDITION_HEADERS:
                value = outgoing.request.headers.first(name)
                if value is not None and value != flow.request.headers.get(name):
                    flow.request.headers[name] = value
            _note(flow, etag_mapped=rule)
        return False

    def _show_newer(self, flow: http.HTTPFlow) -> None:
        """An answer from the service, with the newer ETag (and document) the title holds."""
        shown = self.newer.incoming(flows.exchange_of(flow))
        if shown is not None and flow.response is not None:
            flow.response = flows.to_mitmproxy(shown, flow.response.http_version)
            _note(flow, etag_mapped="answer")
